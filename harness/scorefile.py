"""``medbench score``: score prediction rows from JSONL files with no model.

Required keys per row: ``id``, ``task``, ``answer_type``, ``reference``, ``prediction`` (rows written by
``medbench run`` qualify). Scores are always recomputed from ``prediction``; stored scores are ignored. Judge
verdicts recorded by ``medbench run --judge`` are reused (``judge_score``, judged ``clinical``) while each still
matches its row's prompt; a stale one (edited prediction, changed template) is dropped and counted in
``judge_records_ignored``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medbench.errors import DataError
from medbench.evaluation import evaluate_rows
from medbench.schema import TaskKind
from medbench.scoring.aggregate import ScoringOptions, headline_protocol
from medbench.scoring.protocols import get_protocol
from medbench.scoring.vqa import coerce_text

REQUIRED = ("id", "task", "answer_type", "reference", "prediction")


def read_rows(paths: Sequence[Path]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by task. A malformed line, a missing key or a duplicate (task, id) is an error naming the
    file and line; non-string predictions are coerced to text."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot be read ({exc})") from exc
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg}); each line must be one JSON object") from exc
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, found {type(row).__name__}")
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise DataError(
                    f"{where}: row lacks required key(s) {', '.join(missing)} (required: {', '.join(REQUIRED)})"
                )
            if row["answer_type"] not in ("closed", "open", None):
                raise DataError(f'{where}: answer_type must be "closed", "open" or null, got {row["answer_type"]!r}')
            key = (str(row["task"]), str(row["id"]))
            if key in seen:
                raise DataError(f"{where}: duplicate id {key[1]!r} for task {key[0]!r} (first seen at {seen[key]})")
            seen[key] = where
            row["prediction"] = coerce_text(row["prediction"])
            row["reference"] = coerce_text(row["reference"])
            by_task.setdefault(key[0], []).append(row)
    if not by_task:
        raise DataError(f"no prediction rows found in {', '.join(str(p) for p in paths)}")
    return by_task


def task_kind(task: str, rows: Sequence[dict[str, Any]]) -> TaskKind:
    """A registered task's kind; for unknown task names, captioning iff no row has a closed/open label."""
    from medbench.registry import task_registry

    registered = task_registry().get(task)
    if registered is not None:
        return registered.kind
    return "vqa" if any(r["answer_type"] in ("closed", "open") for r in rows) else "caption"


def score_files(paths: Sequence[Path], protocol: str, options: ScoringOptions) -> dict[str, Any]:
    """``{"protocol": P, "tasks": {task: {metric: {"value", "ci95", "n"}}}, "metrics": {task: {protocol: {metric:
    ...}}}}``: the headline protocol's metrics per task, and every protocol's in the shape ``results.json`` holds
    for one (model, task)."""
    get_protocol(protocol)
    out: dict[str, Any] = {"protocol": protocol, "tasks": {}}
    for task, rows in read_rows(paths).items():
        kind = task_kind(task, rows)
        stale = 0

        def reuse(scored: list[dict[str, Any]]) -> None:
            # Verdicts recorded by a judged run, while each still matches its row's prompt.
            nonlocal stale
            from medbench.judges.runs import reuse_recorded

            stale = reuse_recorded(scored)

        judged = any("judge" in r for r in rows)
        evaluation = evaluate_rows(kind, rows, options, judge_fold=reuse if judged else None)
        if stale:
            out.setdefault("judge_records_ignored", {})[task] = stale
        out["tasks"][task] = evaluation.metrics[headline_protocol(kind, protocol)]
        # The same per-task shape as results.json's metrics[model][task]: every protocol, not only the headline.
        out.setdefault("metrics", {})[task] = evaluation.metrics
        if evaluation.subgroups:
            out.setdefault("subgroups", {})[task] = evaluation.subgroups
    return out
