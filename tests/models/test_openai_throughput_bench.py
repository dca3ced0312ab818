"""``benchmarks/openai_throughput.py --quick`` runs end to end and prints every table (it asserts no speed: the
numbers depend on the machine; only that the script works and its rows are complete)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openai")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "openai_throughput.py"


def test_quick_run_prints_every_table() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for heading in (
        "server ceiling: trivial http.client",
        "where one request's client time goes",
        "the openai: adapter through generate_all",
        "batches vs concurrency",
        "sharing ratio",
    ):
        assert heading in out
    rows = [line for line in out.splitlines() if line.startswith(("naive", "medbench", "batches =", "8 x"))]
    # --quick: naive and medbench at concurrency 1 and 4, then the two batch sizes, drained and overlapped.
    assert [r.split()[0] for r in rows] == ["naive", "medbench", "naive", "medbench", "batches", "8", "batches", "8"]
    assert out.count("x the floor") == 4
    # Every image of the quick set (24 requests on 3 images) is encoded once per medbench run, whatever the timing;
    # the naive rows (12 requests) encode one per request. Columns after the mode: conc, batch, reqs, encoded, ...
    columns = [r.split(")", 1)[1].split() for r in rows[:4]]
    assert [c[3] for c in columns] == ["12", "3", "12", "3"], rows
