"""The issue's end-to-end checks with real tiny models through the CLI: hf: models on the demo set, a rerun with
zero model calls, and a 2-process torchrun job equal to a single-process run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medbench.testing import build_tiny_model

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_vlms")
    return {family: build_tiny_model(family, root / family) for family in ("mllama", "qwen2_5_vl")}


def medbench(*args: str, env: dict[str, str], launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [*(launcher or [sys.executable]), "-m", "medbench.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def outputs(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): p.read_text() for p in sorted((run_dir / "predictions").rglob("*.jsonl"))}


def test_hf_models_on_the_demo_set_then_a_cached_rerun(tiny: dict[str, Path], tmp_path: Path) -> None:
    # In-process: the command line's own code path without a second interpreter start-up per run.
    from medbench.cli import main

    cache = str(tmp_path / "cache.sqlite")
    models = f"hf:{tiny['mllama']},hf:{tiny['qwen2_5_vl']}"
    args = ["run", "--demo", "--models", models, "--tasks", "all", "--cache", cache]
    assert main([*args, "--output", str(tmp_path / "a")]) == 0
    counts = json.loads((tmp_path / "a" / "run.json").read_text())["counts"]
    assert len(counts) == 2 and all(
        c["generated"] > 0 and c["cached"] == 0 for m in counts.values() for c in m.values()
    )
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    for model in counts:
        assert set(results["metrics"][model]) == {"slake", "pathvqa", "vqa_rad", "rocov2"}
        assert results["models"][model]["fingerprint"]
    assert main([*args, "--output", str(tmp_path / "b")]) == 0
    counts = json.loads((tmp_path / "b" / "run.json").read_text())["counts"]
    assert all(c["generated"] == 0 and c["cached"] > 0 for m in counts.values() for c in m.values())  # no model calls
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")


def test_torchrun_with_a_tiny_model_equals_single_process(tiny: dict[str, Path], tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    args = ["run", "--demo", "--models", f"hf:{tiny['mllama']}", "--tasks", "slake,rocov2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDBENCH_CACHE": str(tmp_path / "ddp.sqlite")}
    job = medbench(
        *args,
        "--output",
        str(tmp_path / "ddp"),
        env=env,
        launcher=[str(torchrun), "--standalone", "--nproc_per_node", "2"],
    )
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-3000:]
    from medbench.cli import main  # the single process runs in-process; only the 2-rank job needs torchrun

    assert main([*args, "--output", str(tmp_path / "single"), "--cache", str(tmp_path / "single.sqlite")]) == 0
    assert outputs(tmp_path / "ddp") == outputs(tmp_path / "single")
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["metrics"] == json.loads((tmp_path / "single" / "results.json").read_text())["metrics"]
