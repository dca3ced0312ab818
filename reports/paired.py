"""Paired model-vs-model comparisons on the same samples: wins / losses / ties, the difference with a 95% CI, and
the exact McNemar p-value for binary scores (a paired bootstrap p-value for continuous ones).

Both sides are read from prediction rows through :func:`medbench.evaluation.metric_vectors` — the same per-sample
vectors the headline metrics average — and aligned on sample ids: ids scored on only one side are counted and
left out, never matched by position. Two results are compared only when their comparability keys are equal
(same data, split, closed rule, prompt, image size, judge, ...); otherwise the comparison names what differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medbench.errors import UsageError
from medbench.evaluation import metric_vectors
from medbench.scoring.aggregate import CAPTION_PROTOCOL
from medbench.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, paired_test

VQA_METRICS = ("closed_accuracy", "open_accuracy", "overall_accuracy")
#: Per-sample caption metrics (corpus BLEU has no per-sample vector; its sentence-level form stands in for it).
CAPTION_METRICS = ("judge_score", "token_recall", "rouge1", "bertscore_f1", "bleu4_sentence")


def default_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """Every ``X`` vs ``X+lora:*`` pair present; with none, every pair of up to four models (in order), so a small
    run still shows one; with more models and no adapter pairs, none (name them with ``--compare``)."""
    names = list(dict.fromkeys(models))
    pairs = [(base, other) for other in names for base in names if other.startswith(f"{base}+lora:")]
    if not pairs and 2 <= len(names) <= 4:
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    return pairs


def pair_splits(spec: str, left: Sequence[str], right: Sequence[str]) -> list[tuple[str, str]]:
    """Every way to read ``"A:B"`` as a model of ``left`` and one of ``right``. Model names may hold colons
    themselves (``hf:org/x+lora:dir``), so each colon is tried; callers want exactly one reading."""
    known_left, known_right = set(left), set(right)
    splits = [(spec[:i], spec[i + 1 :]) for i, c in enumerate(spec) if c == ":"]
    return [s for s in splits if s[0] in known_left and s[1] in known_right]


def parse_pair(spec: str, models: Sequence[str]) -> tuple[str, str]:
    """``"A:B"`` -> ``(A, B)``: the one split whose two halves are both models of the runs (:func:`pair_splits`);
    anything else is a :class:`UsageError` listing the models."""
    known = set(models)
    matches = pair_splits(spec, models, models)
    if len(matches) == 1 and matches[0][0] != matches[0][1]:
        return matches[0]
    listing = ", ".join(sorted(known)) or "(none)"
    if len(matches) > 1:
        raise UsageError(f"--compare {spec!r} splits into two models in more than one way; models: {listing}")
    raise UsageError(f"--compare {spec!r}: expected MODEL_A:MODEL_B, two different models of the runs: {listing}")


@dataclass
class MetricComparison:
    """B minus A on one metric over the shared samples."""

    n: int
    wins: int  # B better than A on a sample
    losses: int  # B worse
    ties: int
    a_mean: float
    b_mean: float
    delta: float
    ci95: list[float]
    p_value: float
    test: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PairComparison:
    """Model ``b`` against model ``a`` on one task: ``metrics[protocol][metric]`` and the flipped sample ids."""

    task: str
    a: str
    b: str
    comparable: bool = True
    differs: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    only_a: int = 0  # scored ids only A has (left out)
    only_b: int = 0
    metrics: dict[str, dict[str, MetricComparison]] = field(default_factory=dict)
    flips: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # protocol -> {"b_better"|"b_worse": ids}


def compare_metric(a: np.ndarray, b: np.ndarray, *, resamples: int, seed: int) -> MetricComparison:
    """Compare aligned per-sample values with :func:`medbench.stats.paired_test` (McNemar when both are 0/1)."""
    test = paired_test(a, b, resamples=resamples, seed=seed)
    ci = test["ci95"]
    assert isinstance(ci, list)
    return MetricComparison(
        n=int(a.size),
        wins=int(np.sum(b > a)),
        losses=int(np.sum(b < a)),
        ties=int(np.sum(b == a)),
        a_mean=float(a.mean()) if a.size else 0.0,
        b_mean=float(b.mean()) if b.size else 0.0,
        delta=float(test["delta"]),
        ci95=[float(x) for x in ci],
        p_value=float(test["p_value"]),
        test=str(test["test"]),
    )


def _aligned(
    rows_a: Sequence[Mapping[str, Any]], rows_b: Sequence[Mapping[str, Any]], protocol: str, metric: str
) -> tuple[list[str], np.ndarray, np.ndarray, int, int] | None:
    try:
        ids_a, va = metric_vectors(rows_a, protocol, metric)
        ids_b, vb = metric_vectors(rows_b, protocol, metric)
    except UsageError:  # this metric does not exist for these rows (no judge, say)
        return None
    index_b = {i: k for k, i in enumerate(ids_b)}
    shared = [i for i in ids_a if i in index_b]
    pos_a = {i: k for k, i in enumerate(ids_a)}
    a = np.array([va[pos_a[i]] for i in shared], dtype=np.float64)
    b = np.array([vb[index_b[i]] for i in shared], dtype=np.float64)
    return shared, a, b, len(ids_a) - len(shared), len(ids_b) - len(shared)


def compare_rows(
    task: str,
    kind: str,
    a: str,
    b: str,
    rows_a: Sequence[Mapping[str, Any]],
    rows_b: Sequence[Mapping[str, Any]],
    protocols: Sequence[str],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> PairComparison:
    """Compare ``b`` with ``a`` on every protocol (VQA) or caption metric, on the samples both scored."""
    out = PairComparison(task, a, b)
    plan = [(p, VQA_METRICS) for p in protocols] if kind == "vqa" else [(CAPTION_PROTOCOL, CAPTION_METRICS)]
    for protocol, metrics in plan:
        for metric in metrics:
            aligned = _aligned(rows_a, rows_b, protocol, metric)
            if aligned is None:
                continue
            ids, va, vb, only_a, only_b = aligned
            if metric in ("overall_accuracy", "judge_score") or (kind != "vqa" and metric == "token_recall"):
                out.only_a, out.only_b = max(out.only_a, only_a), max(out.only_b, only_b)
            if not ids:
                continue
            out.metrics.setdefault(protocol, {})[metric] = compare_metric(va, vb, resamples=resamples, seed=seed)
            if metric == "overall_accuracy":
                out.flips[protocol] = {
                    "b_worse": [i for i, x, y in zip(ids, va, vb, strict=True) if x > y],  # A right, B wrong
                    "b_better": [i for i, x, y in zip(ids, va, vb, strict=True) if y > x],  # B right, A wrong
                }
    return out
