"""`medbench train ablation` (issue 13, point 5): Table 3's grid as data, each row differing from the full row by
its own switch only; the refusals made before anything trains; and the whole grid end to end in --debug, trained,
then scored by `medbench run --config` on the configs it writes."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

import torch

from medbench.cli import main
from medbench.configfile import read_config
from medbench.training import ablation
from medbench.training.config import TrainConfig

#: Per row and stage, what its resolved config must change against the full row's (None: the stage is not trained).
EXPECTED_SWITCHES: dict[str, dict[str, dict[str, Any] | None]] = {
    "full": {"stage1": {}, "stage2": {}},
    "no-stage1": {"stage1": None, "stage2": {"init_adapter": "none"}},
    "generic-prompt": {"stage1": {"data.prompt": "generic"}, "stage2": {"data.prompt": "generic"}},
    "no-vision": {"stage1": {"freeze_vision": True}, "stage2": {"freeze_vision": True}},
    "qlora": {"stage1": {"quant.enabled": True}, "stage2": {"quant.enabled": True}},
}


def flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        out |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return out


def differences(config: TrainConfig, reference: TrainConfig) -> dict[str, Any]:
    mine, theirs = flat(config.resolved()), flat(reference.resolved())
    assert set(mine) == set(theirs)
    return {k: v for k, v in mine.items() if v != theirs[k] and k != "name"}


@pytest.mark.parametrize("debug", [False, True])
def test_each_row_differs_from_the_full_row_by_its_own_switch_only(debug: bool, tmp_path: Path) -> None:
    # Guards the grid: a row that changed anything else than its Table 3 column would not measure that column.
    base = tmp_path / "base" if debug else None
    overrides = ["optim.epochs=1", "data.limit=3"]
    grid = {row.name: ablation.stage_configs(row, overrides, base) for row in ablation.ROWS}
    assert list(grid) == list(EXPECTED_SWITCHES)  # Table 3's five rows, in its order
    full = grid["full"]
    assert full["stage1"].init_adapter == "none" and full["stage2"].init_adapter == "previous"
    for row, stages in grid.items():
        for stage, expected in EXPECTED_SWITCHES[row].items():
            if expected is None:
                assert stage not in stages
                continue
            config = stages[stage]
            assert differences(config, full[stage]) == expected, (row, stage)
            assert config.name == f"table3-{row}-{stage}"
            assert config.optim.epochs == 1 and config.data.limit == 3  # the user's overrides reach every stage
            if debug:  # debug.toml's settings and the tiny base, laid over every stage's config
                assert config.base == str(base) and config.lora.rank == 8 and config.data.demo
                assert config.checkpoint_every == 2
        assert ablation.switches(stages, full) == EXPECTED_SWITCHES[row]  # what table3.json records
    shas = [c.sha256() for stages in grid.values() for c in stages.values()]
    assert len(set(shas)) == len(shas) == 9  # every stage's run card is its own


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rows", "full,qlora"], r"row\(s\) qlora train QLoRA .* needs a CUDA GPU.* pass --rows full to leave"),
        ([], r"row\(s\) qlora train QLoRA .*pass --rows full,no-stage1,generic-prompt,no-vision"),  # default: all
        (["--debug", "--rows", "qlora"], r"row\(s\) qlora train QLoRA .*or run on a GPU machine"),
        (["--rows", "full,bogus"], r"--rows 'full,bogus': unknown row\(s\) bogus; Table 3's rows are full, "),
        (["data.prompt=generic"], r"data.prompt is one of Table 3's switches"),
        (["--rows", "full", "init_adapter=none"], r"init_adapter is one of Table 3's switches"),
        (["--debug", "freeze_vision=true"], r"freeze_vision is one of Table 3's switches"),
        (["--debug", "name=mine"], r"the grid sets name for every stage"),
        (["--debug", "optim.nope=1"], r"unknown setting 'optim.nope'"),
    ],
)
def test_what_cannot_run_is_refused_before_anything_is_trained(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the refusal is for machines without CUDA
    out = tmp_path / "table3"
    assert main(["train", "ablation", "--output", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medbench: error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert not out.exists()  # nothing built, nothing trained


def test_ctrl_c_exits_130_and_says_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ablation, "run", interrupted)
    assert main(["train", "ablation", "--debug"]) == 130
    assert "the same command again resumes" in capsys.readouterr().err


def test_an_output_path_with_a_comma_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The run config's models are joined with commas: an adapter path holding one would split into two models.
    out = tmp_path / "a,b"
    assert main(["train", "ablation", "--debug", "--output", str(out)]) == 2
    assert "the path holds a comma" in capsys.readouterr().err
    assert not out.exists()


def test_the_eval_configs_pin_a_hub_base_and_read_back_as_medbench_run_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Guards the hand-written TOML (quotes and non-ASCII in paths), the base's hub commit and the data folder.
    monkeypatch.chdir(tmp_path)
    out = tmp_path / 'out "q" \u00e9'
    grid = {r: ablation.stage_configs(ablation.GRID[r], ["data.data_dir=data"]) for r in ("full", "generic-prompt")}
    hub = "meta-llama/Llama-3.2-11B-Vision-Instruct"
    for row in grid:  # what save_adapter writes for a hub base: the id as given and its commit
        (out / row / "stage2").mkdir(parents=True)
        (out / row / "stage2" / "adapter_model.safetensors").write_bytes(b"")
        saved = {"base_model_name_or_path": hub, "revision": "c0ffee"}
        (out / row / "stage2" / "adapter_config.json").write_text(json.dumps(saved), encoding="utf-8")
    evals = ablation.write_eval_configs(out, grid)
    assert evals == {
        "role": (out / "table3-role.toml", out / "eval" / "role"),
        "generic": (out / "table3-generic.toml", out / "eval" / "generic"),
    }
    for prompt, row in (("role", "full"), ("generic", "generic-prompt")):
        model = f"hf:{hub}+lora:{out / row / 'stage2'}"
        assert read_config(evals[prompt][0]) == {
            "tasks": "slake",
            "prompt": prompt,
            "models": model,
            "output": str(out / "eval" / prompt),
            "image_size": 512,
            "data_dir": str(tmp_path / "data"),  # absolute: the config runs from any folder
            "model_args": [f"{model}.revision=c0ffee"],
        }
    lines = ablation.commands(out, evals)
    assert shlex.split(lines[0]) == ["medbench", "run", "--config", str(out / "table3-role.toml")]
    report = ["medbench", "report", str(out / "eval" / "role"), str(out / "eval" / "generic")]
    assert shlex.split(lines[-1]) == [*report, "--out", str(out / "eval" / "report")]


def card(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "run_card.json").read_text(encoding="utf-8"))


def test_the_debug_grid_trains_every_row_and_medbench_run_scores_every_adapter(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # A short folder: the report that `medbench run` builds names a folder after each pair of model names
    # (samples/<A>~vs~<B>/), which overflows the 255-byte file name limit for long adapter paths (reported).
    out = tmp_path_factory.mktemp("t3") / "table3"
    command = ["train", "ablation", "--debug", "--output", str(out), "optim.epochs=1"]  # one epoch: a quick test
    assert main(command) == 0
    captured = capsys.readouterr()
    assert "not qlora (the CPU cannot run QLoRA)" in captured.err
    role, generic = out / "table3-role.toml", out / "table3-generic.toml"
    assert captured.out.splitlines() == [
        f"medbench run --config {role}",
        f"medbench run --config {generic}",
        f"medbench report {out / 'eval' / 'role'} {out / 'eval' / 'generic'} --out {out / 'eval' / 'report'}",
    ]
    index = json.loads((out / "table3.json").read_text(encoding="utf-8"))
    rows = index["rows"]
    assert list(rows) == list(ablation.DEBUG_ROWS)

    # Each row trained what its switch says.
    assert not (out / "no-stage1" / "stage1").exists()
    assert card(out / "no-stage1" / "stage2")["adapter"]["init"] == "none"
    assert card(out / "full" / "stage2")["adapter"]["init"] == str(out / "full" / "stage1")
    assert card(out / "no-vision" / "stage2")["trainable"]["per_component"]["vision"] == 0
    assert card(out / "full" / "stage2")["trainable"]["per_component"]["vision"] > 0
    for stage in ("stage1", "stage2"):
        assert card(out / "generic-prompt" / stage)["config"]["data"]["prompt"] == "generic"
        assert card(out / "full" / stage)["config"]["data"]["prompt"] == "role"
    for row, entry in rows.items():
        for stage, info in entry["stages"].items():
            if info is not None:
                c = card(out / row / stage)
                assert c["config_sha256"] == info["config_sha256"] and c["config"]["optim"]["epochs"] == 1
        assert entry["switches"] == EXPECTED_SWITCHES[row]
        assert entry["model"] == f"hf:{out / 'base'}+lora:{out / row / 'stage2'}"
    assert rows["no-stage1"]["columns"] == {
        "stage1_ft": False,
        "role_prompt": True,
        "vision_encoder_ft": True,
        "4bit": False,
    }

    # The same command again resumes: every stage is finished, nothing is retrained.
    assert main(command) == 0
    assert capsys.readouterr().err.count("nothing to do") == 7
    # Other settings on the same folder are refused before anything runs.
    assert main([*command[:-1], "optim.epochs=2"]) == 2
    assert "finished with other settings" in capsys.readouterr().err

    # The written configs score every row's adapter on SLAKE (flags override the file: a short run).
    short = ["--limit", "2", "--no-cache", "--resamples", "20"]
    for config, prompt in ((role, "role"), (generic, "generic")):
        assert main(["run", "--config", str(config), *short]) == 0
        run_dir = out / "eval" / prompt
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        wanted = {entry["model"] for entry in rows.values() if entry["eval_prompt"] == prompt}
        assert set(results["metrics"]) == wanted
        for model in wanted:
            assert results["metrics"][model]["slake"]["strict"]["overall_accuracy"]["n"] == 2
            assert results["comparability"][model]["slake"]["settings"]["prompt_style"] == prompt
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["config"]
        assert record["numbers"]["prompt"] == prompt and record["runtime"]["config_file"] == str(config)
    assert {rows[r]["eval_prompt"] for r in ("full", "no-stage1", "no-vision")} == {"role"}
    assert rows["generic-prompt"]["eval_prompt"] == "generic"


def test_the_qlora_row_is_scored_on_the_4bit_base_it_was_trained_on(tmp_path: Path) -> None:
    # Guards Table 3's QLoRA row: scored on a 16-bit base it would measure another model than the one trained.
    grid = {r: ablation.stage_configs(ablation.GRID[r], []) for r in ("full", "qlora")}
    for row in grid:
        (tmp_path / row / "stage2").mkdir(parents=True)
        (tmp_path / row / "stage2" / "adapter_model.safetensors").write_bytes(b"")
        saved = {"base_model_name_or_path": "meta-llama/Llama-3.2-11B-Vision-Instruct", "revision": "c0ffee"}
        (tmp_path / row / "stage2" / "adapter_config.json").write_text(json.dumps(saved), encoding="utf-8")
    path, _ = ablation.write_eval_configs(tmp_path, grid)["role"]
    base = "hf:meta-llama/Llama-3.2-11B-Vision-Instruct+lora:"
    assert read_config(path)["model_args"] == [
        f"{base}{tmp_path / 'full' / 'stage2'}.revision=c0ffee",
        f"{base}{tmp_path / 'qlora' / 'stage2'}.revision=c0ffee",
        f"{base}{tmp_path / 'qlora' / 'stage2'}.quant=nf4",
    ]
