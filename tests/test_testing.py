"""medbench.testing (medbench issue 10, item 5): the tiny offline models, moved from tests/ into the package so
that tests of code built on medbench, and `medbench testing tiny-model`, can use them. Every family builds,
loads with AutoModelForImageTextToText and generates; the command line builds the same files as the library."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medbench.errors import UsageError
from medbench.testing import FAMILIES, build_tiny_model, build_tiny_models, configure_parser, main
from medbench.testing import vlms as tiny

VLMs = dict[str, tuple[Path, Path]]


@pytest.fixture(scope="session")
def tiny_vlms(tmp_path_factory: pytest.TempPathFactory) -> VLMs:
    """The session's shared tiny models (built once, with tests/models/test_hf.py)."""
    pytest.importorskip("peft")
    return build_tiny_models(tmp_path_factory.getbasetemp() / "tiny_vlms", reuse=True)


def test_importing_the_package_imports_nothing_heavy() -> None:
    heavy = "{'torch', 'transformers', 'tokenizers', 'peft'}"
    code = f"import sys, medbench.testing, medbench.models.hf_runtime; print(sorted({heavy} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_and_generates(tiny_vlms: VLMs, family: str) -> None:
    pytest.importorskip("transformers")
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    from medbench.models import hf_runtime

    model_dir = tiny_vlms[family][0]
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    assert model.config.model_type == family
    assert model.generation_config.do_sample is True  # as the real LLaMA 3.2 Vision Instruct: sampling asked for
    processor = hf_runtime.load_processor(model_dir, family)
    image = Image.new("RGB", (48, 36), "gray")
    inputs = hf_runtime.batch_inputs(processor, [image], ["What is shown?"])
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    new = out.shape[1] - inputs["input_ids"].shape[1]
    assert out.shape[0] == 1 and 1 <= new <= 3


def test_the_lora_adapter_records_its_base_and_sorted_modules(tiny_vlms: VLMs) -> None:
    # Guards the adapter's fingerprint: peft saved its target modules in set (hash) order, so every process
    # wrote another adapter_config.json, and the same seed gave another adapter digest.
    model_dir, adapter = tiny_vlms["llava"]
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(model_dir)
    assert config["target_modules"] == sorted(config["target_modules"]) and "q_proj" in config["target_modules"]
    assert config["r"] == 4 and (adapter / "adapter_model.safetensors").is_file()


def test_the_same_seed_gives_the_same_files(tiny_vlms: VLMs, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    again = build_tiny_model("llava", tmp_path / "llava", seed=FAMILIES.index("llava"))
    shared = tiny_vlms["llava"][0]
    assert {p.name: p.read_bytes() for p in again.iterdir()} == {p.name: p.read_bytes() for p in shared.iterdir()}


def test_unknown_family_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no tiny model of family 'bert'; the families are mllama, qwen2_5_vl"):
        build_tiny_model("bert", tmp_path / "bert")
    assert not (tmp_path / "bert").exists()


@pytest.fixture
def fake_builds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """Record the builds build_tiny_models asks for instead of making models."""
    calls: list[tuple[str, str, int]] = []

    def model(family: str, out_dir: Path, seed: int = 0) -> Path:
        calls.append(("model", family, seed))
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir

    def lora(model_dir: Path, out_dir: Path, seed: int = 0) -> Path:
        calls.append(("lora", model_dir.name, seed))
        return out_dir

    monkeypatch.setattr(tiny, "build_tiny_model", model)
    monkeypatch.setattr(tiny, "build_tiny_lora", lora)
    return calls


def test_a_complete_build_is_reused_and_an_interrupted_one_redone(
    tmp_path: Path, fake_builds: list[tuple[str, str, int]]
) -> None:
    out = build_tiny_models(tmp_path, ["llava", "mllama"], reuse=True)
    assert out == {
        "llava": (tmp_path / "llava", tmp_path / "llava-lora"),
        "mllama": (tmp_path / "mllama", tmp_path / "mllama-lora"),
    }
    # A family's seeds do not depend on which families are asked for.
    assert fake_builds == [
        ("model", "llava", 3),
        ("lora", "llava", 103),
        ("model", "mllama", 0),
        ("lora", "mllama", 100),
    ]
    assert build_tiny_models(tmp_path, ["llava", "mllama"], reuse=True) == out and len(fake_builds) == 4
    build_tiny_models(tmp_path, ["llava"], reuse=True)  # another set of families: built
    assert len(fake_builds) == 6
    (tmp_path / tiny.RECORD).unlink()  # as if interrupted before the end
    build_tiny_models(tmp_path, ["llava"], reuse=True)
    assert len(fake_builds) == 8
    build_tiny_models(tmp_path, ["llava"])  # without reuse: always built
    assert len(fake_builds) == 10


# -- the command line ---------------------------------------------------------------------------------------------
def test_tiny_model_command_builds_what_the_library_builds(
    tiny_vlms: VLMs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, lora = tmp_path / "out", tmp_path / "lora"
    assert main(["tiny-model", "--family", "llava", "--seed", "3", "--lora", str(lora), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"tiny llava model: {out.resolve()}" in printed
    assert f"medbench run --demo --models hf:{out.resolve()}+lora:{lora.resolve()}" in printed
    model, adapter = tiny_vlms["llava"]  # seeds 3 and 103 too
    assert (out / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    assert (lora / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()


def test_tiny_model_command_refuses_what_it_would_mix_or_cannot_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "config.json").write_text("{}")
    assert main(["tiny-model", str(used)]) == 2
    assert f"OUT {used} is an existing non-empty folder; give a new or empty folder" in capsys.readouterr().err
    assert main(["tiny-model", str(tmp_path / "a"), "--lora", str(tmp_path / "a")]) == 2
    assert "the adapter needs a folder of its own" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse: a family it does not know
        main(["tiny-model", "--family", "bert", str(tmp_path / "b")])
    assert exit_.value.code == 2 and "invalid choice: 'bert'" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    assert main(["tiny-model", str(tmp_path / "c"), "--lora", str(tmp_path / "d")]) == 2
    assert "needs peft, which is not installed: pip install 'medbench[hf]'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_configure_parser_mounts_under_another_command(tmp_path: Path) -> None:
    """How medbench.cli mounts it: ``medbench testing tiny-model ...``."""
    parser = argparse.ArgumentParser(prog="medbench")
    configure_parser(parser.add_subparsers(dest="command").add_parser("testing"))
    args: Any = parser.parse_args(["testing", "tiny-model", str(tmp_path / "m")])
    assert (args.family, args.seed, args.lora, args.out) == ("mllama", 0, None, tmp_path / "m")
    assert args.func.__name__ == "cmd_tiny_model"


def test_python_dash_m_runs_the_command(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "medbench.testing", "tiny-model", "--help"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0 and "--family {mllama,qwen2_5_vl,gemma3,llava}" in done.stdout
