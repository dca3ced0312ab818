"""Lexical caption metrics for ROCOv2 (pure functions; BERTScore lives in ``bertscore.py``).

* ``bleu``: sacrebleu corpus BLEU-4 (13a tokenizer, exponential smoothing, case-sensitive: its defaults), divided
  by 100 so it reads like the paper's 0.026-0.047; bootstrap-able through per-sentence sufficient statistics.
* ``bleu4_sentence``: mean nltk sentence BLEU-4 (uniform weights, smoothing method1), lowercased whitespace tokens
  — the "BLEU" of many captioning papers, on a 0-1 scale.
* ``token_recall``: share of the reference's distinct tokens (lowercase runs of letters/digits) in the prediction.
* ``rouge1``: rouge-score ROUGE-1 F-measure, no stemming (its default tokenizer lowercases, keeps [a-z0-9]).
"""

from __future__ import annotations

import math
import re
from collections import Counter
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


def _ngram_counts(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(zip(*(tokens[i:] for i in range(n)), strict=False)) if len(tokens) >= n else Counter()


def bleu4_sentence(prediction: str, reference: str) -> float:
    """nltk's ``sentence_bleu([ref], hyp, smoothing_function=SmoothingFunction().method1)`` on lowercased
    whitespace tokens, computed directly (nltk's Fraction-based version is 2x slower; the tests check both agree).

    Clipped n-gram precisions p_1..p_4 (denominator at least 1); 0 if no unigram matches; a zero count becomes
    0.1 / denominator (method1); brevity penalty exp(1 - r/c) when c <= r; score = BP * exp(sum(log p_n) / 4).
    """
    hyp, ref = str(prediction).lower().split(), str(reference).lower().split()
    if not hyp or not ref:
        return 0.0
    log_sum = 0.0
    for n in range(1, MAX_ORDER + 1):
        hyp_counts, ref_counts = _ngram_counts(hyp, n), _ngram_counts(ref, n)
        matches = sum(min(count, ref_counts[gram]) for gram, count in hyp_counts.items())
        total = max(1, sum(hyp_counts.values()))
        if n == 1 and matches == 0:
            return 0.0
        log_sum += math.log(matches / total if matches else 0.1 / total) / MAX_ORDER
    penalty = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return penalty * math.exp(log_sum)


def rouge1(prediction: str, reference: str) -> float:
    """rouge-score's ROUGE-1 F-measure without stemming, computed directly (the tests check it against
    rouge-score): tokens are lowercase [a-z0-9] runs, overlap counts are clipped, F = 2PR / (P + R)."""
    pred, ref = Counter(_TOKEN.findall(str(prediction).lower())), Counter(_TOKEN.findall(str(reference).lower()))
    overlap = sum(min(count, pred[token]) for token, count in ref.items())
    precision = overlap / max(sum(pred.values()), 1)
    recall = overlap / max(sum(ref.values()), 1)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def lexical_caption_scores(prediction: str, reference: str) -> dict[str, float]:
    """All per-caption lexical scores of one prediction (``token_recall``, ``bleu4_sentence``, ``rouge1``),
    lowercasing and tokenising each text once; equal to calling the three functions separately."""
    pred_lower, ref_lower = str(prediction).lower(), str(reference).lower()
    pred_tokens, ref_tokens = Counter(_TOKEN.findall(pred_lower)), Counter(_TOKEN.findall(ref_lower))
    recall = sum(1 for token in ref_tokens if token in pred_tokens) / len(ref_tokens) if ref_tokens else 0.0
    overlap = sum(min(count, pred_tokens[token]) for token, count in ref_tokens.items())
    precision_r = overlap / max(sum(pred_tokens.values()), 1)
    recall_r = overlap / max(sum(ref_tokens.values()), 1)
    rouge = 2 * precision_r * recall_r / (precision_r + recall_r) if precision_r + recall_r > 0 else 0.0
    return {"token_recall": recall, "bleu4_sentence": bleu4_sentence(pred_lower, ref_lower), "rouge1": rouge}


def lexical_variants() -> dict[str, Any]:
    """Definitions and settings of the per-caption lexical metrics."""
    return {
        "bleu": bleu_variant(),
        "bleu4_sentence": {
            "definition": "nltk sentence_bleu, weights 0.25 x 4, SmoothingFunction().method1 (reimplemented, "
            "checked against nltk)",
            "tokens": "lowercased, whitespace-split",
        },
        "token_recall": "distinct [a-z0-9]+ tokens of the lowercased reference found in the prediction",
        "rouge1": {"definition": "rouge-score rouge1 F-measure, use_stemmer=False", "tokens": "lowercase [a-z0-9]+"},
    }


@lru_cache(maxsize=1)
def _bleu() -> Any:
    from sacrebleu.metrics import BLEU

    # Only used to extract per-sentence n-gram counts, which effective_order does not change; setting it stops
    # sacrebleu's per-sentence warning. Corpus BLEU is computed from the summed counts without it.
    return BLEU(effective_order=True)


@lru_cache(maxsize=1)
def _tokenizer_13a() -> Any:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def bleu_statistics(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-sentence BLEU sufficient statistics, shape ``(n, 2 + 2*MAX_ORDER)``:
    ``[sys_len, ref_len, correct_1..4, total_1..4]``; summing rows gives sacrebleu's corpus statistics.

    Tokenisation is sacrebleu's own 13a tokenizer on the right-stripped, case-kept text (its defaults); the
    clipped n-gram counting is done here, ~30% faster than sacrebleu's general multi-reference path. The tests
    check the rows against sacrebleu's and the corpus score against ``sacrebleu.corpus_bleu``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    tokenize = _tokenizer_13a()
    out = np.zeros((len(predictions), 2 + 2 * MAX_ORDER), dtype=np.int64)
    for row, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        hyp, gold = tokenize(str(pred).rstrip()).split(), tokenize(str(ref).rstrip()).split()
        out[row, 0], out[row, 1] = len(hyp), len(gold)
        for n in range(1, min(MAX_ORDER, len(hyp)) + 1):
            hyp_counts, ref_counts = _ngram_counts(hyp, n), _ngram_counts(gold, n)
            out[row, 1 + n] = sum(min(count, ref_counts[gram]) for gram, count in hyp_counts.items())
            out[row, 1 + MAX_ORDER + n] = len(hyp) - n + 1
    return out


def bleu_from_statistics(stats: np.ndarray) -> float:
    """Corpus BLEU (0-1) from summed sufficient statistics, exactly as sacrebleu's corpus_score computes it."""
    from sacrebleu.metrics import BLEU

    sys_len, ref_len = int(stats[0]), int(stats[1])
    correct = [int(x) for x in stats[2 : 2 + MAX_ORDER]]
    total = [int(x) for x in stats[2 + MAX_ORDER :]]
    return float(BLEU.compute_bleu(correct, total, sys_len, ref_len, smooth_method="exp").score) / 100.0


def bleu_from_statistics_batch(stats: np.ndarray) -> np.ndarray:
    """Row-wise :func:`bleu_from_statistics` for a (B, 10) array of summed statistics, vectorised.

    Mirrors sacrebleu's ``compute_bleu`` with ``smooth_method="exp"`` and ``effective_order=False`` step by step
    (brevity penalty; no match at all -> 0; an order with no candidate n-grams stops the loop, leaving the rest of
    the precisions at 0, whose log sacrebleu takes as -9999999999; a zero match count halves the smoothed
    precision each time). The tests check it against ``compute_bleu`` row by row.
    """
    stats = np.asarray(stats, dtype=np.float64)
    sys_len, ref_len = stats[:, 0], stats[:, 1]
    correct, total = stats[:, 2 : 2 + MAX_ORDER], stats[:, 2 + MAX_ORDER :]
    with np.errstate(divide="ignore", invalid="ignore"):
        penalty = np.where(sys_len < ref_len, np.where(sys_len > 0, np.exp(1 - ref_len / sys_len), 0.0), 1.0)
        alive = np.ones(len(stats), dtype=bool)
        smooth = np.ones(len(stats))
        log_sum = np.zeros(len(stats))
        for n in range(MAX_ORDER):
            alive &= total[:, n] != 0
            zero = correct[:, n] == 0
            smooth = np.where(alive & zero, smooth * 2, smooth)
            safe_total = np.where(total[:, n] == 0, 1.0, total[:, n])
            precision = np.where(zero, 100.0 / (smooth * safe_total), 100.0 * correct[:, n] / safe_total)
            precision = np.where(alive, precision, 0.0)
            log_sum += np.where(precision > 0, np.log(np.where(precision > 0, precision, 1.0)), -9999999999.0)
        score = penalty * np.exp(log_sum / MAX_ORDER)
    return np.where(correct.any(axis=1), score, 0.0) / 100.0


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
