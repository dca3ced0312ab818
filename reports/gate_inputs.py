"""What the gate compares: one side (baseline or candidate) read from a run directory, a published baseline, or
prediction JSONL files, and the pairing of the two sides' models.

A run directory (``results.json`` + ``predictions/``; ``leaderboard/baseline/`` is one) gives scored rows and each
result's comparability key. JSONL files (the ``medbench score`` row format) are scored here with the same
evaluation core; they carry no settings, so only their gold answers can be checked against the other side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medbench.errors import DataError, UsageError
from medbench.evaluation import evaluate_rows
from medbench.reports.paired import pair_splits
from medbench.results import Comparability, load_run


@dataclass
class SideResult:
    """One model's scored rows on one task, and the settings that produced them (None for JSONL input)."""

    model: str
    task: str
    kind: str
    rows: list[dict[str, Any]]
    comparability: Comparability | None


@dataclass
class Side:
    """Everything one side of the gate holds, keyed by (model, task)."""

    path: str
    results: dict[tuple[str, str], SideResult] = field(default_factory=dict)
    headline: str = "strict"
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(m for m, _ in self.results))


def load_side(path: Path, role: str) -> Side:
    """Read one side; a missing or unusable path is a :class:`UsageError` / :class:`DataError` (exit 2)."""
    if not path.exists():
        hint = " (promote one with `medbench gate --candidate RUN_DIR --update-baseline`)" if role == "baseline" else ""
        raise UsageError(f"--{role} {path}: not found{hint}")
    if path.is_dir():
        if (path / "results.json").is_file():
            return _from_run(path)
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise UsageError(f"--{role} {path}: neither a run directory (no results.json) nor a folder of .jsonl files")
        return _from_jsonl(path, files)
    return _from_jsonl(path, [path])


def _from_run(path: Path) -> Side:
    run = load_run(path)
    side = Side(str(path), headline=str(run.header.get("headline_protocol", "strict")))
    if run.header.get("upgraded_from") == 0:
        side.notes.append(f"{path}: written before comparability keys; settings cannot be checked")
    for model, per_task in run.results.items():
        for task, result in per_task.items():
            rows = [dict(r) for r in run.rows(model, task)]
            key = result.comparability if result.comparability.key else None
            side.results[(model, task)] = SideResult(model, task, run.tasks[task]["kind"], rows, key)
    return side


def _from_jsonl(path: Path, files: Sequence[Path]) -> Side:
    from medbench.scorefile import read_rows, task_kind
    from medbench.scoring.aggregate import ScoringOptions

    side = Side(str(path))
    side.notes.append(f"{path}: prediction files carry no settings; only their gold answers are checked")
    for task, rows in read_rows(list(files)).items():
        kind = task_kind(task, rows)
        evaluate_rows(kind, rows, ScoringOptions(resamples=1))  # per-sample scores; the CIs are not used
        models = {str(r.get("model") or "") for r in rows}
        for model in sorted(models):
            name = model or (files[0].parent.name if len(files) > 1 else files[0].stem)
            mine = [r for r in rows if str(r.get("model") or "") == model]
            side.results[(name, task)] = SideResult(name, task, kind, mine, None)
    return side


def pair_models(baseline: Side, candidate: Side, specs: Sequence[str]) -> list[tuple[str, str]]:
    """``[(baseline model, candidate model)]``: the ``--pair`` specs, else a single model on each side, else the
    models both sides name."""
    if specs:
        return [_parse(spec, baseline.models, candidate.models) for spec in specs]
    if len(baseline.models) == 1 and len(candidate.models) == 1:
        return [(baseline.models[0], candidate.models[0])]
    shared = [m for m in baseline.models if m in candidate.models]
    if not shared:
        raise UsageError(
            f"no model is on both sides (baseline: {', '.join(baseline.models)}; candidate: "
            f"{', '.join(candidate.models)}); name pairs with --pair BASELINE_MODEL:CANDIDATE_MODEL"
        )
    return [(m, m) for m in shared]


def _parse(spec: str, left: Sequence[str], right: Sequence[str]) -> tuple[str, str]:
    matches = pair_splits(spec, left, right)  # names may hold colons: the one split into a model of each side
    if len(matches) != 1:
        raise UsageError(
            f"--pair {spec!r}: expected BASELINE_MODEL:CANDIDATE_MODEL (baseline models: {', '.join(left)}; "
            f"candidate models: {', '.join(right)})"
        )
    return matches[0]


def check_comparable(
    pairs: Sequence[tuple[str, str]], baseline: Side, candidate: Side, allowed: Sequence[str]
) -> tuple[dict[str, tuple[Any, Any]], list[tuple[str, str, str]]]:
    """``(allowed changes, tasks)``: every (baseline model, candidate model, task) both sides hold, after checking
    that their settings agree. A differing setting not in ``allowed`` (or gold answers that differ on a shared id)
    is a :class:`UsageError` naming each one; allowed ones are returned to be shown."""
    changed: dict[str, tuple[Any, Any]] = {}
    refused: list[str] = []
    tasks: list[tuple[str, str, str]] = []
    for a, b in pairs:
        for (model, task), base in baseline.results.items():
            cand = candidate.results.get((b, task))
            if model != a or cand is None:
                continue
            tasks.append((a, b, task))
            if base.comparability is not None and cand.comparability is not None:
                for name, (x, y) in cand.comparability.differences(base.comparability).items():
                    if name in allowed:
                        changed[f"{task}.{name}"] = (y, x)
                    else:
                        refused.append(f"{task} {name}: baseline {y!r}, candidate {x!r}")
            gold = {str(r["id"]): r.get("reference") for r in base.rows}
            wrong = [i for r in cand.rows if (i := str(r["id"])) in gold and gold[i] != r.get("reference")]
            if wrong:
                refused.append(f"{task}: {len(wrong)} shared sample ids have other gold answers (first: {wrong[0]})")
    if refused:
        raise UsageError(
            "baseline and candidate are not comparable:\n  "
            + "\n  ".join(refused)
            + "\n(allow a deliberate change with --allow-change SETTING, e.g. --allow-change closed_rule)"
        )
    if not tasks:
        raise DataError("baseline and candidate share no (model, task): nothing to compare")
    return changed, tasks
