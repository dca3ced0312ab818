"""Uncertainty: seeded percentile-bootstrap confidence intervals (vectorised numpy)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_mean_ci(
    values: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean of ``values``; None when there are no values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None
    means = values[_indices(values.size, resamples, seed)].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_corpus_ci(
    stats: np.ndarray,
    metric: Callable[[np.ndarray], float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """CI of a corpus-level metric: resample whole sentences, sum their sufficient statistics, recompute.

    ``stats`` has one row of additive statistics per sample; ``metric`` maps a summed row to the score.
    """
    stats = np.asarray(stats)
    if stats.shape[0] == 0:
        return None
    idx = _indices(stats.shape[0], resamples, seed)
    scores = np.fromiter((metric(stats[row].sum(axis=0)) for row in idx), dtype=np.float64, count=resamples)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(scores, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def metric_entry(value: float | None, ci: tuple[float, float] | None, n: int) -> dict[str, object]:
    """The results.json shape of one metric: ``{"value", "ci95", "n"}``."""
    return {"value": value, "ci95": list(ci) if ci is not None else None, "n": n}
