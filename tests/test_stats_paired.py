import numpy as np
import pytest

from medbench.stats import mcnemar_exact, paired_bootstrap, paired_test


def test_mcnemar_exact_against_hand_computed_binomial_tail() -> None:
    # 2 discordant pairs, both won by b: p = 2 * P[X <= 0], X ~ Bin(2, 1/2) = 2 * 1/4 = 0.5
    a = np.array([1, 1, 0, 0, 1])
    b = np.array([1, 1, 1, 1, 1])
    result = mcnemar_exact(a, b)
    assert (result["a_wins"], result["b_wins"], result["discordant"]) == (0, 2, 2)
    assert result["p_value"] == pytest.approx(0.5)
    assert result["delta"] == pytest.approx(0.4)
    # 1 vs 9 discordant: p = 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024
    a = np.array([1] + [0] * 9 + [1] * 5)
    b = np.array([0] + [1] * 9 + [1] * 5)
    assert mcnemar_exact(a, b)["p_value"] == pytest.approx(22 / 1024)


def test_mcnemar_matches_scipy_for_large_n() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, 20000)
    b = a.copy()
    flip = rng.choice(20000, 400, replace=False)
    b[flip] = 1 - b[flip]
    k = int(((a == 1) & (b == 0)).sum())
    assert mcnemar_exact(a, b)["p_value"] == pytest.approx(stats.binomtest(k, 400, 0.5).pvalue, rel=1e-9)


def test_no_discordance_and_shape_errors() -> None:
    assert mcnemar_exact(np.ones(4), np.ones(4))["p_value"] == 1.0
    with pytest.raises(ValueError, match="align"):
        mcnemar_exact(np.ones(3), np.ones(4))


def test_paired_bootstrap_detects_a_shift_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(300)
    shifted = paired_bootstrap(a, a + 0.1, resamples=500)
    assert shifted["delta"] == pytest.approx(0.1)
    # no resample crosses 0: the add-one floor 2 / (R + 1), never an impossible p of 0
    assert shifted["ci95"][0] == pytest.approx(0.1) and shifted["p_value"] == pytest.approx(2 / 501)
    same = paired_bootstrap(a, a)
    assert same["p_value"] == 1.0 and same["delta"] == 0.0
    noisy = paired_bootstrap(a, rng.permutation(a), resamples=500, seed=3)
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1] and noisy["p_value"] > 0.05


def test_paired_test_picks_the_test() -> None:
    assert paired_test(np.array([1, 0, 1]), np.array([1, 1, 1]))["test"] == "mcnemar_exact"
    assert paired_test(np.array([0.2, 0.5]), np.array([0.3, 0.5]))["test"] == "paired_bootstrap"
