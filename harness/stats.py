"""Uncertainty: seeded percentile-bootstrap confidence intervals (vectorised numpy)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0


# Resampled sums are computed as (resample-count matrix) @ values: one draw of the count matrix serves every
# metric over the same n samples (a task's captions share it across BLEU, recall, ROUGE and BERTScore). Above this
# many cells the counts are not cached and the work goes in chunks, to bound memory.
_MAX_CELLS = 20_000_000


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


@lru_cache(maxsize=2)
def _counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """How often each sample appears in each resample, shape (resamples, n)."""
    # Row by row, this draws exactly the stream of _indices (same seed, same order) without its big temporaries.
    rng = np.random.default_rng(seed)
    counts = np.empty((resamples, n), dtype=np.float64)
    for row in range(resamples):
        counts[row] = np.bincount(rng.integers(0, n, size=n), minlength=n)
    return counts


def resampled_sums(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Column sums of ``values`` (shape (n,) or (n, k)) over ``resamples`` bootstrap resamples of its rows."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n * resamples <= _MAX_CELLS:
        return _counts(n, resamples, seed) @ values
    rng = np.random.default_rng(seed)
    step = max(1, _MAX_CELLS // n)
    parts = [
        values[rng.integers(0, n, size=(min(step, resamples - start), n))].sum(axis=1)
        for start in range(0, resamples, step)
    ]
    return np.concatenate(parts)


def bootstrap_mean_ci(
    values: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean of ``values``; None when there are no values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None
    if np.isin(values, (0.0, 1.0)).all():
        # For 0/1 scores the mean of a resample with replacement is exactly Binomial(n, p_hat) / n, so draw
        # that directly: the same bootstrap distribution in O(resamples) instead of O(resamples * n).
        means = np.random.default_rng(seed).binomial(values.size, values.mean(), size=resamples) / values.size
    else:
        means = resampled_sums(values, resamples, seed) / values.size
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_corpus_ci(
    stats: np.ndarray,
    metric: Callable[[np.ndarray], float],
    *,
    batch_metric: Callable[[np.ndarray], np.ndarray] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """CI of a corpus-level metric: resample whole sentences, sum their sufficient statistics, recompute.

    ``stats`` has one row of additive statistics per sample; ``metric`` maps a summed row to the score
    (``batch_metric``, if given, maps a (resamples, k) array of summed rows to all scores at once).
    """
    stats = np.asarray(stats)
    if stats.shape[0] == 0:
        return None
    sums = resampled_sums(stats, resamples, seed)
    if np.issubdtype(stats.dtype, np.integer):
        sums = np.rint(sums).astype(np.int64)  # integer statistics (n-gram counts) stay exact
    if batch_metric is not None:  # the same metric, vectorised over all resamples at once
        scores = np.asarray(batch_metric(sums), dtype=np.float64)
    else:
        scores = np.fromiter((metric(row) for row in sums), dtype=np.float64, count=resamples)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(scores, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def metric_entry(value: float | None, ci: tuple[float, float] | None, n: int) -> dict[str, object]:
    """The results.json shape of one metric: ``{"value", "ci95", "n"}``."""
    return {"value": value, "ci95": list(ci) if ci is not None else None, "n": n}


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> dict[str, float | int]:
    """Exact McNemar test for paired binary outcomes (1 = correct) of two models on the same samples.

    Only discordant pairs carry information: ``b_wins`` (a wrong, b right) and ``a_wins``. Under H0 they are
    Binomial(n, 1/2); the two-sided p-value is ``min(1, 2 * P[X <= min(a_wins, b_wins)])``.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must align: {a.shape} vs {b.shape}")
    a_wins = int(np.sum(a & ~b))
    b_wins = int(np.sum(~a & b))
    n = a_wins + b_wins
    k = min(a_wins, b_wins)
    if n == 0:
        p = 1.0
    else:
        # log-space binomial tail: exact for any n without big-integer or float overflow.
        i = np.arange(k + 1)
        log_terms = _log_comb(n, i) - n * np.log(2.0)
        p = float(min(1.0, 2.0 * np.exp(np.logaddexp.reduce(log_terms))))
    return {
        "n": int(a.size),
        "a_wins": a_wins,
        "b_wins": b_wins,
        "discordant": n,
        "p_value": p,
        "delta": float(b.mean() - a.mean()) if a.size else 0.0,
    }


def _log_comb(n: int, k: np.ndarray) -> np.ndarray:
    from math import lgamma

    lg = np.vectorize(lgamma, otypes=[float])
    return np.asarray(lgamma(n + 1) - lg(k + 1) - lg(n - k + 1), dtype=np.float64)


def _bootstrap_p(deltas: np.ndarray) -> float:
    """Two-sided bootstrap p-value: twice the smaller share of resampled deltas on either side of 0, counted with
    the add-one rule ((k + 1) / (R + 1)), so it is never 0: R resamples cannot show a p below 1 / (R + 1)."""
    below, above = int(np.sum(deltas <= 0)), int(np.sum(deltas >= 0))
    return min(1.0, 2.0 * (min(below, above) + 1) / (deltas.size + 1))


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = 0.95
) -> dict[str, float | int | list[float]]:
    """Paired bootstrap of ``mean(b) - mean(a)`` over the same samples: delta, percentile CI, two-sided p-value.

    The p-value is twice the smaller share of resampled deltas on either side of 0 (capped at 1).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must align: {a.shape} vs {b.shape}")
    if a.size == 0:
        return {"n": 0, "delta": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}
    diff = b - a
    deltas = diff[_indices(diff.size, resamples, seed)].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(deltas, [alpha, 1.0 - alpha])
    p = _bootstrap_p(deltas)
    if np.all(diff == 0):
        p = 1.0
    return {"n": int(diff.size), "delta": float(diff.mean()), "ci95": [float(lo), float(hi)], "p_value": p}


def paired_test(
    a: np.ndarray, b: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = 0.95
) -> dict[str, object]:
    """Compare paired per-sample scores: ``{test, n, delta, ci95, p_value}`` with ``delta = mean(b) - mean(a)`` and
    its paired-bootstrap CI; the p-value is exact McNemar's when both vectors are 0/1 (then also ``a_wins``,
    ``b_wins``, ``discordant``), else the paired bootstrap's. The chosen test is named."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    boot = paired_bootstrap(a, b, resamples=resamples, seed=seed, level=level)
    binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    if binary:
        return {"test": "mcnemar_exact", **mcnemar_exact(a, b), "ci95": boot["ci95"]}
    return {"test": "paired_bootstrap", **boot}


def _corpus_scores(sums: np.ndarray, batch_metric: Callable[[np.ndarray], np.ndarray], integer: bool) -> np.ndarray:
    """``batch_metric`` of summed statistics rows; integer statistics (n-gram counts) are rounded back to exact
    integers first (a resampled sum is a float matrix product)."""
    if integer:
        sums = np.rint(sums).astype(np.int64)
    return np.asarray(batch_metric(sums), dtype=np.float64)


def paired_corpus_bootstrap(
    stats_a: np.ndarray,
    stats_b: np.ndarray,
    batch_metric: Callable[[np.ndarray], np.ndarray],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> dict[str, object]:
    """Paired bootstrap of a corpus-level metric (corpus BLEU, or any metric of summed per-sample statistics).

    ``stats_a`` / ``stats_b`` hold one row of additive statistics per sample, row i of both being the same sample
    (e.g. :func:`medbench.scoring.caption.bleu_statistics` of each side's captions); ``batch_metric`` maps a
    (resamples, k) array of summed rows to their scores (e.g. ``bleu_from_statistics_batch``). Every resample
    draws the same sample indices for both sides, so the between-sample spread both share cancels out of the
    delta. Returns ``{test, n, delta, ci95, p_value, a_value, b_value}``: ``delta`` = metric(sum b) - metric(sum a)
    on the full set (``a_value`` / ``b_value``), the percentile CI of the resampled deltas, and a two-sided p-value
    defined as in :func:`paired_bootstrap` (1.0 when both sides' statistics are identical).
    """
    # One statistic per sample may come as a flat vector: a column, so batch_metric always sees (resamples, k).
    a, b = np.asarray(stats_a), np.asarray(stats_b)
    a, b = (a[:, None] if a.ndim == 1 else a), (b[:, None] if b.ndim == 1 else b)
    if a.shape != b.shape:
        raise ValueError(f"paired statistics must align: {a.shape} vs {b.shape}")
    n = int(a.shape[0])
    if n == 0:
        empty = {"delta": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0, "a_value": 0.0, "b_value": 0.0}
        return {"test": "paired_corpus_bootstrap", "n": 0, **empty}
    integer = bool(np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer))
    value_a = float(_corpus_scores(a.sum(axis=0, keepdims=True), batch_metric, integer)[0])
    value_b = float(_corpus_scores(b.sum(axis=0, keepdims=True), batch_metric, integer)[0])
    # The same (n, resamples, seed) gives both sides the same draws: the one cached count matrix when it fits,
    # else the same seeded index stream chunk by chunk. That is what makes this bootstrap paired.
    deltas = _corpus_scores(resampled_sums(b, resamples, seed), batch_metric, integer) - _corpus_scores(
        resampled_sums(a, resamples, seed), batch_metric, integer
    )
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(deltas, [alpha, 1.0 - alpha])
    p = _bootstrap_p(deltas)
    if np.array_equal(a, b):
        p = 1.0
    return {
        "test": "paired_corpus_bootstrap",
        "n": n,
        "delta": value_b - value_a,
        "ci95": [float(lo), float(hi)],
        "p_value": p,
        "a_value": value_a,
        "b_value": value_b,
    }
