"""Typed training configs: the paper's numbers as the shipped stages, TOML files, typed overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from medbench.errors import UsageError
from medbench.training.config import TrainConfig, shipped


def test_the_shipped_stages_are_the_papers_recipe() -> None:
    assert shipped() == ["debug", "stage1", "stage1-qlora", "stage2", "stage2-qlora"]
    one, two = TrainConfig.load("stage1"), TrainConfig.load("stage2")
    assert (one.stage, one.data.tasks, one.optim.lr, one.optim.epochs) == (1, ["rocov2"], 2e-4, 3)
    assert (two.stage, two.data.tasks, two.optim.lr, two.optim.epochs) == (2, ["slake", "vqa_rad", "pathvqa"], 4e-5, 3)
    for c in (one, two):
        assert (c.lora.rank, c.optim.weight_decay, c.optim.scheduler) == (32, 0.01, "cosine")
        assert (c.data.image_size, c.data.max_length, c.quant.enabled) == (512, 1024, False)
    assert two.init_adapter == "previous" and one.init_adapter == "none"  # stage 2 continues stage 1
    q = TrainConfig.load("stage1-qlora")
    assert q.quant.enabled and (q.quant.quant_type, q.quant.double_quant, q.quant.compute_dtype) == (
        "nf4",
        True,
        "bfloat16",
    )
    assert q.optim.lr == one.optim.lr and q.lora == one.lora


def test_overrides_are_typed_by_the_field() -> None:
    c = TrainConfig.load("stage2", ["optim.lr=1e-4", "lora.rank=16", "data.tasks=slake,vqa_rad", "freeze_vision=true"])
    assert (c.optim.lr, c.lora.rank, c.data.tasks, c.freeze_vision) == (1e-4, 16, ["slake", "vqa_rad"], True)
    assert c.data.limit is None and TrainConfig.load("stage2", ["data.limit=8"]).data.limit == 8
    assert c.sha256() != TrainConfig.load("stage2").sha256()
    assert TrainConfig.load("stage2").sha256() == TrainConfig.load("stage2").sha256()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown setting 'optim.lrr'"),
        ("lora.rank=big", "lora.rank must be int"),
        ("lora.rank=0", "lora.rank and lora.alpha must be >= 1"),
        ("lora.preset=everything", "lora.preset must be one of all-linear, paper, llm-only, no-vision"),
        ("freeze_vision=1", "freeze_vision must be bool"),
        ("optim.lr", "expected KEY=VALUE"),
        ("nosection.x=1", "unknown setting 'nosection.x'"),
    ],
)
def test_bad_overrides_name_the_setting(override: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(".", r"\.")):
        TrainConfig.load("stage1", [override])


def test_a_toml_file_by_path_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "mine.toml"
    good.write_text('name = "mine"\nstage = 2\n[optim]\nlr = 1e-5\nepochs = 1\n[data]\ntasks = ["vqa_rad"]\n')
    c = TrainConfig.load(good)
    assert (c.name, c.stage, c.optim.lr, c.optim.epochs, c.data.tasks) == ("mine", 2, 1e-5, 1, ["vqa_rad"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\nlr = 1")
    with pytest.raises(UsageError, match="not valid TOML"):
        TrainConfig.load(bad)
    (tmp_path / "section.toml").write_text("[optimizer]\nlr = 1.0\n")
    with pytest.raises(UsageError, match=r"unknown section \[optimizer\]"):
        TrainConfig.load(tmp_path / "section.toml")
    with pytest.raises(UsageError, match="shipped configs are debug, stage1, stage1-qlora, stage2, stage2-qlora"):
        TrainConfig.load("stage3")
    with pytest.raises(UsageError, match="medbench train debug"):
        TrainConfig.load("debug")


def test_show_config_prints_the_resolved_config(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from medbench.cli import main

    assert main(["train", "show-config", "stage2", "optim.lr=1e-4"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (
        doc["config"]["optim"]["lr"] == 1e-4 and doc["sha256"] == TrainConfig.load("stage2", ["optim.lr=1e-4"]).sha256()
    )
    assert main(["train", "show-config", "stage2", "optim.lr=-1"]) == 2
    assert "optim.lr must be > 0" in capsys.readouterr().err
