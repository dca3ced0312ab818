"""``medbench report``: a self-contained static site from run directories (Jinja, autoescape on, no CDN, no network).

It reads runs only through :func:`medbench.results.load_run` — never models, judges or the runner — and writes::

    index.html                      leaderboards, the paper's rows, charts, paired comparisons, protocol
                                    disagreement, provenance
    samples/<model>/<task>.html     the sample browser of one model on one task
    samples/<A>~vs~<B>/<task>.html  two models side by side on the samples both answered, flips marked
    thumbs/<sha256>-128.jpg         thumbnails of the evaluated images (named by content, reused by later builds)

Every page opens from ``file://`` and from any static host. Every protocol's numbers are precomputed into the
index, so the protocol switch changes them (and the charts, and the paired comparisons) without reloading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medbench.errors import DataError, UsageError
from medbench.reports.figures import Figure, caption_figures, figure3, subgroup_figures
from medbench.reports.leaderboard import (
    CAPTION_COLUMNS,
    LABELS,
    TASK_TITLES,
    VQA_COLUMNS,
    Table,
    leaderboard,
    paper_table,
)
from medbench.reports.pages import script_json, write_page, write_samples_page
from medbench.reports.paired import PairComparison, compare_rows, default_pairs, parse_pair
from medbench.reports.samples import Disagreement, compact, disagreement, joined
from medbench.reports.thumbs import make_thumbnails
from medbench.results import RunResults, TaskResult, load_run, safe_name

__all__ = ["build_report", "leaderboard"]


@dataclass
class _Entry:
    """One (run, model) of the report and where its pages go."""

    index: int
    label: str
    run: RunResults
    model: str
    slug: str


@dataclass
class _TaskView:
    """Everything the index shows for one task besides its leaderboard tables."""

    pairs: list[dict[str, Any]] = field(default_factory=list)
    disagreements: list[tuple[str, str, Disagreement]] = field(default_factory=list)  # (model, page, summary)
    missing: list[str] = field(default_factory=list)  # why a model's sample browser is absent


def _entries(runs: Sequence[tuple[str, RunResults]]) -> list[_Entry]:
    """A page folder per (run, model): the model's safe name, with ``~2``, ``~3`` ... for a model in several runs."""
    out, used = [], set()
    for index, (label, run) in enumerate(runs):
        for model in run.models:
            slug, k = safe_name(model), 1
            while slug in used:
                k += 1
                slug = f"{safe_name(model)}~{k}"
            used.add(slug)
            out.append(_Entry(index, label, run, model, slug))
    return out


def _pairs(entries: Sequence[_Entry], compare: Sequence[str]) -> list[tuple[str, str]]:
    models = list(dict.fromkeys(e.model for e in entries))
    if compare:
        return list(dict.fromkeys(parse_pair(spec, models) for spec in compare))
    return default_pairs(models)


def _read_rows(entry: _Entry, task: str) -> list[dict[str, Any]] | str:
    """The prediction rows of one (run, model, task), or why they cannot be read (the page then says so)."""
    try:
        return [dict(r) for r in entry.run.rows(entry.model, task)]
    except DataError as exc:
        return str(exc)


def _task_pages(
    out: Path,
    task: str,
    kind: str,
    members: Sequence[tuple[_Entry, TaskResult]],
    pairs: Sequence[tuple[str, str]],
    *,
    protocols: Sequence[str],
    headline: str,
    demo: bool,
) -> tuple[_TaskView, dict[tuple[int, str], str]]:
    """Write the sample browser pages of one task; returns what the index shows and each entry's page path."""
    view, pages = _TaskView(), {}
    title = TASK_TITLES.get(task, task)
    rows: dict[int, list[dict[str, Any]]] = {}
    for i, (entry, _) in enumerate(members):
        got = _read_rows(entry, task)
        if isinstance(got, str):
            view.missing.append(f"{entry.model}: no sample browser ({got})")
        else:
            rows[i] = got
    images: list[tuple[dict[str, Any], Path | None]] = []
    for i, got in rows.items():
        recorded = (members[i][0].run.tasks.get(task, {}).get("data") or {}).get("root")
        root = Path(recorded) if recorded else None
        images.extend((r["image"], root) for r in got if isinstance(r.get("image"), dict))
    thumbs = make_thumbnails(images, out)
    records: dict[int, list[dict[str, Any]]] = {}
    for i, got in rows.items():
        entry, result = members[i]
        fields = list(result.subgroups or {})
        records[i] = [compact(r, kind, protocols, fields, thumbs) for r in got]
        page = f"samples/{entry.slug}/{task}.html"
        pages[(entry.index, entry.model)] = page
        write_samples_page(
            out,
            page,
            records=records[i],
            mode="single",
            kind=kind,
            heading=f"{entry.model} on {title}",
            subtitle=f"{len(records[i])} samples from run {entry.label}",
            protocols=protocols,
            headline=headline,
            demo=demo,
        )
        if kind == "vqa":
            view.disagreements.append((entry.model, page, disagreement(records[i], protocols)))
    for a, b in pairs:
        side_a = [i for i, (e, _) in enumerate(members) if e.model == a and i in rows]
        side_b = [i for i, (e, _) in enumerate(members) if e.model == b and i in rows]
        if not side_a or not side_b:
            continue
        view.pairs.append(_pair(out, task, kind, members, rows, records, side_a, side_b, protocols, headline, demo))
    return view, pages


def _pair(
    out: Path,
    task: str,
    kind: str,
    members: Sequence[tuple[_Entry, TaskResult]],
    rows: dict[int, list[dict[str, Any]]],
    records: dict[int, list[dict[str, Any]]],
    side_a: Sequence[int],
    side_b: Sequence[int],
    protocols: Sequence[str],
    headline: str,
    demo: bool,
) -> dict[str, Any]:
    """Compare the first comparable (A, B) results of a task and write their side-by-side page."""
    match = next(
        ((i, j) for i in side_a for j in side_b if members[i][1].comparability.key == members[j][1].comparability.key),
        None,
    )
    ia, ib = match if match else (side_a[0], side_b[0])
    (ea, ra), (eb, rb) = members[ia], members[ib]
    if match is None:
        result = PairComparison(task, ea.model, eb.model, comparable=False)
        result.differs = rb.comparability.differences(ra.comparability)
        return {"comparison": result, "page": None}
    bootstrap = ea.run.header.get("scoring", {}).get("bootstrap", {})
    result = compare_rows(
        task,
        kind,
        ea.model,
        eb.model,
        rows[ia],
        rows[ib],
        protocols,
        resamples=int(bootstrap.get("resamples", 1000)),
        seed=int(bootstrap.get("seed", 0)),
    )
    shared, only_a, only_b = joined(records[ia], records[ib])
    page = f"samples/{ea.slug}~vs~{eb.slug}/{task}.html"
    notes = (
        [f"{only_a} samples only {ea.model} has and {only_b} only {eb.model} has are left out"]
        if only_a or only_b
        else []
    )
    write_samples_page(
        out,
        page,
        records=shared,
        mode="pair",
        kind=kind,
        heading=f"{ea.model} vs {eb.model} on {TASK_TITLES.get(task, task)}",
        subtitle=f"{len(shared)} samples both answered; rows where {eb.model} is better are green, worse red",
        protocols=protocols,
        headline=headline,
        demo=demo,
        a_label=ea.model,
        b_label=eb.model,
        notes=notes,
    )
    return {"comparison": result, "page": page}


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


def build_report(
    run_dirs: Sequence[Path],
    out: Path,
    *,
    compare: Sequence[str] = (),
    title: str = "medbench report",
    published: bool = False,
) -> Path:
    """Write the site for the runs in ``run_dirs`` into ``out``; returns the path of ``out/index.html``.

    ``compare`` names model pairs ``"A:B"`` for paired comparisons (default: every ``X`` vs ``X+lora:*`` pair, or
    every pair of up to four models when there is none)."""
    if not run_dirs:
        raise UsageError("medbench report: name at least one run directory")
    unique = list(dict.fromkeys(Path(d) for d in run_dirs))
    # A published board names runs by folder (their content id): no local path of whoever published leaks into it.
    runs = [(d.name if published else str(d), load_run(d)) for d in unique]
    tables = leaderboard(runs)
    kinds = {task: run.tasks[task]["kind"] for _, run in runs for task in run.tasks}
    protocols = list(runs[0][1].header.get("scoring", {}).get("protocols", {}))
    headline = runs[0][1].header.get("headline_protocol", "strict")
    demo = any(run.header.get("data") == "demo" for _, run in runs)
    entries = _entries(runs)
    pairs = _pairs(entries, compare)
    views: dict[str, _TaskView] = {}
    pages: dict[tuple[int, str], dict[str, str]] = {}
    for task in tables:
        members = [(e, r) for e in entries if (r := e.run.get(e.model, task)) is not None]
        view, task_pages = _task_pages(
            out, task, kinds[task], members, pairs, protocols=protocols, headline=headline, demo=demo
        )
        views[task] = view
        for key, page in task_pages.items():
            pages.setdefault(key, {})[task] = page
    labels = {label: i for i, (label, _) in enumerate(runs)}
    for task, group in tables.items():
        for table in group:
            for row in table.rows:
                row.page = pages.get((labels[row.run], row.model), {}).get(task, "")
    figures: list[Figure] = [
        *figure3(tables, kinds, protocols),
        *subgroup_figures(runs, tables, protocols),
        *caption_figures(tables, kinds),
    ]
    write_page(
        out / "index.html",
        "index.html.jinja",
        title=title,
        demo=demo,
        published=published,
        tasks=[(task, TASK_TITLES.get(task, task), kinds[task], tables[task], paper_table(task)) for task in tables],
        views=views,
        vqa_columns=VQA_COLUMNS,
        caption_columns=CAPTION_COLUMNS,
        labels=LABELS,
        protocols=protocols,
        headline=headline,
        figures=figures,
        provenance=[_provenance(label, run) for label, run in runs],
        citation=_citation(),
        cells_json=script_json(_cells(tables)),
    )
    return out / "index.html"


def _cells(tables: dict[str, list[Table]]) -> dict[str, Any]:
    """Every protocol's cell texts per table row, for the protocol switch."""
    return {
        f"{task}-{i}-{j}": row.cells
        for task, group in tables.items()
        for i, table in enumerate(group)
        for j, row in enumerate(table.rows)
    }


def _citation() -> dict[str, Any]:
    from medbench.reports.paper import citation

    return citation()
