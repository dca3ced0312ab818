"""The prediction cache: no model calls on a rerun, never another model's outputs, and kill -9 safety."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PLUGIN = '''
import os, time
from medbench.models.base import Model

class SlowEcho(Model):
    """A cacheable test model: answers the question's first word after a pause; counts its calls in a file."""
    batch_size = 2

    def generate(self, requests):
        time.sleep(float(self.options.get("delay", "0")))
        hang_after = int(os.environ.get("ECHO_HANG_AFTER", "0"))
        if hang_after and os.path.exists(os.environ["ECHO_CALLS"]):
            with open(os.environ["ECHO_CALLS"]) as fh:
                if sum(int(n) for n in fh.read().split()) >= hang_after:
                    time.sleep(3600)  # a model stuck mid-batch: the test kills the process here
        with open(os.environ["ECHO_CALLS"], "a") as fh:
            fh.write(f"{len(requests)}\\n")
        tag = self.options.get("tag", "")
        return [tag + (r.question or "caption").split()[0].lower() for r in requests]
'''


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    """A third-party adapter registered through the medbench.models entry-point group."""
    site = tmp_path / "plugin"
    site.mkdir()
    (site / "echo_plugin.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "echo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[medbench.models]\necho = echo_plugin:SlowEcho\n")
    return {
        **os.environ,
        "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "ECHO_CALLS": str(tmp_path / "calls.txt"),
        "MEDBENCH_CACHE": str(tmp_path / "cache.sqlite"),
        "COLUMNS": "200",
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medbench.cli", "run", "--demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def calls(env: dict[str, str]) -> int:
    path = Path(env["ECHO_CALLS"])
    return sum(int(n) for n in path.read_text().split()) if path.exists() else 0


def stored_predictions(cache: Path) -> int:
    """Rows in the cache's predictions table; 0 while the file or the table does not exist yet."""
    if not cache.exists():
        return 0
    with contextlib.closing(sqlite3.connect(cache)) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
        except sqlite3.OperationalError:  # created by the run but not yet holding the table
            return 0


def predictions(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in sorted((out / "predictions").rglob("*.jsonl"))}


def test_second_run_makes_no_model_calls(plugin_env: dict[str, str], tmp_path: Path) -> None:
    first = run(plugin_env, "--models", "echo", "--tasks", "all", "--output", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    n = calls(plugin_env)
    run_a = json.loads((tmp_path / "a" / "run.json").read_text())
    total = sum(c["generated"] for c in run_a["counts"]["echo"].values())
    assert n == total > 0 and all(c["cached"] == 0 for c in run_a["counts"]["echo"].values())
    second = run(plugin_env, "--models", "echo", "--tasks", "all", "--output", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    assert calls(plugin_env) == n  # zero model calls
    run_b = json.loads((tmp_path / "b" / "run.json").read_text())
    assert all(c["generated"] == 0 and c["cached"] > 0 for c in run_b["counts"]["echo"].values())
    assert predictions(tmp_path / "a") == predictions(tmp_path / "b")
    results_a = json.loads((tmp_path / "a" / "results.json").read_text())["metrics"]
    assert results_a == json.loads((tmp_path / "b" / "results.json").read_text())["metrics"]
    assert "from cache" in second.stderr


def test_other_model_options_never_reuse_outputs(plugin_env: dict[str, str], tmp_path: Path) -> None:
    assert run(plugin_env, "--models", "echo", "--tasks", "slake", "--output", str(tmp_path / "a")).returncode == 0
    n = calls(plugin_env)
    other = run(
        plugin_env,
        "--models",
        "echo",
        "--tasks",
        "slake",
        "--model-arg",
        "echo.tag=x-",
        "--output",
        str(tmp_path / "b"),
    )
    assert other.returncode == 0, other.stderr
    assert calls(plugin_env) == 2 * n  # a different fingerprint regenerates everything
    rows = [json.loads(line) for line in (tmp_path / "b" / "predictions" / "echo" / "slake.jsonl").open()]
    assert all(r["prediction"].startswith("x-") for r in rows)
    assert (
        run(
            plugin_env, "--models", "echo", "--tasks", "slake", "--prompt", "generic", "--output", str(tmp_path / "c")
        ).returncode
        == 0
    )
    assert calls(plugin_env) == 3 * n  # a different prompt too


def test_no_cache(plugin_env: dict[str, str], tmp_path: Path) -> None:
    for out in ("a", "b"):
        assert (
            run(
                plugin_env, "--models", "echo", "--tasks", "vqa_rad", "--no-cache", "--output", str(tmp_path / out)
            ).returncode
            == 0
        )
    assert calls(plugin_env) == 2 * 15
    assert not Path(plugin_env["MEDBENCH_CACHE"]).exists()


def test_sigkill_then_resume_equals_uninterrupted(plugin_env: dict[str, str], tmp_path: Path) -> None:
    # The model hangs in its 21st call (ECHO_HANG_AFTER), so the kill lands part-way whatever the machine's speed:
    # 20 batches of one sample committed, one in flight. No timing decides what the test sees.
    args = ["--models", "echo", "--tasks", "all", "--batch-size", "1"]
    cache = Path(plugin_env["MEDBENCH_CACHE"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "medbench.cli", "run", "--demo", *args, "--output", str(tmp_path / "killed")],
        env={**plugin_env, "ECHO_HANG_AFTER": "20"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300  # only a bound for a broken run, never reached by a working one
    while time.monotonic() < deadline and proc.poll() is None and stored_predictions(cache) < 20:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    assert stored_predictions(cache) == 20
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    generated_before_kill = calls(plugin_env)
    assert generated_before_kill == 20  # 51 demo samples in all; killed part-way

    resumed = run(plugin_env, *args, "--output", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr
    counts = json.loads((tmp_path / "killed" / "run.json").read_text())["counts"]["echo"]
    total = sum(c["generated"] + c["cached"] for c in counts.values())
    assert sum(c["cached"] for c in counts.values()) == 20
    # Nothing lost and nothing generated twice: the batch in flight when the process died never returned.
    assert calls(plugin_env) == total

    env = {**plugin_env, "MEDBENCH_CACHE": str(tmp_path / "fresh.sqlite")}
    clean = run(env, *args, "--output", str(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr
    assert predictions(tmp_path / "killed") == predictions(tmp_path / "clean")
    killed_results = json.loads((tmp_path / "killed" / "results.json").read_text())
    clean_results = json.loads((tmp_path / "clean" / "results.json").read_text())
    assert killed_results["metrics"] == clean_results["metrics"]


def test_torchrun_two_processes_equal_a_single_process(plugin_env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("torch.distributed")
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed (needs the hf extra)")
    args = ["run", "--demo", "--models", "echo,prior", "--tasks", "all"]
    job = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "medbench.cli",
            *args,
            "--output",
            str(tmp_path / "ddp"),
        ],
        env={**plugin_env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    ddp_calls = calls(plugin_env)
    env = {**plugin_env, "MEDBENCH_CACHE": str(tmp_path / "single.sqlite")}
    single = run(env, *args[2:], "--output", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    assert calls(plugin_env) == 2 * ddp_calls  # the two ranks together generated each sample exactly once
    assert predictions(tmp_path / "ddp") == predictions(tmp_path / "single")
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["metrics"] == json.loads((tmp_path / "single" / "results.json").read_text())["metrics"]
    assert json.loads((tmp_path / "ddp" / "run.json").read_text())["world_size"] == 2
