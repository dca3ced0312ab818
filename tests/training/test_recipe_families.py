"""The same recipe, stage 1 -> stage 2 on the demo data, for the other tiny families (Mllama: test_recipe.py): each
trains the adapter its preset places, stage 2 continues stage 1, and the adapter loads through `medbench run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medbench.cli import main
from medbench.testing.vlms import build_tiny_model
from medbench.training.recipe import debug_configs, train


@pytest.mark.parametrize("family", ["qwen2_5_vl", "gemma3", "llava"])
def test_both_stages_train_and_the_adapter_evaluates(family: str, tmp_path: Path) -> None:
    base = build_tiny_model(family, tmp_path / "base")
    configs = debug_configs(base)
    for stage in ("stage1", "stage2"):
        train(configs[stage], tmp_path / stage)
    cards = {s: json.loads((tmp_path / s / "run_card.json").read_text(encoding="utf-8")) for s in ("stage1", "stage2")}
    one, two = cards["stage1"], cards["stage2"]
    assert one["adapter"]["initial_sha256"] != one["adapter"]["final_sha256"]  # stage 1 trained
    assert two["adapter"]["continued"] and two["adapter"]["initial_sha256"] == one["adapter"]["final_sha256"]
    assert two["adapter"]["final_sha256"] != two["adapter"]["initial_sha256"]
    trainable = two["trainable"]["per_component"]
    assert trainable["language"] > 0 and trainable["vision"] > 0 and trainable["projector"] == 0  # the paper preset
    out = tmp_path / "eval"
    model = f"hf:{base}+lora:{tmp_path / 'stage2'}"
    args = ["run", "--demo", "--models", model, "--tasks", "vqa_rad", "--limit", "2", "--no-cache"]
    assert main([*args, "--resamples", "20", "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["metrics"][model]["vqa_rad"]["strict"]["overall_accuracy"]["n"] == 2
