"""``medbench report``: a self-contained static page from run directories (Jinja, autoescape on, no CDN, no network).

It reads runs only through :func:`medbench.results.load_run` — never models, judges or the runner — and writes
``index.html`` (one file: inline CSS, inline SVG charts, a small dependency-free script). Per task, one leaderboard
table per comparability key: results whose keys differ never share a table, and a later table names the settings
that differ from the first. Every protocol's numbers are precomputed into the page, so the protocol switch changes
them without reloading; the paper's reported numbers sit in their own, visibly distinct tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medbench.errors import UsageError
from medbench.results import Comparability, RunResults, TaskResult, load_run

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
    adapter: str
    run: str
    n: int
    skipped: int
    judge_failures: int | None
    cells: dict[str, dict[str, dict[str, Any]]]  # protocol -> metric -> {text, ci, sort}


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
        adapter=str(model_info.get("class", "")),
        run=label,
        n=int(result.counts.get("n", 0)),
        skipped=int(result.counts.get("skipped", 0)),
        judge_failures=failures,
        cells=cells,
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


def _paper(task: str) -> list[dict[str, Any]]:
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


def _charts(tables: dict[str, list[Table]], kinds: dict[str, str], protocol: str) -> list[str]:
    """Inline SVG charts: VQA closed / open / overall per dataset and model (the paper's Figure 3), and captions."""
    try:
        from medbench.reports.charts import grouped_bars
    except ImportError:  # pragma: no cover
        return []
    charts = []
    vqa_tasks = [t for t in tables if kinds[t] == "vqa"]
    if vqa_tasks:
        groups = [f"{TASK_TITLES.get(t, t)} {LABELS[m]}" for t in vqa_tasks for m in VQA_COLUMNS]
        series = sorted({r.model for t in vqa_tasks for r in tables[t][0].rows})
        values: dict[tuple[str, str], tuple[float, float, float] | None] = {}
        for t in vqa_tasks:
            for row in tables[t][0].rows:
                for m in VQA_COLUMNS:
                    entry = row.cells.get(protocol, {}).get(m, {})
                    values[(f"{TASK_TITLES.get(t, t)} {LABELS[m]}", row.model)] = _triple(entry)
        charts.append(grouped_bars(groups, series, values, title=f"VQA accuracy ({protocol}), 95% CI", y_label="%"))
    return charts


def _triple(cell: dict[str, Any]) -> tuple[float, float, float] | None:
    if cell.get("sort") is None:
        return None
    value = float(cell["sort"])
    if cell.get("ci"):
        lo, hi = (float(x) / 100 for x in cell["ci"].split("–"))
        return value, lo, hi
    return value, value, value


def _provenance(label: str, run: RunResults) -> dict[str, Any]:
    record = run.record()
    tasks = {
        task: {
            "source": info.get("data", {}).get("source"),
            "revision": info.get("data", {}).get("revision"),
            "layout": info.get("data", {}).get("layout"),
            "checksum": info.get("data", {}).get("checksum"),
            "prompt": (info.get("prompt") or {}).get("sha256"),
            "closed_rule": (info.get("closed_rule") or {}).get("rule"),
            "n": info.get("n_samples"),
            "skipped": (info.get("skipped") or {}).get("count"),
        }
        for task, info in run.tasks.items()
    }
    judge = run.header.get("judge") or {}
    return {
        "label": label,
        "medbench": run.header.get("medbench_version"),
        "git": (record.get("git") or {}).get("commit"),
        "started": record.get("started"),
        "status": record.get("status"),
        "data": run.header.get("data"),
        "versions": record.get("versions") or {},
        "tasks": tasks,
        "protocols": run.header.get("scoring", {}).get("protocols", {}),
        "judge": {"model": judge.get("model"), "server_models": judge.get("server_models")} if judge else None,
    }


def build_report(run_dirs: Sequence[Path], out: Path) -> Path:
    """Write ``out/index.html`` for the runs in ``run_dirs``; returns its path."""
    if not run_dirs:
        raise UsageError("medbench report: name at least one run directory")
    runs = [(str(d), load_run(d)) for d in run_dirs]
    tables = leaderboard(runs)
    kinds = {task: run.tasks[task]["kind"] for _, run in runs for task in run.tasks}
    protocols = list(runs[0][1].header.get("scoring", {}).get("protocols", {}))
    headline = runs[0][1].header.get("headline_protocol", "strict")
    page = _template().render(
        title="medbench report",
        demo=any(run.header.get("data") == "demo" for _, run in runs),
        tasks=[(task, TASK_TITLES.get(task, task), kinds[task], tables[task], _paper(task)) for task in tables],
        vqa_columns=VQA_COLUMNS,
        caption_columns=CAPTION_COLUMNS,
        labels=LABELS,
        protocols=protocols,
        headline=headline,
        charts=_charts(tables, kinds, headline),
        provenance=[_provenance(label, run) for label, run in runs],
        citation=_citation(),
        cells_json=_script_json(_cells(tables)),
    )
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _cells(tables: dict[str, list[Table]]) -> dict[str, Any]:
    """Every protocol's cell texts per table row, for the protocol switch."""
    return {
        f"{task}-{i}-{j}": row.cells
        for task, group in tables.items()
        for i, table in enumerate(group)
        for j, row in enumerate(table.rows)
    }


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element: no '</', no '<!--', no U+2028/2029 can end or confuse it."""
    text = json.dumps(data, ensure_ascii=True, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _citation() -> dict[str, Any]:
    try:
        from medbench.reports.paper import citation
    except ImportError:  # pragma: no cover
        return {}
    return citation()


def _template() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("medbench.reports", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("index.html.jinja")
