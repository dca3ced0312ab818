"""``medbench gate``: paired regression gating of a candidate against a baseline, per sample, corrected for the
many comparisons of one gate run, and explained.

For every model pair x task x metric both sides share, on the **same sample ids** (ids on one side only are
counted and left out):

* the difference candidate - baseline with a paired-bootstrap 95% CI;
* a p-value: exact McNemar for right/wrong scores, a paired bootstrap for continuous ones (recall, BERTScore,
  judge scores — judge failures left out pairwise and counted), a paired corpus-level bootstrap for corpus BLEU;
* Holm's step-down correction over all comparisons of the run;
* a verdict (:func:`decide`): **regression** (a drop larger than ``max_drop`` that is significant after Holm),
  **improvement** (a significant gain), **inconclusive** (not significant, but the CI still allows a drop larger
  than ``max_drop``: with how many samples that would be ruled out), or **no change**.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["regression", "improvement", "no change", "inconclusive"]
#: Width of the judge score's 1-5 scale: ``--max-drop`` (a fraction of a metric's range) times this for judge_score.
JUDGE_RANGE = 4.0
#: Exit codes: 0 pass, 1 regression (or inconclusive with --fail-on-inconclusive), 2 unusable input.
EXIT_PASS, EXIT_REGRESSION, EXIT_UNUSABLE = 0, 1, 2


@dataclass
class Comparison:
    """One model pair x task x metric: the candidate against the baseline on the samples both scored."""

    task: str
    baseline_model: str
    candidate_model: str
    protocol: str
    metric: str
    test: str  # mcnemar_exact | paired_bootstrap | paired_corpus_bootstrap
    n: int
    baseline_value: float
    candidate_value: float
    delta: float  # candidate - baseline
    ci95: tuple[float, float]
    p_value: float
    p_holm: float = 1.0
    verdict: Verdict = "no change"
    samples_needed: int | None = None  # inconclusive: shared samples that would rule out a drop > max_drop
    why: str = ""  # one line: what the verdict rests on
    only_baseline: int = 0  # ids scored on one side only (left out)
    only_candidate: int = 0
    excluded: int = 0  # shared ids left out pairwise (a judge failed on either side)
    # ids that got worse / better (binary: right -> wrong / wrong -> right)
    worse: list[str] = field(default_factory=list)
    better: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)  # the first flipped samples, for people

    @property
    def scale(self) -> float:
        """Points per unit: 100 for fractions, 1 for the 1-5 judge score."""
        return 1.0 if self.metric == "judge_score" else 100.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): sort ascending, multiply the i-th smallest by
    ``m - i``, carry the running maximum forward, cap at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def samples_needed(n: int, delta: float, ci95: tuple[float, float], max_drop: float) -> int | None:
    """Shared samples that would make the CI's lower end clear ``-max_drop`` at this point estimate, assuming the
    CI narrows as 1/sqrt(n); None when no n can (the point estimate itself is a drop larger than ``max_drop``)."""
    margin = delta + max_drop
    half = delta - ci95[0]
    if margin <= 0 or n <= 0:
        return None
    if half <= margin:
        return n
    return math.ceil(n * (half / margin) ** 2)


def decide(comparison: Comparison, *, alpha: float, max_drop: float) -> Comparison:
    """Set ``verdict``, ``samples_needed`` and ``why`` from the Holm-adjusted p-value and the CI."""
    c, significant = comparison, comparison.p_holm < alpha
    # --max-drop is a fraction of the metric's range: the 1-5 judge score's range is 4 wide.
    max_drop = max_drop * JUDGE_RANGE if c.metric == "judge_score" else max_drop
    pts = c.scale
    drop = f"{pts * -c.delta:.1f}" if c.metric != "judge_score" else f"{-c.delta:.2f}"
    if significant and c.delta < -max_drop:
        c.verdict = "regression"
        c.why = f"drop of {drop} is larger than --max-drop and significant after Holm (p={c.p_holm:.3g})"
    elif significant and c.delta > 0:
        c.verdict = "improvement"
        c.why = f"significant gain after Holm (p={c.p_holm:.3g})"
    elif c.ci95[0] < -max_drop:
        c.verdict = "inconclusive"
        c.samples_needed = samples_needed(c.n, c.delta, c.ci95, max_drop)
        need = (
            f"about {c.samples_needed:,} shared samples would rule out a drop larger than --max-drop"
            if c.samples_needed is not None
            else "the point estimate itself is a drop larger than --max-drop; more samples cannot clear it"
        )
        # A significant drop within --max-drop whose CI reaches past it is a real drop of unknown size.
        state = "a significant drop within --max-drop" if significant else "not significant"
        c.why = f"{state} (p={c.p_holm:.3g} after Holm), but the CI allows a larger drop: {need}"
    else:
        c.verdict = "no change"
        c.why = (
            "within --max-drop"
            if significant
            else f"not significant (p={c.p_holm:.3g} after Holm) and the CI rules out a drop larger than --max-drop"
        )
    return c


def finish(comparisons: list[Comparison], *, alpha: float, max_drop: float) -> list[Comparison]:
    """Holm-adjust the run's p-values together, then decide each comparison."""
    for c, adjusted in zip(comparisons, holm([c.p_value for c in comparisons]), strict=True):
        c.p_holm = adjusted
        decide(c, alpha=alpha, max_drop=max_drop)
    return comparisons


def exit_code(comparisons: Sequence[Comparison], *, fail_on_inconclusive: bool = False) -> int:
    """0 pass, 1 when any comparison regressed (or, with ``fail_on_inconclusive``, is inconclusive)."""
    bad = {"regression", "inconclusive"} if fail_on_inconclusive else {"regression"}
    return EXIT_REGRESSION if any(c.verdict in bad for c in comparisons) else EXIT_PASS


@dataclass
class GateReport:
    """Everything one gate run found: what was compared, each comparison, and the exit code."""

    baseline: str  # the paths as given
    candidate: str
    protocol: str
    alpha: float
    max_drop: float
    comparisons: list[Comparison]
    pairs: list[tuple[str, str]]  # (baseline model, candidate model)
    allowed_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # setting -> (baseline, candidate)
    notes: list[str] = field(default_factory=list)  # ids on one side only, settings unknown for JSONL input, ...
    fail_on_inconclusive: bool = False

    @property
    def exit_code(self) -> int:
        return exit_code(self.comparisons, fail_on_inconclusive=self.fail_on_inconclusive)

    @property
    def counts(self) -> dict[str, int]:
        """How many comparisons got each verdict."""
        out = {v: 0 for v in ("regression", "improvement", "inconclusive", "no change")}
        for c in self.comparisons:
            out[c.verdict] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document: settings, every comparison with its flipped ids, the exit code."""
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "protocol": self.protocol,
            "alpha": self.alpha,
            "max_drop": self.max_drop,
            "correction": "holm",
            "pairs": [list(p) for p in self.pairs],
            "allowed_changes": {k: list(v) for k, v in self.allowed_changes.items()},
            "notes": list(self.notes),
            "counts": self.counts,
            "exit_code": self.exit_code,
            "comparisons": [{**c.__dict__, "ci95": list(c.ci95)} for c in self.comparisons],
        }
