"""The gate's error rates, simulated: how often it cries "regression" when nothing changed (false alarms) and how
often it catches a real drop (power), with the statistics exactly as the gate calls them (medbench.stats
paired tests -> medbench.reports.gate Comparison -> finish: Holm, then decide).

Every simulated gate run holds one comparison, so Holm is the identity and each verdict rests on that run's own
p-value. All randomness is seeded; nothing depends on timing or machine speed.

Bootstrap resamples: the verdict "regression" rests only on the p-value (exact McNemar for right/wrong scores)
and the point estimate; the bootstrap CI only separates "no change" from "inconclusive". So the 2,000-run
accuracy simulations compute the CI with 200 resamples instead of the gate's default 1,000, which keeps this file
at a few seconds without changing a single regression verdict. Where the p-value itself comes from a bootstrap
(continuous scores, corpus BLEU) 200 resamples still resolve p to 0.005, enough to test alpha = 0.05.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from medbench.reports.gate import Comparison, finish
from medbench.scoring.caption import bleu_from_statistics_batch, bleu_statistics
from medbench.stats import paired_corpus_bootstrap, paired_test

ALPHA, MAX_DROP = 0.05, 0.01
N = 451  # SLAKE's English test split: the size of a real gated task
RUNS = 2000
RESAMPLES = 200  # CI resamples in the simulations (see the module docstring)
BASE_ACCURACY = 0.6


def _verdict(result: dict[str, Any], metric: str, baseline_value: float, candidate_value: float) -> str:
    """The verdict of one gate run holding this single comparison."""
    lo, hi = result["ci95"]
    comparison = Comparison(
        task="slake",
        baseline_model="base",
        candidate_model="cand",
        protocol="strict",
        metric=metric,
        test=str(result["test"]),
        n=int(result["n"]),
        baseline_value=baseline_value,
        candidate_value=candidate_value,
        delta=float(result["delta"]),
        ci95=(float(lo), float(hi)),
        p_value=float(result["p_value"]),
    )
    return finish([comparison], alpha=ALPHA, max_drop=MAX_DROP)[0].verdict


def _accuracy_verdict(baseline: np.ndarray, candidate: np.ndarray, resamples: int = RESAMPLES) -> str:
    result = paired_test(baseline, candidate, resamples=resamples)
    assert result["test"] == "mcnemar_exact"
    return _verdict(result, "closed_accuracy", float(baseline.mean()), float(candidate.mean()))


def _simulate(rng: np.random.Generator, worse: float, better: float) -> tuple[np.ndarray, np.ndarray]:
    """One baseline run (each sample right with probability BASE_ACCURACY) and a candidate that turns a share
    ``worse`` of ALL samples right -> wrong and a share ``better`` wrong -> right (in expectation)."""
    baseline = (rng.random(N) < BASE_ACCURACY).astype(np.float64)
    # Per-sample flip probabilities that give those shares of the whole task: right ones flip with
    # worse / accuracy, wrong ones with better / (1 - accuracy).
    flip = np.where(baseline == 1.0, worse / BASE_ACCURACY, better / (1.0 - BASE_ACCURACY))
    candidate = np.where(rng.random(N) < flip, 1.0 - baseline, baseline)
    return baseline, candidate


def _shares(verdicts: list[str]) -> dict[str, float]:
    kinds = ("regression", "improvement", "inconclusive", "no change")
    return {kind: verdicts.count(kind) / len(verdicts) for kind in kinds}


def test_no_true_change_rarely_raises_a_regression() -> None:
    # False alarms: 3% of samples flip right -> wrong and 3% wrong -> right, so the true accuracy is unchanged.
    rng = np.random.default_rng(12)
    verdicts = [_accuracy_verdict(*_simulate(rng, worse=0.03, better=0.03)) for _ in range(RUNS)]
    shares = _shares(verdicts)
    print(f"\nno true change, n={N}, {RUNS} runs: {shares}")
    assert shares["regression"] <= ALPHA, shares
    # McNemar is a two-sided level-alpha test: significant verdicts in either direction stay within alpha too.
    assert shares["regression"] + shares["improvement"] <= ALPHA, shares


def test_a_true_five_point_drop_is_caught() -> None:
    # Power: 6% of samples flip right -> wrong, 1% wrong -> right: a true net drop of 5 points.
    rng = np.random.default_rng(13)
    verdicts = [_accuracy_verdict(*_simulate(rng, worse=0.06, better=0.01)) for _ in range(RUNS)]
    shares = _shares(verdicts)
    print(f"\ntrue 5-point drop, n={N}, {RUNS} runs: {shares}")
    assert shares["regression"] >= 0.80, shares
    assert shares["improvement"] == 0.0, shares


def test_identical_runs_are_no_change() -> None:
    rng = np.random.default_rng(14)
    baseline = (rng.random(N) < BASE_ACCURACY).astype(np.float64)
    assert _accuracy_verdict(baseline, baseline.copy(), resamples=1000) == "no change"


@pytest.mark.parametrize("direction", ["right_to_wrong", "wrong_to_right"])
def test_a_single_flipped_answer_is_not_a_regression(direction: str) -> None:
    rng = np.random.default_rng(15)
    baseline = (rng.random(N) < BASE_ACCURACY).astype(np.float64)
    candidate = baseline.copy()
    flipped = int(np.flatnonzero(baseline == (1.0 if direction == "right_to_wrong" else 0.0))[0])
    candidate[flipped] = 1.0 - candidate[flipped]
    verdict = _accuracy_verdict(baseline, candidate, resamples=1000)  # the gate's default resamples
    assert verdict != "regression"
    # One answer is 0.2 points: within --max-drop, and the CI (at most a few answers wide) rules out more.
    assert verdict == "no change"


def test_no_true_change_in_continuous_scores_rarely_raises_a_regression() -> None:
    # The paired-bootstrap path (judge scores): the candidate's score moves one point up or down on 30% of the
    # samples, symmetrically, so the true mean is unchanged. Fewer runs: each p-value is itself a bootstrap.
    rng = np.random.default_rng(16)
    verdicts = []
    for _ in range(500):
        baseline = rng.integers(2, 5, size=N).astype(np.float64)  # 2..4, so +-1 stays on the 1-5 scale
        step = rng.choice([-1.0, 0.0, 1.0], size=N, p=[0.15, 0.7, 0.15])
        candidate = baseline + step
        result = paired_test(baseline, candidate, resamples=RESAMPLES)
        assert result["test"] == "paired_bootstrap"
        verdicts.append(_verdict(result, "judge_score", float(baseline.mean()), float(candidate.mean())))
    shares = _shares(verdicts)
    print(f"\njudge scores, no true change, n={N}, 500 runs: {shares}")
    assert shares["regression"] <= ALPHA, shares


def test_no_true_change_in_corpus_bleu_rarely_raises_a_regression() -> None:
    # The paired corpus-bootstrap path (corpus BLEU). Two systems of similar quality; in each simulated run every
    # caption's pair of outputs is randomly assigned to baseline / candidate, so neither side is better in truth.
    rng = np.random.default_rng(17)
    words = np.array(["left", "right", "lung", "heart", "mass", "nodule", "liver", "kidney", "lesion", "brain"])
    references, outputs_1, outputs_2 = [], [], []
    for _ in range(N):
        ref = rng.choice(words, size=int(rng.integers(5, 12)))
        references.append(" ".join(ref))
        for outputs in (outputs_1, outputs_2):
            outputs.append(" ".join(str(rng.choice(words)) if rng.random() < 0.3 else str(w) for w in ref))
    stats_1, stats_2 = bleu_statistics(outputs_1, references), bleu_statistics(outputs_2, references)
    verdicts = []
    for _ in range(500):
        swap = rng.random(N) < 0.5
        baseline = np.where(swap[:, None], stats_2, stats_1)
        candidate = np.where(swap[:, None], stats_1, stats_2)
        result = paired_corpus_bootstrap(baseline, candidate, bleu_from_statistics_batch, resamples=RESAMPLES)
        verdicts.append(_verdict(result, "bleu", float(result["a_value"]), float(result["b_value"])))
    shares = _shares(verdicts)
    print(f"\ncorpus BLEU, no true change, n={N}, 500 runs: {shares}")
    assert shares["regression"] <= ALPHA, shares
