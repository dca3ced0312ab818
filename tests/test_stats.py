"""Seeded percentile-bootstrap confidence intervals (medbench.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from medbench.stats import bootstrap_corpus_ci, bootstrap_mean_ci, metric_entry


def _binary(n: int, seed: int = 123, p: float = 0.6) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(np.float64)


# ---------------------------------------------------------------- bootstrap_mean_ci


@pytest.mark.parametrize("data_seed", range(5))
@pytest.mark.parametrize("n", [10, 50, 400])
def test_mean_ci_contains_the_mean(n: int, data_seed: int) -> None:
    values = _binary(n, data_seed)
    ci = bootstrap_mean_ci(values, seed=0)
    assert ci is not None
    lo, hi = ci
    assert isinstance(lo, float) and isinstance(hi, float)
    assert lo <= values.mean() <= hi
    assert lo < hi
    # a CI of means lies within the range of the values
    assert values.min() <= lo and hi <= values.max()


def test_mean_ci_continuous_values() -> None:
    values = np.random.default_rng(7).normal(loc=3.0, scale=2.0, size=200)
    lo, hi = bootstrap_mean_ci(values)  # type: ignore[misc]
    assert lo < values.mean() < hi
    # roughly mean +- 1.96 * sd / sqrt(n) = +- 0.28; generous bounds
    assert 0.3 < hi - lo < 0.8


def test_mean_ci_is_seeded() -> None:
    values = _binary(60)
    assert bootstrap_mean_ci(values, seed=5) == bootstrap_mean_ci(values, seed=5)
    assert bootstrap_mean_ci(values) == bootstrap_mean_ci(values, seed=0)  # default seed is fixed
    cis = {bootstrap_mean_ci(values, seed=s) for s in range(8)}
    assert len(cis) > 1  # different seeds give (usually) different intervals


def test_mean_ci_accepts_lists() -> None:
    values = [0, 1, 1, 0, 1, 1, 1, 0]
    assert bootstrap_mean_ci(values, seed=3) == bootstrap_mean_ci(np.asarray(values, dtype=float), seed=3)


def test_mean_ci_width_shrinks_with_n() -> None:
    pattern = np.array([0, 1, 1, 0, 1], dtype=np.float64)  # mean 0.6 at every size
    widths = []
    for reps in (4, 40, 400):
        lo, hi = bootstrap_mean_ci(np.tile(pattern, reps))  # type: ignore[misc]
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2] > 0
    # the width scales like 1/sqrt(n): x100 samples -> about 10x narrower
    assert 5 < widths[0] / widths[2] < 20


def test_mean_ci_wider_at_higher_level() -> None:
    values = _binary(80)
    lo50, hi50 = bootstrap_mean_ci(values, level=0.5)  # type: ignore[misc]
    lo99, hi99 = bootstrap_mean_ci(values, level=0.99)  # type: ignore[misc]
    assert lo99 <= lo50 and hi50 <= hi99
    assert hi99 - lo99 > hi50 - lo50


@pytest.mark.parametrize("value", [0.0, 1.0, 3.0])
def test_mean_ci_all_equal_values_zero_width(value: float) -> None:
    assert bootstrap_mean_ci(np.full(25, value)) == (value, value)


def test_mean_ci_all_equal_inexact_float() -> None:
    lo, hi = bootstrap_mean_ci([0.7] * 10)  # type: ignore[misc]
    assert lo == pytest.approx(0.7)
    assert hi == pytest.approx(0.7)
    assert hi - lo == pytest.approx(0.0, abs=1e-12)


def test_mean_ci_single_value() -> None:
    assert bootstrap_mean_ci([1.0]) == (1.0, 1.0)


@pytest.mark.parametrize("empty", [[], np.array([]), np.zeros(0)])
def test_mean_ci_empty_is_none(empty: object) -> None:
    assert bootstrap_mean_ci(empty) is None  # type: ignore[arg-type]


def test_mean_ci_resamples() -> None:
    values = _binary(30)
    lo, hi = bootstrap_mean_ci(values, resamples=50)  # type: ignore[misc]
    assert lo <= values.mean() <= hi


# ---------------------------------------------------------------- bootstrap_corpus_ci


def _ratio(summed: np.ndarray) -> float:
    """An additive-statistics metric: sum(correct) / sum(total)."""
    return float(summed[0] / summed[1]) if summed[1] else 0.0


def _ratio_stats(n: int, seed: int = 11) -> np.ndarray:
    rng = np.random.default_rng(seed)
    total = rng.integers(1, 20, size=n)
    correct = rng.binomial(total, 0.4)
    return np.stack([correct, total], axis=1)


@pytest.mark.parametrize("n", [10, 100])
def test_corpus_ci_contains_corpus_value(n: int) -> None:
    stats = _ratio_stats(n)
    value = _ratio(stats.sum(0))
    ci = bootstrap_corpus_ci(stats, _ratio)
    assert ci is not None
    lo, hi = ci
    assert isinstance(lo, float) and isinstance(hi, float)
    assert lo <= value <= hi
    assert lo < hi
    assert lo >= 0.0 and hi <= 1.0


def test_corpus_ci_metric_receives_summed_rows() -> None:
    stats = _ratio_stats(12)
    seen: list[tuple[int, ...]] = []

    def metric(summed: np.ndarray) -> float:
        seen.append(summed.shape)
        return _ratio(summed)

    bootstrap_corpus_ci(stats, metric, resamples=37)
    assert len(seen) == 37
    assert set(seen) == {(2,)}


def test_corpus_ci_is_seeded() -> None:
    stats = _ratio_stats(40)
    assert bootstrap_corpus_ci(stats, _ratio, seed=9) == bootstrap_corpus_ci(stats, _ratio, seed=9)
    cis = {bootstrap_corpus_ci(stats, _ratio, seed=s) for s in range(8)}
    assert len(cis) > 1


def test_corpus_ci_width_shrinks_with_n() -> None:
    base = _ratio_stats(10)
    widths = []
    for reps in (1, 10, 100):
        lo, hi = bootstrap_corpus_ci(np.tile(base, (reps, 1)), _ratio)  # type: ignore[misc]
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2] > 0


def test_corpus_ci_constant_ratio_zero_width() -> None:
    # every row has correct = total / 2, so every resample's ratio of sums is exactly 0.5
    stats = np.array([[1, 2], [2, 4], [3, 6], [5, 10]])
    assert bootstrap_corpus_ci(stats, _ratio) == (0.5, 0.5)


def test_corpus_ci_ratio_of_sums_is_not_mean_of_ratios() -> None:
    # a long, badly scored sample dominates the ratio of sums: corpus value 1/101 ~ 0.0099, while the mean of
    # per-row ratios is (0/100 + 1/1) / 2 = 0.5. The CI must bracket the corpus value, not 0.5.
    stats = np.array([[0, 100], [1, 1]] * 20)
    lo, hi = bootstrap_corpus_ci(stats, _ratio)  # type: ignore[misc]
    assert lo <= 20 / 2020 <= hi
    assert hi < 0.5


def test_corpus_ci_matches_mean_ci_for_a_mean_metric() -> None:
    # with rows [value, 1] the ratio of sums is the sample mean, so the two bootstraps estimate the same thing;
    # with the same seed and resample count both resample the same rows (non-binary values: index resampling)
    values = np.random.default_rng(7).random(50)
    stats = np.stack([values, np.ones_like(values)], axis=1)
    corpus = bootstrap_corpus_ci(stats, _ratio, seed=4, resamples=500)
    mean = bootstrap_mean_ci(values, seed=4, resamples=500)
    assert corpus is not None and mean is not None
    assert corpus == pytest.approx(mean, abs=1e-12)


def test_corpus_ci_empty_is_none() -> None:
    assert bootstrap_corpus_ci(np.zeros((0, 2)), _ratio) is None


def test_corpus_ci_single_row() -> None:
    assert bootstrap_corpus_ci(np.array([[3, 4]]), _ratio) == (0.75, 0.75)


# ---------------------------------------------------------------- metric_entry


def test_metric_entry() -> None:
    assert metric_entry(0.5, (0.25, 0.75), 8) == {"value": 0.5, "ci95": [0.25, 0.75], "n": 8}
    assert metric_entry(None, None, 0) == {"value": None, "ci95": None, "n": 0}


def test_binary_fast_path_has_the_index_bootstrap_distribution() -> None:
    # For 0/1 scores the resampled mean is Binomial(n, p)/n; index resampling (the corpus path) must agree
    # up to Monte-Carlo error with many resamples.
    values = np.array([1.0] * 130 + [0.0] * 70)
    stats = np.stack([values, np.ones_like(values)], axis=1)
    fast = bootstrap_mean_ci(values, resamples=20000, seed=1)
    slow = bootstrap_corpus_ci(stats, _ratio, resamples=20000, seed=2)
    assert fast is not None and slow is not None
    assert fast == pytest.approx(slow, abs=0.0101)
