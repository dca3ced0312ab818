"""Data-parallel training (medbench issue 13, point 7): `medbench train` under torchrun with 2 gloo processes on the
CPU follows the loss curve of one process with the same global batch, and ends with the same adapter; the split of
a step between processes, uneven steps included; a checkpoint resumes only with the world size it was written by."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from peft.utils import load_peft_weights

from medbench.cli import main
from medbench.distributed import World
from medbench.errors import UsageError
from medbench.testing.vlms import build_tiny_model
from medbench.training import checkpoint
from medbench.training.checkpoint import Progress
from medbench.training.parallel import share

#: 6 demo examples (2 per VQA task) in micro-batches of 2: 3 micro-batches per epoch, so with 2 per optimiser step
#: the second step of every epoch holds one micro-batch, and the second process trains a weight-0 slot there.
CONFIG = """
name = "ddp"
stage = 2
base = "{base}"
init_adapter = "none"
checkpoint_every = 1          # every step: the checkpoint code of every rank runs (each adds its random state)
[lora]
rank = 8
alpha = 16
dropout = 0.0                 # dropout draws differ between processes; without it the runs must agree
[data]
demo = true
tasks = ["slake", "vqa_rad", "pathvqa"]
limit = 2
image_size = 64
max_length = 256
[optim]
lr = 1e-3
epochs = 2
batch_size = 2
grad_accum = {grad_accum}
warmup_ratio = 0.1
"""


def test_share_splits_a_step_between_processes_and_pads_the_short_ones() -> None:
    step = ["a", "b", "c", "d", "e"]
    assert share(step, World(0, 2)) == [("a", 1.0), ("c", 1.0), ("e", 1.0)]
    assert share(step, World(1, 2)) == [("b", 1.0), ("d", 1.0), ("a", 0.0)]  # same slot count, the pad weighs 0
    assert share(["a"], World(1, 2)) == [("a", 0.0)]
    assert share(step, World()) == [(x, 1.0) for x in step]  # one process: the step itself


def test_two_gloo_processes_follow_the_loss_curve_of_one_with_the_same_global_batch(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    base = build_tiny_model("mllama", tmp_path / "base")
    one, two = tmp_path / "one.toml", tmp_path / "two.toml"
    one.write_text(CONFIG.format(base=base, grad_accum=2))  # 1 process x 2 micro-batches per step
    two.write_text(CONFIG.format(base=base, grad_accum=1))  # 2 processes x 1 micro-batch per step
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "medbench.cli", "train", str(two)]
    job = subprocess.run(
        [*command, "--output", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=600
    )
    assert job.returncode == 0, job.stderr[-4000:]
    assert job.stderr.count("ddp: done") == 1  # rank 0 alone writes the adapter and the run card
    assert main(["train", str(one), "--output", str(tmp_path / "single")]) == 0

    ddp = json.loads((tmp_path / "ddp" / "run_card.json").read_text())
    single = json.loads((tmp_path / "single" / "run_card.json").read_text())
    assert ddp["optimisation"]["world_size"] == 2 and single["optimisation"]["world_size"] == 1
    assert ddp["optimisation"]["effective_batch"] == single["optimisation"]["effective_batch"] == 4
    assert ddp["optimisation"]["steps"] == single["optimisation"]["steps"] == 4  # 2 per epoch, the 2nd uneven
    assert len(ddp["loss_curve"]) == 4
    for got, want in zip(ddp["loss_curve"], single["loss_curve"], strict=True):
        assert got["step"] == want["step"] and got["lr"] == pytest.approx(want["lr"], rel=1e-12)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4, abs=1e-5)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-3, abs=1e-5)
    assert ddp["throughput"]["samples_per_s"] > 0
    assert ddp["data"]["trained"] == single["data"]["trained"] == 6
    got, want = (load_peft_weights(str(tmp_path / n), device="cpu") for n in ("ddp", "single"))
    assert set(got) == set(want)
    assert max(float((got[k] - want[k]).abs().max()) for k in want) <= 1e-4
    assert not list((tmp_path / "ddp").glob("*checkpoint-*"))  # the finished run's checkpoints are gone


def test_a_checkpoint_resumes_only_with_the_world_size_that_wrote_it(tmp_path: Path) -> None:
    # Guards the data split: a step's micro-batches are divided by the world size, so another size would train
    # another order from the checkpoint on.
    folder = tmp_path / f"{checkpoint.PREFIX}000003"
    folder.mkdir()
    saved = Progress(step=3, config_sha256="c", base_digest="b", world_size=2)
    (folder / "state.json").write_text(json.dumps(saved.__dict__))
    with pytest.raises(UsageError, match="on 2 process"):
        checkpoint.resume(tmp_path, "c", "b", None, None, None, "cpu")


@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_a_sharded_accelerate_launch_is_refused_not_trained_as_ddp(
    variable: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Guards a silent downgrade: the recipe wraps the model in DDP itself, so an FSDP/DeepSpeed config would be ignored.
    monkeypatch.setenv(variable, "true")
    assert main(["train", "stage1", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert variable.removeprefix("ACCELERATE_USE_") in err and "docs/training.md" in err
    assert not (tmp_path / "out").exists()
