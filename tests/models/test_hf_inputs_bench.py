"""benchmarks/hf_inputs.py --quick: every family's batch inputs built naive and fast, the two equal on every row
(it asserts no speed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "hf_inputs.py"


def test_quick_run_builds_equal_inputs_for_every_family(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("hf_inputs_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hf_inputs_bench"] = module
    spec.loader.exec_module(module)
    assert module.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0] in module.FAMILIES]
    assert [(r[0], r[1]) for r in rows] == [(f, q) for f in module.FAMILIES for q in ("4.0", "1.0")]
    assert all(r[9] == "yes" for r in rows)  # the fast path's inputs equal the naive path's
    assert [int(r[3]) for r in rows] == [2, 8] * 4  # 8 questions on 2 images, then on 8
    assert "inputs equal on every row: yes" in out
