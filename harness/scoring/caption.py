"""Caption metrics for ROCOv2: sacrebleu corpus BLEU (with bootstrap-able sufficient statistics) and token recall.

``bleu`` is ``sacrebleu`` corpus BLEU-4 (13a tokenizer, exponential smoothing, case-sensitive: its defaults),
divided by 100 so it reads like the paper's 0.026-0.047. ``token_recall`` is the share of the reference's
distinct normalised tokens (lowercase, runs of letters/digits) that appear in the prediction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")
MAX_ORDER = 4


def caption_tokens(text: str) -> set[str]:
    """Distinct lowercase alphanumeric tokens."""
    return set(_TOKEN.findall(str(text).lower()))


def token_recall(prediction: str, reference: str) -> float:
    """|reference tokens ∩ prediction tokens| / |reference tokens| (0.0 for an empty reference)."""
    ref = caption_tokens(reference)
    if not ref:
        return 0.0
    return len(ref & caption_tokens(prediction)) / len(ref)


@lru_cache(maxsize=1)
def _bleu() -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU()


def bleu_statistics(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-sentence BLEU sufficient statistics, shape ``(n, 2 + 2*MAX_ORDER)``:
    ``[sys_len, ref_len, correct_1..4, total_1..4]``. Summing rows gives the corpus statistics."""
    bleu = _bleu()
    rows = []
    for pred, ref in zip(predictions, references, strict=True):
        s = bleu.sentence_score(pred, [ref])
        rows.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2 + 2 * MAX_ORDER)


def bleu_from_statistics(stats: np.ndarray) -> float:
    """Corpus BLEU (0-1) from summed sufficient statistics, exactly as sacrebleu's corpus_score computes it."""
    from sacrebleu.metrics import BLEU

    sys_len, ref_len = int(stats[0]), int(stats[1])
    correct = [int(x) for x in stats[2 : 2 + MAX_ORDER]]
    total = [int(x) for x in stats[2 + MAX_ORDER :]]
    return float(BLEU.compute_bleu(correct, total, sys_len, ref_len, smooth_method="exp").score) / 100.0


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU / 100."""
    if not predictions:
        return 0.0
    return bleu_from_statistics(bleu_statistics(predictions, references).sum(axis=0))


def bleu_variant() -> dict[str, Any]:
    """The exact BLEU variant, recorded next to the number (papers differ on all of these)."""
    import sacrebleu
    from sacrebleu.metrics import BLEU

    probe = BLEU()
    probe.corpus_score(["a"], [["a"]])  # sacrebleu fills in its signature (nrefs, ...) only after scoring
    return {
        "library": f"sacrebleu {sacrebleu.__version__}",
        "signature": str(probe.get_signature()),
        "scale": "0-1 (score / 100)",
        "level": "corpus",
    }
