"""Lexical caption metrics for ROCOv2 (pure functions; BERTScore lives in ``bertscore.py``).

* ``bleu``: sacrebleu corpus BLEU-4 (13a tokenizer, exponential smoothing, case-sensitive: its defaults), divided
  by 100 so it reads like the paper's 0.026-0.047; bootstrap-able through per-sentence sufficient statistics.
* ``bleu4_sentence``: mean nltk sentence BLEU-4 (uniform weights, smoothing method1), lowercased whitespace tokens
  — the "BLEU" of many captioning papers, on a 0-1 scale.
* ``token_recall``: share of the reference's distinct tokens (lowercase runs of letters/digits) in the prediction.
* ``rouge1``: rouge-score ROUGE-1 F-measure, no stemming (its default tokenizer lowercases, keeps [a-z0-9]).
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


def bleu4_sentence(prediction: str, reference: str) -> float:
    """nltk sentence BLEU-4 with smoothing method1 on lowercased whitespace tokens (0 for an empty prediction)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    hyp, ref = str(prediction).lower().split(), str(reference).lower().split()
    if not hyp or not ref:
        return 0.0
    return float(sentence_bleu([ref], hyp, smoothing_function=SmoothingFunction().method1))


@lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)


def rouge1(prediction: str, reference: str) -> float:
    """ROUGE-1 F-measure (rouge-score, no stemming)."""
    return float(_rouge().score(str(reference), str(prediction))["rouge1"].fmeasure)


def lexical_caption_scores(prediction: str, reference: str) -> dict[str, float]:
    """All per-caption lexical scores of one prediction."""
    return {
        "token_recall": token_recall(prediction, reference),
        "bleu4_sentence": bleu4_sentence(prediction, reference),
        "rouge1": rouge1(prediction, reference),
    }


def lexical_variants() -> dict[str, Any]:
    """Library versions and settings of the per-caption lexical metrics."""
    from importlib.metadata import version

    return {
        "bleu": bleu_variant(),
        "bleu4_sentence": {
            "library": f"nltk {version('nltk')}",
            "weights": [0.25] * 4,
            "smoothing": "method1",
            "tokens": "lowercased, whitespace-split",
        },
        "token_recall": "distinct [a-z0-9]+ tokens of the lowercased reference found in the prediction",
        "rouge1": {"library": f"rouge-score {version('rouge-score')}", "measure": "F", "use_stemmer": False},
    }


@lru_cache(maxsize=1)
def _bleu() -> Any:
    from sacrebleu.metrics import BLEU

    # Only used to extract per-sentence n-gram counts, which effective_order does not change; setting it stops
    # sacrebleu's per-sentence warning. Corpus BLEU is computed from the summed counts without it.
    return BLEU(effective_order=True)


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
