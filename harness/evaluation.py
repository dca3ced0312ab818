"""The one evaluation core behind ``medbench run`` and ``medbench score``: prediction rows in, numbers out.

For one task's rows: per-sample scores under every protocol (:func:`~medbench.scoring.aggregate.score_rows`), then
the judge fold (the run asks the judge; ``score`` reuses recorded verdicts), then task metrics with 95% CIs,
subgroup breakdowns and the judge agreement report — each computed once. Both commands call :func:`evaluate_rows`,
so they cannot diverge. :func:`metric_vectors` exposes the per-sample vector behind every headline metric, for
paired comparisons (the regression gate, the reports).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medbench.errors import UsageError
from medbench.schema import TaskKind
from medbench.scoring.aggregate import (
    CAPTION_PROTOCOL,
    Metrics,
    ScoringOptions,
    aggregate,
    caption_samples,
    protocol_samples,
    score_rows,
    subgroups_vqa,
)
from medbench.scoring.judged import agreement_report, equivalence_records
from medbench.scoring.protocols import get_protocol

#: ``fold(rows)``: adds judge verdicts to scored rows (and folds them into the scores) before aggregation.
JudgeFold = Callable[[list[dict[str, Any]]], Any]


@dataclass
class TaskEvaluation:
    """The numbers of one (model, task): ``metrics[protocol][metric] = {value, ci95, n}``, subgroup breakdowns
    (VQA), and the judge agreement report (VQA with a judge)."""

    metrics: dict[str, Metrics]
    subgroups: dict[str, Any] = field(default_factory=dict)
    judge_agreement: dict[str, Any] | None = None


def evaluate_rows(
    kind: TaskKind,
    rows: list[dict[str, Any]],
    options: ScoringOptions,
    *,
    judge_fold: JudgeFold | None = None,
    judged: bool = False,
) -> TaskEvaluation:
    """Score ``rows`` in place (``row["scores"]``), fold in the judge, and aggregate.

    ``judge_fold`` runs between scoring and aggregation; ``judged`` says a judge took part (a VQA agreement report
    is then made even when no open answer needed a verdict)."""
    bleu_stats = score_rows(kind, rows, options)
    if judge_fold is not None:
        judge_fold(rows)
    agreement = None
    if kind == "vqa" and (judged or equivalence_records(rows)):
        agreement = agreement_report(rows, options.resamples, options.seed)
    metrics = aggregate(kind, rows, options, bleu_stats=bleu_stats, agreement=agreement)
    subgroups = subgroups_vqa(rows, options) if kind == "vqa" and options.subgroup_fields else {}
    return TaskEvaluation(metrics, subgroups, agreement)


def metric_vectors(rows: Sequence[Mapping[str, Any]], protocol: str, metric: str) -> tuple[list[str], np.ndarray]:
    """``(ids, values)``: the samples a headline metric counts and their per-sample values, in row order; the
    metric's value is ``values.mean()``. For VQA the protocol's own closed rule decides which samples
    ``closed_accuracy`` / ``open_accuracy`` count; ``protocol="caption"`` gives the per-sample caption metrics and
    ``judge_score``. Rows must be scored (as ``medbench run`` writes them, or after :func:`evaluate_rows`)."""
    if protocol == CAPTION_PROTOCOL:
        samples = caption_samples(rows)
        if metric == "bleu":
            raise UsageError("bleu is a corpus metric (not a mean of per-sample values); use bleu4_sentence")
    else:
        unscored = next((r for r in rows if protocol not in (r.get("scores") or {})), None)
        if unscored is not None:
            raise UsageError(
                f"row {unscored.get('id')!r} has no {protocol!r} score: VQA protocols apply to scored VQA rows "
                "(captions use protocol 'caption')"
            )
        samples = protocol_samples(get_protocol(protocol), rows)
    if metric not in samples:
        raise UsageError(f"protocol {protocol!r} has no per-sample metric {metric!r}; it has {', '.join(samples)}")
    mask, values = samples[metric]
    return [str(r["id"]) for r, keep in zip(rows, mask, strict=True) if keep], values[mask]
