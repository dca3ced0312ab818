"""``medbench gate --update-baseline``: promote a candidate run directory to the published baseline folder.

The baseline is a plain run directory (``results.json``, ``run.json``, ``predictions/<model>/<task>.jsonl``) so
every medbench command reads it. It is written next to its final place and swapped in with renames: a killed
promotion leaves the old baseline or the new one, never a mix.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from medbench.errors import UsageError
from medbench.results import load_run, safe_name


def promote(candidate: Path, dest: Path) -> Path:
    """Copy the run directory ``candidate`` to ``dest`` (replacing what is there); returns ``dest``."""
    if not (candidate / "results.json").is_file():
        raise UsageError(f"--update-baseline needs a run directory as --candidate; {candidate} has no results.json")
    run = load_run(candidate)
    stage = dest.with_name(f".{dest.name}.new")
    old = dest.with_name(f".{dest.name}.old")
    for leftover in (stage, old):
        shutil.rmtree(leftover, ignore_errors=True)
    (stage / "predictions").mkdir(parents=True)
    for name in ("results.json", "run.json"):
        if (candidate / name).is_file():
            shutil.copy2(candidate / name, stage / name)
    for model, per_task in run.results.items():
        folder = stage / "predictions" / safe_name(model)
        folder.mkdir(exist_ok=True)
        for task in per_task:
            shutil.copy2(candidate / "predictions" / safe_name(model) / f"{task}.jsonl", folder / f"{task}.jsonl")
    if dest.exists():
        dest.rename(old)
    stage.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest
