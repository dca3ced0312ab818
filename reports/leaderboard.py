"""Leaderboard tables: per task, one table per comparability key, every protocol's cells precomputed.

Results whose comparability keys differ never share a table: a later table names the settings that differ from the
first (the largest). The paper's reported rows come separately (:func:`paper_table`) and are never sorted in with
measured rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medbench.results import Comparability, RunResults, TaskResult

VQA_COLUMNS = ("closed_accuracy", "open_accuracy", "overall_accuracy")
CAPTION_COLUMNS = ("judge_score", "bleu", "token_recall", "rouge1", "bertscore_f1")
LABELS = {
    "closed_accuracy": "closed",
    "open_accuracy": "open",
    "overall_accuracy": "overall",
    "judge_score": "judge (1–5)",
    "bleu": "BLEU",
    "token_recall": "recall",
    "rouge1": "ROUGE-1",
    "bertscore_f1": "BERTScore",
}
TASK_TITLES = {"slake": "SLAKE", "pathvqa": "PathVQA", "vqa_rad": "VQA-RAD", "rocov2": "ROCOv2 captioning"}


@dataclass
class Row:
    """One measured leaderboard row: a model's result on a task, with every protocol's cells precomputed."""

    model: str
    adapter: str  # the LoRA adapter (its path or hub id), empty for a base model
    run: str
    n: int
    skipped: int
    judge_failures: int | None
    cells: dict[str, dict[str, dict[str, Any]]]  # protocol -> metric -> {text, ci, sort}
    model_class: str = ""  # the adapter class that ran it (HFModel, OpenAICompatModel, PriorBaseline, ...)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # protocol -> metric -> results.json entry
    page: str = ""  # the site-relative path of this row's sample browser (set by the site builder)


@dataclass
class Table:
    """The rows of one task that share a comparability key."""

    comparability: Comparability
    rows: list[Row] = field(default_factory=list)
    differs: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # setting -> (this table's, the first's)

    @property
    def key(self) -> str:
        return self.comparability.key


def _cell(entry: dict[str, Any] | None, *, scale: bool) -> dict[str, Any]:
    """Text, CI text and sort key of one metric entry (fractions shown in %, 1–5 scores as they are)."""
    if not entry or entry.get("value") is None:
        return {"text": "–", "ci": "", "sort": None}
    value, ci = float(entry["value"]), entry.get("ci95")
    if scale or entry.get("scale"):
        return {"text": f"{value:.2f}", "ci": f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "", "sort": value}
    return {"text": f"{100 * value:.1f}", "ci": f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}" if ci else "", "sort": value}


def _row(run: RunResults, label: str, result: TaskResult, kind: str) -> Row:
    columns = VQA_COLUMNS if kind == "vqa" else CAPTION_COLUMNS
    cells = {
        protocol: {m: _cell(metrics.get(m), scale=m == "judge_score") for m in columns}
        for protocol, metrics in result.metrics.items()
    }
    failures = None
    for metrics in result.metrics.values():
        entry = metrics.get("judge_failures")
        if entry and entry.get("value") is not None:
            failures = int(entry["value"])
    model_info = run.header.get("models", {}).get(result.model, {})
    return Row(
        model=result.model,
        adapter=str((model_info.get("adapter") or {}).get("id") or ""),
        model_class=str(model_info.get("class", "")),
        run=label,
        n=int(result.counts.get("n", 0)),
        skipped=int(result.counts.get("skipped", 0)),
        judge_failures=failures,
        cells=cells,
        entries=result.metrics,
    )


def leaderboard(runs: Sequence[tuple[str, RunResults]]) -> dict[str, list[Table]]:
    """``{task: [Table, ...]}``: measured rows grouped by comparability key, the largest group first."""
    by_task: dict[str, dict[str, Table]] = {}
    for label, run in runs:
        for per_task in run.results.values():
            for task, result in per_task.items():
                tables = by_task.setdefault(task, {})
                table = tables.setdefault(result.comparability.key, Table(result.comparability))
                table.rows.append(_row(run, label, result, run.tasks[task]["kind"]))
    out: dict[str, list[Table]] = {}
    for task, tables in by_task.items():
        ordered = sorted(tables.values(), key=lambda t: -len(t.rows))
        for table in ordered[1:]:
            table.differs = table.comparability.differences(ordered[0].comparability)
        out[task] = ordered
    return out


def paper_table(task: str) -> list[dict[str, Any]]:
    """The paper's reported rows for ``task`` (empty when the paper data is not installed)."""
    try:
        from medbench.reports.paper import paper_rows
    except ImportError:  # pragma: no cover - the data ships with the package
        return []
    columns = CAPTION_COLUMNS if task == "rocov2" else VQA_COLUMNS
    rows = []
    for row in paper_rows():
        values = row.values.get(task)
        if values and any(values.get(c) is not None for c in columns):
            entries = {c: ({"value": values.get(c)} if values.get(c) is not None else None) for c in columns}
            cells = {c: _cell(entries[c], scale=c == "judge_score") for c in columns}
            rows.append({"method": row.method, "group": row.group, "cells": cells})
    return rows
