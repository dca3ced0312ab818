"""The Python API: ``medbench.evaluate(...)`` runs models on tasks and returns typed results; ``medbench run`` is a
thin command line over it. ``medbench.load_run(dir)`` reads a finished run back.

    import medbench
    results = medbench.evaluate(models=["prior", "yes"], tasks=["vqa_rad"], demo=True, output="runs/api")
    entry = results.get("prior", "vqa_rad").metric("strict", "overall_accuracy")   # {value, ci95, n}
    again = medbench.load_run("runs/api")                                          # the same numbers, from disk
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from medbench.errors import UsageError
from medbench.results import RunResults
from medbench.runconfig import DEFAULT_MODELS, RunConfig

_PATHS = ("output", "data_dir", "cache", "config_file")


def new_run_dir(parent: Path, now: datetime | None = None, *, create: bool = True) -> Path:
    """A fresh ``parent/<timestamp>`` folder of this run's own: created atomically, with ``-2``, ``-3``, ... when a
    run started in the same second took the name. ``create=False`` (the other ranks of a distributed job, which
    write nothing) only names it."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    if not create:
        return parent / stamp
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10_000):
        candidate = parent / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise UsageError(f"could not create a new run folder in {parent}; pass output=DIR")


@contextlib.contextmanager
def _silent(description: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


def _names(value: str | Sequence[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def evaluate(
    models: str | Sequence[str] = DEFAULT_MODELS,
    tasks: str | Sequence[str] = "all",
    *,
    progress: Callable[[str, int], Any] | None = None,
    argv: Sequence[str] | None = None,
    **options: Any,
) -> RunResults:
    """Run ``models`` on ``tasks`` (names, or comma-separated strings; ``"all"``) and return the results.

    ``options`` are :class:`~medbench.runconfig.RunConfig` fields — the same settings as ``medbench run``'s flags
    (``demo=True``, ``data_dir=``, ``limit=``, ``closed_rule=``, ``judge=``, ...). ``output`` defaults to a new
    ``runs/<timestamp>`` folder. ``progress(description, total)`` may return a context manager yielding
    ``advance(n)`` (default: silent). Raises :class:`~medbench.errors.MedbenchError` subclasses for bad input."""
    from medbench.distributed import world
    from medbench.registry import resolve_task_names
    from medbench.runner import execute

    allowed = {f.name for f in dataclasses.fields(RunConfig)} - {"models", "tasks"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UsageError(f"evaluate(): unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    for key in _PATHS:
        if options.get(key) is not None:
            options[key] = Path(options[key])
    model_names = _names(models)
    if not model_names:
        raise UsageError("evaluate(): no model names given")
    task_spec = tasks if isinstance(tasks, str) else ",".join(_names(tasks))
    if options.get("output") is None:
        options["output"] = new_run_dir(Path("runs"), create=world().is_main)
    config = RunConfig(models=model_names, tasks=resolve_task_names(task_spec or "all"), **options)
    return execute(config, progress or _silent, argv)
