"""The gate's statistics checked against independent implementations (scipy, statsmodels), and the paired
corpus-level bootstrap the gate uses for corpus BLEU (medbench.stats.paired_corpus_bootstrap)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from medbench import stats as stats_module
from medbench.reports.gate import holm
from medbench.scoring.caption import (
    bleu_from_statistics,
    bleu_from_statistics_batch,
    bleu_statistics,
    corpus_bleu,
)
from medbench.stats import bootstrap_corpus_ci, mcnemar_exact, paired_corpus_bootstrap

# ---------------------------------------------------------------------------------------------------------------
# McNemar's exact test against scipy's binomial test and statsmodels' McNemar


def _outcomes(both: int, only_a: int, only_b: int, neither: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Paired 0/1 outcome vectors with the given 2x2 table, rows shuffled."""
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither)
    order = rng.permutation(a.size)
    return a[order], b[order]


def _random_tables(rng: np.random.Generator, count: int) -> list[tuple[int, int, int, int]]:
    """2x2 tables (both right, only a right, only b right, both wrong) from tiny to large, lopsided to balanced,
    always including the ones without any discordant pair."""
    tables = [(0, 0, 0, 0), (5, 0, 0, 3), (0, 0, 0, 7), (1, 0, 1, 0), (0, 1, 0, 0), (3, 7, 7, 0)]
    for _ in range(count):
        scale = int(rng.choice([3, 20, 200, 3000]))
        only_a, only_b = (int(x) for x in rng.integers(0, scale, size=2))
        if rng.random() < 0.3:  # balanced and nearly balanced tables: p near 1
            only_b = only_a + int(rng.integers(-1, 2)) if only_a > 0 else only_b
        tables.append((int(rng.integers(0, 400)), only_a, max(0, only_b), int(rng.integers(0, 400))))
    return tables


def test_mcnemar_exact_matches_scipy_binomtest_and_statsmodels() -> None:
    # Guards medbench's log-space binomial tail (exact for any n) against two independent implementations.
    rng = np.random.default_rng(20240612)
    for both, only_a, only_b, neither in _random_tables(rng, 300):
        a, b = _outcomes(both, only_a, only_b, neither, rng)
        result = mcnemar_exact(a, b)
        assert (result["a_wins"], result["b_wins"]) == (only_a, only_b)
        discordant = only_a + only_b
        reference = mcnemar([[both, only_a], [only_b, neither]], exact=True).pvalue
        assert result["p_value"] == pytest.approx(reference, rel=1e-9, abs=1e-300), (both, only_a, only_b)
        if discordant == 0:  # scipy's binomtest needs n >= 1; no discordant pair carries no evidence: p = 1
            assert result["p_value"] == 1.0
        else:
            binomial = binomtest(min(only_a, only_b), discordant, 0.5).pvalue
            assert result["p_value"] == pytest.approx(binomial, rel=1e-9, abs=1e-300), (only_a, only_b)


def test_mcnemar_exact_tiny_p_values_stay_accurate() -> None:
    # 1 vs 1,500 discordant pairs: p ~ 1e-448 underflows doubles; 40 vs 1,500 stays representable and must be
    # exact to many digits (a naive cumulative sum of binomial terms loses it).
    rng = np.random.default_rng(5)
    for only_a, only_b in [(40, 1500), (1500, 40), (200, 900), (1, 1500)]:
        a, b = _outcomes(10, only_a, only_b, 10, rng)
        expected = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
        assert mcnemar_exact(a, b)["p_value"] == pytest.approx(expected, rel=1e-9, abs=1e-300)


# ---------------------------------------------------------------------------------------------------------------
# Holm's step-down correction against statsmodels


def test_holm_matches_statsmodels_on_random_p_value_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    # Guards the gate's multiple-comparison correction: order kept, ties, the running maximum and the cap at 1.
    # statsmodels' multipletests runs a full gc.collect() on every call (~25 ms under pytest); it does not touch
    # the result, so it is switched off here (monkeypatch puts it back) to keep 400 comparisons fast.
    monkeypatch.setattr(gc, "collect", lambda *args, **kwargs: 0)
    rng = np.random.default_rng(7)
    for trial in range(400):
        m = trial % 50 + 1  # every length 1..50, each with every kind of vector
        kind = (trial // 50) % 4
        if kind == 0:  # continuous p-values
            p = rng.random(m)
        elif kind == 1:  # many ties (bootstrap p-values are multiples of 1 / resamples)
            p = rng.integers(0, 20, size=m) / 200.0
        elif kind == 2:  # a few tiny ones among large ones, exact 0 and 1 included
            p = np.where(rng.random(m) < 0.3, rng.random(m) * 1e-4, rng.random(m))
            p[rng.integers(0, m)] = 0.0
            p[rng.integers(0, m)] = 1.0
        else:  # all equal
            p = np.full(m, float(rng.choice([0.0, 0.01, 0.04, 0.5, 1.0])))
        expected = multipletests(p, alpha=0.05, method="holm")[1]
        got = holm(list(p))
        assert len(got) == m
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0, err_msg=f"p={p.tolist()}")


def test_holm_of_nothing_and_of_one() -> None:
    assert holm([]) == []
    assert holm([0.03]) == [0.03]  # one comparison: Holm is the identity


# ---------------------------------------------------------------------------------------------------------------
# Paired corpus-level bootstrap (corpus BLEU)

# A small radiology vocabulary for the synthetic captions.
# fmt: off
_WORDS = [
    "the", "a", "chest", "x-ray", "shows", "left", "right", "lung", "lobe", "opacity", "effusion", "pleural", "heart",
    "size", "normal", "enlarged", "mass", "nodule", "ct", "scan", "axial", "image", "of", "abdomen", "liver",
    "kidney", "lesion", "contrast", "enhancement", "mri", "brain", "t2", "weighted", "signal", "fracture", "bone",
    "cortical", "arrow", "indicates", "small", "large", "mild", "severe", "consolidation",
]
# fmt: on


def _captions(n: int, seed: int) -> tuple[list[str], list[str]]:
    """References and predictions that share most of their words (so corpus BLEU sits well inside (0, 1))."""
    rng = np.random.default_rng(seed)
    references, predictions = [], []
    for _ in range(n):
        ref = [str(w) for w in rng.choice(_WORDS, size=int(rng.integers(6, 16)))]
        pred = [str(rng.choice(_WORDS)) if rng.random() < 0.25 else w for w in ref]
        references.append(" ".join(ref))
        predictions.append(" ".join(pred[: max(1, len(pred) - int(rng.integers(0, 3)))]))
    return references, predictions


def test_identical_sides_give_zero_delta_and_p_one() -> None:
    references, predictions = _captions(120, seed=1)
    stats = bleu_statistics(predictions, references)
    result = paired_corpus_bootstrap(stats, stats.copy(), bleu_from_statistics_batch, resamples=300)
    assert result["test"] == "paired_corpus_bootstrap"
    assert result["n"] == 120
    assert result["delta"] == 0.0 and result["p_value"] == 1.0 and result["ci95"] == [0.0, 0.0]
    assert result["a_value"] == result["b_value"] == pytest.approx(corpus_bleu(predictions, references))


def test_emptying_half_the_captions_is_a_clear_significant_drop() -> None:
    references, baseline = _captions(200, seed=2)
    candidate = [p if i % 2 else "" for i, p in enumerate(baseline)]
    stats_a, stats_b = bleu_statistics(baseline, references), bleu_statistics(candidate, references)
    result = paired_corpus_bootstrap(stats_a, stats_b, bleu_from_statistics_batch, resamples=500, seed=3)
    assert result["delta"] < -0.1
    assert result["p_value"] < 0.01
    lo, hi = result["ci95"]
    assert lo <= result["delta"] <= hi < 0
    # The delta is exactly medbench's corpus BLEU (sacrebleu's formula) of the candidate minus the baseline's.
    exact = bleu_from_statistics(stats_b.sum(axis=0)) - bleu_from_statistics(stats_a.sum(axis=0))
    assert result["delta"] == pytest.approx(exact, abs=1e-12)
    assert result["delta"] == pytest.approx(corpus_bleu(candidate, references) - corpus_bleu(baseline, references))


def _reference_paired_corpus_bootstrap(
    stats_a: np.ndarray, stats_b: np.ndarray, resamples: int, seed: int
) -> tuple[list[float], float]:
    """The definition, one resample at a time: draw n sentence indices, score both sides on THE SAME draw."""
    rng = np.random.default_rng(seed)
    n = stats_a.shape[0]
    deltas = []
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        deltas.append(bleu_from_statistics(stats_b[idx].sum(axis=0)) - bleu_from_statistics(stats_a[idx].sum(axis=0)))
    d = np.array(deltas)
    lo, hi = np.quantile(d, [0.025, 0.975])
    # the add-one rule: (k + 1) / (R + 1) on the smaller side, doubled
    p = min(1.0, 2.0 * (min(int(np.sum(d <= 0)), int(np.sum(d >= 0))) + 1) / (d.size + 1))
    return [float(lo), float(hi)], p


@pytest.mark.parametrize("chunked", [False, True])
def test_resamples_pair_the_sides_like_the_definition(monkeypatch: pytest.MonkeyPatch, chunked: bool) -> None:
    # Guards the pairing: both sides must be summed over the same sentence draws, in the cached count-matrix path
    # and in the chunked path used above _MAX_CELLS (forced here by lowering it). Unpaired draws fail this.
    references, baseline = _captions(60, seed=4)
    _, other = _captions(60, seed=5)
    candidate = [o if i % 3 == 0 else p for i, (p, o) in enumerate(zip(baseline, other, strict=True))]
    stats_a, stats_b = bleu_statistics(baseline, references), bleu_statistics(candidate, references)
    if chunked:
        monkeypatch.setattr(stats_module, "_MAX_CELLS", 500)
    result = paired_corpus_bootstrap(stats_a, stats_b, bleu_from_statistics_batch, resamples=150, seed=11)
    ci, p = _reference_paired_corpus_bootstrap(stats_a, stats_b, resamples=150, seed=11)
    assert result["ci95"] == pytest.approx(ci, abs=1e-12)
    assert result["p_value"] == pytest.approx(p)


def test_pairing_makes_a_one_sentence_change_a_narrow_interval() -> None:
    # A candidate that differs from the baseline in one caption: paired, the CI of the delta is tiny; the CI of
    # either side alone (what an unpaired comparison would rest on) is many times wider.
    references, baseline = _captions(300, seed=6)
    candidate = list(baseline)
    candidate[17] = "completely unrelated words here"
    stats_a, stats_b = bleu_statistics(baseline, references), bleu_statistics(candidate, references)
    result = paired_corpus_bootstrap(stats_a, stats_b, bleu_from_statistics_batch, resamples=400)
    lo, hi = result["ci95"]
    single = bootstrap_corpus_ci(stats_a, bleu_from_statistics, batch_metric=bleu_from_statistics_batch, resamples=400)
    assert single is not None
    assert hi - lo < (single[1] - single[0]) / 10
    assert lo <= result["delta"] <= hi <= 0.0


def test_float_statistics_and_a_flat_vector_work_too() -> None:
    # Any corpus metric of additive statistics: here a ratio of sums (micro-averaged recall) from float rows.
    rng = np.random.default_rng(8)
    hits_a = rng.integers(0, 5, size=250).astype(float)
    totals = hits_a + rng.integers(0, 5, size=250)
    hits_b = np.maximum(0.0, hits_a - (rng.random(250) < 0.3))

    def ratio(sums: np.ndarray) -> np.ndarray:
        return sums[:, 0] / sums[:, 1]

    result = paired_corpus_bootstrap(
        np.column_stack([hits_a, totals]), np.column_stack([hits_b, totals]), ratio, resamples=300
    )
    assert result["delta"] == pytest.approx((hits_b.sum() - hits_a.sum()) / totals.sum())
    assert result["ci95"][1] < 0 and result["p_value"] < 0.01
    flat = paired_corpus_bootstrap(hits_a, hits_b, lambda sums: sums[:, 0] / 250.0, resamples=300)
    assert flat["delta"] == pytest.approx(hits_b.mean() - hits_a.mean())


def test_empty_and_misaligned_inputs() -> None:
    empty = paired_corpus_bootstrap(np.zeros((0, 10), int), np.zeros((0, 10), int), bleu_from_statistics_batch)
    assert empty["n"] == 0 and empty["delta"] == 0.0 and empty["p_value"] == 1.0
    with pytest.raises(ValueError, match="align"):
        paired_corpus_bootstrap(np.zeros((3, 10), int), np.zeros((4, 10), int), bleu_from_statistics_batch)
