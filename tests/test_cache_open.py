"""Opening one new cache file from several processes at once (the ranks of a torchrun job) must not fail."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from medbench.cache import PredictionCache
from medbench.judges.cache import JudgeCache


def _open(path: Path, barrier: Any, results: Any) -> None:
    barrier.wait()  # all processes hit the new file together
    try:
        with PredictionCache(path), JudgeCache(path):
            pass
        results.put(None)
    except Exception as exc:  # reported to the parent, which asserts there were none
        results.put(repr(exc))


def test_simultaneous_opens_of_a_new_cache_file(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    errors: list[str] = []
    for attempt in range(8):  # before the fix, about one round in three failed with "database is locked"
        path = tmp_path / f"cache-{attempt}.sqlite"
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, barrier, results)) for _ in range(6)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        errors += [o for o in outcomes if o is not None]
        assert path.exists()
    assert errors == []
