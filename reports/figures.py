"""The report's charts, rendered in Python as inline SVG (:mod:`medbench.reports.charts`) from leaderboard tables.

* the paper's Figure 3: closed / open / overall accuracy per dataset, one bar per model, 95% CI whiskers;
* subgroup charts: SLAKE modality / location / content type, VQA-RAD question type / organ (overall accuracy per
  subgroup, one bar per model);
* caption metrics per model (percent metrics in one chart, the 1–5 judge score in its own).

VQA charts are drawn once per protocol (the page shows the selected protocol's, like every other number); each
chart is a :class:`Figure` whose ``protocol`` is None when it does not depend on the protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medbench.reports.charts import Interval, grouped_bars
from medbench.reports.leaderboard import CAPTION_COLUMNS, LABELS, TASK_TITLES, VQA_COLUMNS, Table
from medbench.results import RunResults

SUBGROUP_TITLES = {
    "modality": "modality",
    "location": "location",
    "content_type": "content type",
    "question_type": "question type",
    "image_organ": "organ",
}
#: A subgroup chart shows at most this many subgroups (the largest); the rest are named in the caption.
_MAX_GROUPS = 14


@dataclass(frozen=True)
class Figure:
    """One chart: its SVG, a short id for links and tests, and the protocol it shows (None: any)."""

    id: str
    title: str
    svg: str
    protocol: str | None = None
    note: str = ""


def _interval(entry: Mapping[str, Any] | None) -> Interval | None:
    if not entry or entry.get("value") is None:
        return None
    ci = entry.get("ci95")
    return float(entry["value"]), (ci[0] if ci else None), (ci[1] if ci else None)


def figure3(tables: Mapping[str, list[Table]], kinds: Mapping[str, str], protocols: Sequence[str]) -> list[Figure]:
    """Closed / open / overall accuracy per VQA dataset for every model of each task's first table."""
    tasks = [t for t in tables if kinds.get(t) == "vqa"]
    if not tasks:
        return []
    groups = [f"{TASK_TITLES.get(t, t)} {LABELS[m]}" for t in tasks for m in VQA_COLUMNS]
    series = list(dict.fromkeys(r.model for t in tasks for r in tables[t][0].rows))
    out = []
    for protocol in protocols:
        values: dict[tuple[str, str], Interval | None] = {}
        for t in tasks:
            for row in tables[t][0].rows:
                for m in VQA_COLUMNS:
                    values[(f"{TASK_TITLES.get(t, t)} {LABELS[m]}", row.model)] = _interval(
                        row.entries.get(protocol, {}).get(m)
                    )
        title = f"VQA accuracy by dataset ({protocol}), 95% CI"
        svg = grouped_bars(groups, series, values, title=title, y_label="accuracy")
        out.append(Figure("figure3", title, svg, protocol))
    return out


def subgroup_figures(
    runs: Sequence[tuple[str, RunResults]], tables: Mapping[str, list[Table]], protocols: Sequence[str]
) -> list[Figure]:
    """Overall accuracy per subgroup (SLAKE modality / location / content type, VQA-RAD question type / organ) for
    the models of each task's first table."""
    out = []
    for task, group in tables.items():
        members = {(r.run, r.model) for r in group[0].rows}
        found: dict[str, dict[str, dict[str, Any]]] = {}  # field -> model -> groups
        for label, run in runs:
            for model, per_task in run.results.items():
                result = per_task.get(task)
                if result is None or (label, model) not in members or not result.subgroups:
                    continue
                for name, breakdown in result.subgroups.items():
                    found.setdefault(name, {})[model] = breakdown.get("groups") or {}
        for name, per_model in found.items():
            sizes: dict[str, int] = {}
            for groups in per_model.values():
                for value, cell in groups.items():
                    sizes[value] = max(sizes.get(value, 0), int(cell.get("n", 0)))
            labels = sorted(sizes, key=lambda v: (-sizes[v], v))
            shown, hidden = labels[:_MAX_GROUPS], labels[_MAX_GROUPS:]
            note = f"{len(hidden)} smaller subgroups not drawn: {', '.join(hidden)}" if hidden else ""
            series = list(per_model)
            for protocol in protocols:
                values: dict[tuple[str, str], Interval | None] = {}
                for model, groups in per_model.items():
                    for value in shown:
                        cell = groups.get(value) or {}
                        values[(f"{value} (n={sizes[value]})", model)] = _interval(
                            (cell.get(protocol) or {}).get("overall_accuracy")
                        )
                title = (
                    f"{TASK_TITLES.get(task, task)}: overall accuracy by {SUBGROUP_TITLES.get(name, name)} "
                    f"({protocol}), 95% CI"
                )
                names = [f"{v} (n={sizes[v]})" for v in shown]
                svg = grouped_bars(names, series, values, title=title, y_label="accuracy")
                out.append(Figure(f"subgroup-{task}-{name}", title, svg, protocol, note))
    return out


def caption_figures(tables: Mapping[str, list[Table]], kinds: Mapping[str, str]) -> list[Figure]:
    """Caption metrics per model: the percent metrics together, the 1–5 judge score apart."""
    out = []
    for task, group in tables.items():
        if kinds.get(task) != "caption":
            continue
        rows = group[0].rows
        series = list(dict.fromkeys(r.model for r in rows))
        percent = [m for m in CAPTION_COLUMNS if m != "judge_score"]
        values: dict[tuple[str, str], Interval | None] = {}
        judge: dict[tuple[str, str], Interval | None] = {}
        for row in rows:
            metrics = row.entries.get("caption", {})
            for m in percent:
                values[(LABELS[m], row.model)] = _interval(metrics.get(m))
            judge[("judge (1–5)", row.model)] = _interval(metrics.get("judge_score"))
        title = f"{TASK_TITLES.get(task, task)}: caption metrics, 95% CI"
        svg = grouped_bars([LABELS[m] for m in percent], series, values, title=title, y_label="score")
        out.append(Figure(f"captions-{task}", title, svg))
        if any(v is not None for v in judge.values()):
            title = f"{TASK_TITLES.get(task, task)}: judge score (1–5), 95% CI"
            svg = grouped_bars(["judge (1–5)"], series, judge, title=title, y_label="score", y_max=5, percent=False)
            out.append(Figure(f"judge-{task}", title, svg))
    return out
