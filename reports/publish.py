"""``medbench publish``: the published leaderboard folder, updated incrementally and idempotently.

``publish(run_dirs, dest)`` adds the results of one or more run directories to a leaderboard folder (by default
``leaderboard/``) that holds everything a static host serves and everything a later tool (``medbench gate``) needs::

    dest/
      leaderboard.json          the published numbers: one entry per (model, task, comparability key)
      index.html                the pages, rebuilt from dest/runs/* by medbench.reports.site.build_report
      samples/                  per model x task sample browsers (rebuilt cleanly on every publish)
      thumbs/                   image thumbnails (never deleted: images may no longer be reachable)
      runs/<run_id>/            a normalised, immutable copy of each run that backs an entry
        results.json            RunResults.to_json() of the run
        run.json                the run record (RunResults.record())
        predictions/<model>/<task>.jsonl
        SHA256SUMS              sha256 of every file above (``sha256sum -c SHA256SUMS`` checks the copy)

**run_id** is the first 16 hex digits of the sha256 of ``SHA256SUMS``: a hash of the normalised copy's content
(the bytes of results.json, run.json and every prediction file), never of folder names, sizes or mtimes. The same
run published twice, or from two places, gets the same id; the folder is written once (staged, then renamed into
place) and never rewritten.

**Entries** are identified by (model, task, comparability key). Publishing a run adds its entries; an entry already
on the board from another run is *replaced* (the run being published wins: publishing is the act of choosing; the
summary lists every replacement and notes when the replacing run started before the one it replaces); an entry
from the same run is *unchanged*. Runs named in one call are applied in order, so a later one wins over an earlier
one. A run folder that no longer backs any entry is removed. A run that backs only some of its entries is shown on
the pages through a filtered view (written to ``dest/.publish/`` and removed after the build), so a replaced number
is never shown next to the number that replaced it.

**Order of writes**: new run folders first, ``leaderboard.json`` last (atomically, through
:func:`medbench.fileio.write_json_atomic`), then orphaned run folders are removed and the pages rebuilt. A publish
killed at any point leaves a ``leaderboard.json`` whose runs all exist; what it left behind (a staged copy in
``dest/.publish/``, an unreferenced run folder) is cleaned up by the next publish.

**Idempotence**: nothing written depends on the clock, the machine or the order of a directory listing; the same
runs published again leave every file byte-identical. ``publish([], dest)`` rebuilds the pages of an existing board.

The board is marked demo (``"demo": true``) when any entry came from demo data. Bad input — a folder that is not a
finished run, a run from a newer medbench, a run without comparability keys, a damaged board — is a
:class:`~medbench.errors.UsageError` or :class:`~medbench.errors.DataError` naming the path and what to do; every
run is checked (prediction files included) before anything is written. The pages come from
``build_report(run dirs sorted by run id, dest, title="medbench leaderboard", published=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medbench.errors import DataError, UsageError
from medbench.fileio import write_json_atomic
from medbench.results import RunResults, TaskResult, load_run, safe_name

#: Version of the leaderboard.json layout (bumped when a reader would misread a newer board).
BOARD_SCHEMA_VERSION = 1
BOARD_FILE = "leaderboard.json"
RUNS_DIR = "runs"
SUMS_FILE = "SHA256SUMS"
#: Scratch space inside dest (same filesystem, so staged folders rename into place); removed after every publish.
STAGING_DIR = ".publish"
_RUN_ID = re.compile(r"^[0-9a-f]{16}$")
#: The provenance keys of a judge worth publishing (not its concurrency, timeouts or key variable).
_JUDGE_KEYS = ("backend", "name", "model", "base_url", "server_models")

#: An entry's identity on the board: (model, task, comparability key).
Identity = tuple[str, str, str]


@dataclass(frozen=True)
class Replacement:
    """One board entry that a newly published run replaced."""

    model: str
    task: str
    key: str
    old_run: str
    new_run: str


@dataclass
class PublishSummary:
    """What one :func:`publish` call did, and where the board lives."""

    dest: Path
    board: Path
    index: Path
    runs_dir: Path
    published_runs: list[str] = field(default_factory=list)
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    entries: int = 0
    demo: bool = False
    replacements: list[Replacement] = field(default_factory=list)
    removed_runs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The summary as lines for the terminal."""
        out = [
            f"published {len(self.published_runs)} run(s) to {self.dest}: {self.added} added, {self.replaced} "
            f"replaced, {self.unchanged} unchanged ({self.entries} entries on the board)"
        ]
        for r in self.replacements:
            out.append(f"replaced {r.model} on {r.task} (key {r.key[:12]}): run {r.old_run} -> run {r.new_run}")
        if self.removed_runs:
            out.append(f"removed run folder(s) no longer backing any entry: {', '.join(self.removed_runs)}")
        out.extend(self.notes)
        if self.demo:
            out.append("the board is marked DEMO: at least one entry came from the bundled demo data")
        out.append(f"board: {self.board}")
        out.append(f"pages: {self.index}")
        return out


def publish(run_dirs: Sequence[Path], dest: Path) -> PublishSummary:
    """Add the runs in ``run_dirs`` to the leaderboard folder ``dest`` and rebuild its pages (see the module
    docstring). With no run directories, rebuilds the pages of the existing board."""
    dest = Path(dest)
    runs_root = dest / RUNS_DIR
    _check_dest(dest, bool(run_dirs))
    loaded = [_load_publishable(Path(d)) for d in run_dirs]  # every run checked before anything is written
    staging = dest / STAGING_DIR
    _remove_tree(staging)  # what a killed publish left behind
    try:
        board = _read_board(dest / BOARD_FILE)
        summary = PublishSummary(dest=dest, board=dest / BOARD_FILE, index=dest / "index.html", runs_dir=runs_root)
        for number, run in enumerate(loaded):
            run_id = _store_run(run, runs_root, staging / f"run-{number}")
            summary.published_runs.append(run_id)
            for result in _results(run):
                identity = (result.model, result.task, result.comparability.key)
                previous = board.get(identity)
                if previous is None:
                    summary.added += 1
                elif previous == run_id:
                    summary.unchanged += 1
                else:
                    summary.replaced += 1
                    summary.replacements.append(Replacement(*identity, old_run=previous, new_run=run_id))
                board[identity] = run_id

        summary.notes.extend(_older_replacements(summary.replacements, runs_root))
        runs = _load_board_runs(board, runs_root)
        entries = [_entry(runs[run_id], run_id, identity) for identity, run_id in board.items()]
        entries.sort(key=lambda e: (e["task"], e["model"], e["comparability"]["key"]))
        summary.entries = len(entries)
        summary.demo = any(e["demo"] for e in entries)
        # Last of the board's own writes: every run folder it names exists by now.
        write_json_atomic(
            dest / BOARD_FILE,
            {"schema_version": BOARD_SCHEMA_VERSION, "demo": summary.demo, "runs": sorted(runs), "entries": entries},
        )
        summary.removed_runs = _remove_orphans(runs_root, set(runs))
        _rebuild_pages(dest, _site_inputs(runs, board, staging / "views"), staging)
    finally:
        _remove_tree(staging)  # staged copies and filtered views never stay in the published folder
    return summary


# --- input -----------------------------------------------------------------------------------------------------


def _check_dest(dest: Path, publishing: bool) -> None:
    """Refuse a destination that is a file, a run directory, or a folder whose runs/ publish does not own."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--dest {dest} exists and is not a folder; name the leaderboard folder (e.g. leaderboard/)")
    if (dest / "results.json").exists():
        raise UsageError(
            f"--dest {dest} is a run directory (it holds results.json); name the leaderboard folder as --dest "
            "and the run directories as arguments"
        )
    has_board = (dest / BOARD_FILE).exists()
    runs_root = dest / RUNS_DIR
    if runs_root.exists() and not runs_root.is_dir():
        raise UsageError(f"{runs_root} is not a folder; publish keeps its run copies there, so move it away")
    # publish removes run folders it no longer needs: never do that to a runs/ folder it did not create. Its own
    # folders (a run id with SHA256SUMS) and no board: a first publish killed before it wrote the board.
    foreign = [
        p
        for p in (runs_root.iterdir() if runs_root.is_dir() else ())
        if not (_RUN_ID.match(p.name) and (p / SUMS_FILE).is_file())
    ]
    if not has_board and foreign:
        raise UsageError(
            f"--dest {dest} has a {RUNS_DIR}/ folder but no {BOARD_FILE}; publish into a new folder or an existing "
            "leaderboard (publish manages runs/ and would remove folders in it)"
        )
    if not publishing and not has_board:
        raise UsageError(f"medbench publish: name at least one run directory ({dest} holds no {BOARD_FILE} yet)")


def _load_publishable(run_dir: Path) -> RunResults:
    """A finished run with comparability keys, or a clear error naming the folder."""
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: not a folder; name run directories that `medbench run --output` wrote")
    run = load_run(run_dir)  # DataError for a missing, malformed or newer-schema results.json
    record = run.record()
    if not record:
        raise DataError(f"{run_dir}: no readable run.json; publish only run directories `medbench run` finished")
    status = record.get("status")
    if status != "complete":
        raise DataError(
            f"{run_dir}/run.json: the run's status is {status!r}, not 'complete'; finish (or re-run) it before "
            "publishing"
        )
    if not run.results:
        raise DataError(f"{run_dir}/results.json: the run holds no results to publish")
    unkeyed = [f"{r.model}/{r.task}" for r in _results(run) if not r.comparability.key]
    if run.header.get("upgraded_from") == 0 or unkeyed:
        raise DataError(
            f"{run_dir}/results.json: written before comparability keys (no key for {', '.join(unkeyed) or 'any'}), "
            "so its results cannot be placed on the board; re-run it with this medbench (the prediction cache "
            "makes that quick) and publish the new run directory"
        )
    for result in _results(run):  # every result's prediction rows are there (read in full when stored)
        next(iter(run.rows(result.model, result.task)), None)
    return run


def _results(run: RunResults) -> Iterable[TaskResult]:
    for per_task in run.results.values():
        yield from per_task.values()


def _read_board(path: Path) -> dict[Identity, str]:
    """``{(model, task, key): run_id}`` from an existing leaderboard.json (empty when there is none)."""
    if not path.exists():
        return {}
    fix = "restore it from version control, or delete it and publish every run again"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as JSON ({exc}); {fix}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise DataError(f"{path}: not a medbench leaderboard (no 'entries' list); {fix}")
    version = doc.get("schema_version")
    if not isinstance(version, int):
        raise DataError(f"{path}: not a medbench leaderboard (schema_version {version!r}); {fix}")
    if version > BOARD_SCHEMA_VERSION:
        raise DataError(
            f"{path}: schema_version {version!r} is newer than this medbench writes ({BOARD_SCHEMA_VERSION}); "
            "upgrade medbench to publish to this board"
        )
    board: dict[Identity, str] = {}
    for number, entry in enumerate(doc["entries"], start=1):
        try:
            identity = (str(entry["model"]), str(entry["task"]), str(entry["comparability"]["key"]))
            run_id = str(entry["run_id"])
        except (KeyError, TypeError) as exc:
            raise DataError(f"{path}: entry {number} lacks model, task, comparability.key or run_id; {fix}") from exc
        if not _RUN_ID.match(run_id):
            raise DataError(f"{path}: entry {number} has a malformed run_id {run_id!r}; {fix}")
        board[identity] = run_id
    return board


def _load_board_runs(board: Mapping[Identity, str], runs_root: Path) -> dict[str, RunResults]:
    """Every run folder the board needs, read back from ``runs/`` (a missing one is a damaged board)."""
    runs: dict[str, RunResults] = {}
    for (model, task, _), run_id in sorted(board.items()):
        if run_id in runs:
            continue
        folder = runs_root / run_id
        if not (folder / "results.json").is_file():
            raise DataError(
                f"{folder}: missing, but {BOARD_FILE} lists it for {model} on {task}; restore the folder from "
                f"version control, or delete {BOARD_FILE} and publish every run again"
            )
        runs[run_id] = load_run(folder)
    return runs


def _older_replacements(replacements: Sequence[Replacement], runs_root: Path) -> list[str]:
    """Notes on replacements by a run that started before the run it replaced: the latest publish wins even then
    (publishing is the choice), but it is rarely what one means, so the summary says so."""
    started: dict[str, str | None] = {}

    def start(run_id: str) -> str | None:
        if run_id not in started:
            try:
                started[run_id] = load_run(runs_root / run_id).record().get("started")
            except DataError:  # a damaged old copy: no note rather than no publish
                started[run_id] = None
        return started[run_id]

    notes = []
    for r in replacements:
        old, new = start(r.old_run), start(r.new_run)
        if old and new and new < old:
            notes.append(
                f"note: run {r.new_run} (started {new}) replaced {r.model} on {r.task} from run {r.old_run}, "
                f"which started later ({old})"
            )
    return notes


# --- the normalised run copy -----------------------------------------------------------------------------------


def _store_run(run: RunResults, runs_root: Path, stage: Path) -> str:
    """Write the normalised copy of ``run`` to ``stage``, name it by its content and move it to ``runs/<run_id>``
    unless a folder of that id is there already (it then holds the same bytes). Returns the run id."""
    stage.mkdir(parents=True)
    sums: dict[str, str] = {"results.json": _write_text(stage / "results.json", _json_text(run.to_json()))}
    sums["run.json"] = _write_text(stage / "run.json", _json_text(run.record()))
    for result in _results(run):
        relative = f"predictions/{safe_name(result.model)}/{result.task}.jsonl"
        target = stage / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with target.open("w", encoding="utf-8", newline="\n") as fh:
            for row in run.rows(result.model, result.task):
                line = json.dumps(row, ensure_ascii=False) + "\n"
                digest.update(line.encode("utf-8"))
                fh.write(line)
        sums[relative] = digest.hexdigest()
    manifest = "".join(f"{sums[name]}  {name}\n" for name in sorted(sums))
    _write_text(stage / SUMS_FILE, manifest)
    run_id = hashlib.sha256(manifest.encode("utf-8")).hexdigest()[:16]
    final = runs_root / run_id
    if final.is_dir():
        _remove_tree(stage)  # already published: leave the existing folder (and its mtimes) alone
    else:
        runs_root.mkdir(parents=True, exist_ok=True)
        os.replace(stage, final)
    return run_id


def _json_text(data: Any) -> str:
    """The JSON text medbench writes everywhere (``write_json_atomic``'s format), so copies look like originals."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _write_text(path: Path, text: str) -> str:
    """Write ``text`` as UTF-8 with LF line ends; returns its sha256."""
    data = text.encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


# --- entries ---------------------------------------------------------------------------------------------------


def _entry(run: RunResults, run_id: str, identity: Identity) -> dict[str, Any]:
    """One leaderboard.json entry: numbers, comparability and provenance of one (model, task) of a stored run."""
    model, task, key = identity
    result = run.get(model, task)
    if result is None or result.comparability.key != key:
        raise DataError(
            f"{BOARD_FILE} lists {model} on {task} (key {key[:12]}) from run {run_id}, which holds no such result; "
            f"restore {BOARD_FILE} from version control, or delete it and publish every run again"
        )
    info = run.tasks.get(task, {})
    data = info.get("data") or {}
    record = run.record()
    demo = run.header.get("data") == "demo" or data.get("source") == "demo"
    return {
        "model": model,
        "task": task,
        "kind": info.get("kind"),
        "run_id": run_id,
        "demo": demo,
        "comparability": result.comparability.to_json(),
        "metrics": result.metrics,
        "counts": result.counts,
        "provenance": {
            "medbench_version": run.header.get("medbench_version"),
            "git": record.get("git"),
            "started": record.get("started"),
            "finished": record.get("finished"),
            "data": run.header.get("data"),
            "dataset": {name: data.get(name) for name in ("source", "repo_id", "revision", "layout", "checksum")},
            "split": info.get("split"),
            "prompt": info.get("prompt"),
            "closed_rule": (info.get("closed_rule") or {}).get("rule"),
            "config_sha256": record.get("config_sha256"),
            "versions": record.get("versions"),
            "model": run.header.get("models", {}).get(model),
            "judge": _judge(run.header.get("judge")),
        },
    }


def _judge(judge: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The judge's identity as published: model, endpoint (redacted by the run) and template hashes."""
    if not judge:
        return None
    out = {name: judge.get(name) for name in _JUDGE_KEYS if name in judge}
    templates = judge.get("templates")
    if isinstance(templates, Mapping):
        out["templates"] = {
            name: (t.get("sha256") if isinstance(t, Mapping) else t) for name, t in sorted(templates.items())
        }
    return out


# --- runs/ housekeeping and pages ------------------------------------------------------------------------------


def _remove_orphans(runs_root: Path, live: set[str]) -> list[str]:
    """Remove the run folders (named like run ids) that back no entry; returns their ids."""
    if not runs_root.is_dir():
        return []
    removed = []
    for folder in sorted(runs_root.iterdir()):
        if folder.is_dir() and _RUN_ID.match(folder.name) and folder.name not in live:
            _remove_tree(folder)
            removed.append(folder.name)
    return removed


def _site_inputs(runs: Mapping[str, RunResults], board: Mapping[Identity, str], views: Path) -> list[Path]:
    """The run folders to build the pages from, sorted by run id: ``runs/<id>`` where the run backs all of its
    results, else a filtered view of it (only the results on the board) under ``views/<id>``."""
    backed: dict[str, set[tuple[str, str]]] = {}
    for (model, task, _), run_id in board.items():
        backed.setdefault(run_id, set()).add((model, task))
    inputs = []
    for run_id in sorted(runs):
        run = runs[run_id]
        keep = backed.get(run_id, set())
        assert run.run_dir is not None  # read back with load_run
        if keep == {(r.model, r.task) for r in _results(run)}:
            inputs.append(run.run_dir)
        else:
            inputs.append(_write_view(run, keep, views / run_id))
    return inputs


def _write_view(run: RunResults, keep: set[tuple[str, str]], folder: Path) -> Path:
    """A run folder holding only the ``keep`` results of ``run`` (and their prediction rows), for the pages."""
    assert run.run_dir is not None
    models, tasks = {m for m, _ in keep}, {t for _, t in keep}
    header = dict(run.header)
    header["tasks"] = {t: info for t, info in run.tasks.items() if t in tasks}
    header["models"] = {m: info for m, info in run.header.get("models", {}).items() if m in models}
    view = RunResults(header, run_dir=folder)
    for result in _results(run):
        if (result.model, result.task) in keep:
            view.add(result)
            relative = Path("predictions", safe_name(result.model), f"{result.task}.jsonl")
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run.run_dir / relative, folder / relative)
    view.write(folder)
    write_json_atomic(folder / "run.json", run.record())
    return folder


def _rebuild_pages(dest: Path, run_dirs: list[Path], staging: Path) -> None:
    """Rebuild index.html and samples/ from ``run_dirs``. samples/ is rebuilt from nothing (pages of dropped entries
    go); thumbs/ is left alone (thumbnails of images that are no longer reachable must survive)."""
    from medbench.reports.site import build_report

    samples = dest / "samples"
    previous = staging / "samples-previous"
    if samples.exists():
        staging.mkdir(parents=True, exist_ok=True)
        os.replace(samples, previous)
    try:
        build_report(run_dirs, dest, title="medbench leaderboard", published=True)
    except BaseException:
        if previous.exists():  # put the old pages back rather than leave the board without them
            _remove_tree(samples)
            os.replace(previous, samples)
        raise
    _remove_tree(previous)


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
