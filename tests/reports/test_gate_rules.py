"""The gate's verdict rules on hand-made comparisons: each verdict, the samples-needed estimate, --max-drop as a
fraction of the judge score's 1-5 range, and the exit codes."""

from __future__ import annotations

import pytest

from medbench.reports.gate import Comparison, decide, exit_code, samples_needed


def comparison(delta: float, ci: tuple[float, float], p: float, metric: str = "overall_accuracy") -> Comparison:
    c = Comparison("vqa_rad", "a", "b", "strict", metric, "mcnemar_exact", 451, 0.6, 0.6 + delta, delta, ci, p)
    c.p_holm = p
    return c


@pytest.mark.parametrize(
    ("delta", "ci", "p", "verdict"),
    [
        (-0.05, (-0.08, -0.02), 0.001, "regression"),
        (-0.005, (-0.008, -0.002), 0.001, "no change"),  # significant but within --max-drop
        (0.04, (0.01, 0.07), 0.01, "improvement"),
        (-0.01, (-0.04, 0.02), 0.4, "inconclusive"),
        (0.0, (-0.005, 0.005), 1.0, "no change"),
        (-0.05, (-0.09, 0.0), 0.06, "inconclusive"),  # a large drop that is not significant is never "no change"
    ],
)
def test_each_verdict(delta: float, ci: tuple[float, float], p: float, verdict: str) -> None:
    assert decide(comparison(delta, ci, p), alpha=0.05, max_drop=0.01).verdict == verdict


def test_samples_needed_scales_with_the_ci_and_is_none_when_no_n_can_clear_it() -> None:
    # CI half-width 0.03 at n=451; a point estimate of 0 needs a half-width of 0.01: 9x the samples
    assert samples_needed(451, 0.0, (-0.03, 0.03), 0.01) == 451 * 9
    assert samples_needed(451, -0.02, (-0.05, 0.01), 0.01) is None
    c = decide(comparison(-0.02, (-0.05, 0.01), 0.3), alpha=0.05, max_drop=0.01)
    assert c.verdict == "inconclusive" and c.samples_needed is None and "more samples cannot clear it" in c.why


def test_max_drop_is_a_fraction_of_the_judge_scores_range() -> None:
    # 0.03 of a 1-5 score is under 1% of its 4-point range: within --max-drop 0.01 (0.04 judge points)
    judged = decide(comparison(-0.03, (-0.035, -0.025), 0.001, "judge_score"), alpha=0.05, max_drop=0.01)
    assert judged.verdict == "no change"
    assert decide(comparison(-0.06, (-0.07, -0.05), 0.001, "judge_score"), alpha=0.05, max_drop=0.01).verdict == (
        "regression"
    )


def test_exit_codes() -> None:
    bad = decide(comparison(-0.05, (-0.08, -0.02), 0.001), alpha=0.05, max_drop=0.01)
    unsure = decide(comparison(-0.01, (-0.04, 0.02), 0.4), alpha=0.05, max_drop=0.01)
    fine = decide(comparison(0.0, (-0.005, 0.005), 1.0), alpha=0.05, max_drop=0.01)
    assert exit_code([fine, unsure]) == 0 and exit_code([fine, bad]) == 1
    assert exit_code([fine, unsure], fail_on_inconclusive=True) == 1


def test_a_significant_small_drop_whose_ci_reaches_past_max_drop_says_so() -> None:
    c = decide(comparison(-0.0089, (-0.0143, -0.0036), 0.0013), alpha=0.05, max_drop=0.01)
    assert c.verdict == "inconclusive" and c.why.startswith("a significant drop within --max-drop")
