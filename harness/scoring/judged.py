"""Judge verdicts as scores: how a judged run's per-sample judge records become metrics. Pure functions over
prediction rows; no judge is called here (that is :mod:`medbench.judges.runs`).

Records (``row["judge"]``, written by the run):

* captions: ``{"kind": "caption_score", "score": 1..5 | None, "failure": reason | None, ...}``;
* VQA open questions: ``{"kind": "equivalence", "equivalent": bool | None, "reason": ..., "failure": ..., ...}``.

:func:`apply_judge_records` folds them into ``row["scores"]``:

* ``judge_score``: the caption score, or None for a failure (left out of the mean, counted as a failure);
* ``clinical``: with a judge configured, an open answer counts as correct when ``strict`` or the synonym table
  accepts it, else when the judge calls it equivalent; a judge failure on such an answer makes the sample's
  ``clinical`` score None — left out of the means and counted, never a zero. ``clinical/table`` keeps the
  table-only score and ``clinical/judge`` the verdict (1/0/None) for every judged row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medbench.stats import bootstrap_mean_ci, metric_entry

CAPTION_KIND = "caption_score"
EQUIVALENCE_KIND = "equivalence"
CLINICAL = "clinical"


def apply_judge_records(rows: Sequence[dict[str, Any]]) -> None:
    """Fold each row's ``judge`` record (if any) into its ``scores``; see the module docstring."""
    for row in rows:
        record = row.get("judge")
        if not isinstance(record, Mapping):
            continue
        scores = row["scores"]
        if record.get("kind") == CAPTION_KIND:
            scores["judge_score"] = record.get("score")
        elif record.get("kind") == EQUIVALENCE_KIND:
            table = float(scores.get(f"{CLINICAL}/table", scores[CLINICAL]))
            verdict = record.get("equivalent")
            judged = None if verdict is None else float(bool(verdict))
            scores[f"{CLINICAL}/table"] = table
            scores[f"{CLINICAL}/judge"] = judged
            scores[CLINICAL] = 1.0 if table == 1.0 else judged


def _failures(records: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    asked = len(records)
    failed = sum(1 for r in records if r.get("failure"))
    return failed, asked


def failure_entries(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``judge_failures`` (a count) and ``judge_failure_rate`` (of the judged samples), in metric-entry shape."""
    failed, asked = _failures(records)
    return {
        "judge_failures": metric_entry(failed, None, asked),
        "judge_failure_rate": metric_entry(failed / asked if asked else 0.0, None, asked),
    }


def caption_judge_score(row: Mapping[str, Any]) -> float | None:
    """The row's valid Appendix D judge score (1-5), or None (not judged, or the judgement failed)."""
    record = row.get("judge")
    if not isinstance(record, Mapping) or record.get("kind") != CAPTION_KIND or record.get("score") is None:
        return None
    return float(record["score"])


def caption_judge_metrics(rows: Sequence[Mapping[str, Any]], resamples: int, seed: int) -> dict[str, dict[str, Any]]:
    """``judge_score`` (mean 1–5 score over valid judgements, percentile-bootstrap CI) plus the failure entries;
    empty when no row was judged."""
    records = [r["judge"] for r in _judged_rows(rows, CAPTION_KIND)]
    if not records:
        return {}
    scores = np.array([float(r["score"]) for r in records if r.get("score") is not None], dtype=np.float64)
    ci = bootstrap_mean_ci(scores, resamples=resamples, seed=seed) if scores.size else None
    entry = metric_entry(float(scores.mean()) if scores.size else None, ci, int(scores.size)) | {"scale": "1-5"}
    return {"judge_score": entry, **failure_entries(records)}


def _judged_rows(rows: Sequence[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    """The rows carrying a judge record of ``kind``."""
    return [r for r in rows if isinstance(r.get("judge"), Mapping) and r["judge"].get("kind") == kind]


def equivalence_records(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r["judge"] for r in _judged_rows(rows, EQUIVALENCE_KIND)]


def _kappa(table: np.ndarray) -> float | None:
    """Cohen's kappa of a 2x2 agreement table (rows: strict 1/0, columns: judge 1/0); None when undefined."""
    n = table.sum()
    if n == 0:
        return None
    observed = np.trace(table) / n
    expected = float((table.sum(axis=1) * table.sum(axis=0)).sum()) / n**2
    if expected == 1.0:
        return None
    return float((observed - expected) / (1.0 - expected))


def agreement_report(
    rows: Sequence[Mapping[str, Any]], resamples: int, seed: int, strict: str = "strict"
) -> dict[str, Any]:
    """What the equivalence judge changes, on the open questions it judged.

    ``table`` counts (strict correct?, judge says equivalent?) over the judged samples with a verdict:
    ``strict1_judge1`` agree, ``strict0_judge1`` are answers the judge accepts and ``strict`` rejects (what the
    judge adds), ``strict1_judge0`` are exact matches the judge rejects (a floor on its error rate — ``clinical``
    keeps those correct). ``agreement_with_strict`` (with CI) and Cohen's ``kappa`` summarise it.
    ``clinical_added_by_table`` / ``clinical_added_by_judge`` count the open answers ``clinical`` accepts and
    ``strict`` rejects, by the synonym table and by the judge.
    """
    judged = _judged_rows(rows, EQUIVALENCE_KIND)
    with_verdict = [r for r in judged if r["judge"].get("equivalent") is not None]
    strict_ok = np.array([float(r["scores"][strict]) == 1.0 for r in with_verdict], dtype=bool)
    judge_ok = np.array([bool(r["judge"]["equivalent"]) for r in with_verdict], dtype=bool)
    table = np.array(
        [
            [np.sum(strict_ok & judge_ok), np.sum(strict_ok & ~judge_ok)],
            [np.sum(~strict_ok & judge_ok), np.sum(~strict_ok & ~judge_ok)],
        ]
    )
    agree = (strict_ok == judge_ok).astype(np.float64)
    ci = bootstrap_mean_ci(agree, resamples=resamples, seed=seed) if agree.size else None
    open_rows = [r for r in rows if r.get("answer_type") != "closed"]
    by_table = sum(
        1 for r in open_rows if r["scores"].get(f"{CLINICAL}/table", 0.0) == 1.0 and r["scores"][strict] == 0.0
    )
    by_judge = sum(
        1 for r in judged if r["scores"].get(f"{CLINICAL}/table") == 0.0 and r["scores"].get(f"{CLINICAL}/judge") == 1.0
    )
    failed, asked = _failures([r["judge"] for r in judged])
    return {
        "open": len(open_rows),
        "judged": asked,
        "not_judged": len(open_rows) - asked,
        "failures": failed,
        "table": {
            "strict1_judge1": int(table[0, 0]),
            "strict1_judge0": int(table[0, 1]),
            "strict0_judge1": int(table[1, 0]),
            "strict0_judge0": int(table[1, 1]),
        },
        "agreement_with_strict": metric_entry(float(agree.mean()) if agree.size else None, ci, int(agree.size)),
        "kappa": _kappa(table),
        "clinical_added_by_table": by_table,
        "clinical_added_by_judge": by_judge,
    }
