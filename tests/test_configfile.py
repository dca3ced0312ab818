"""``medbench run --config FILE``: the same keys as the flags, flags override, every mistake named with its file
and key, and the resolved config split into what decides the numbers (hashed) and runtime options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medbench.cli import main


def medbench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "eval.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_config_file_runs_and_flags_override_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config(
        tmp_path,
        f"""
models = ["yes"]
tasks = "vqa_rad,slake"
demo = true
limit = 4
resamples = 50
closed-rule = "answer_type"
cache = "{tmp_path / "cache.sqlite"}"
""",
    )
    code, err = medbench(capsys, "run", "--config", str(path), "--limit", "3", "--output", str(tmp_path / "r"))
    assert code == 0, err
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    numbers = record["config"]["numbers"]
    assert numbers["models"] == ["yes"] and numbers["tasks"] == ["vqa_rad", "slake"]
    assert numbers["limit"] == 3  # the flag wins over the file's 4
    assert numbers["closed_rule"] == "answer_type" and numbers["resamples"] == 50
    assert record["config"]["runtime"]["config_file"] == str(path)
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["tasks"]["vqa_rad"]["n_samples"] == 3


def test_config_sha256_covers_numbers_not_runtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["run", "--demo", "--models", "yes", "--tasks", "vqa_rad", "--resamples", "50"]
    runs = {
        "a": [*base, "--output", str(tmp_path / "a")],
        "b": [*base, "--output", str(tmp_path / "b"), "--batch-size", "3", "--no-cache"],
        "c": [*base, "--output", str(tmp_path / "c"), "--closed-rule", "answer_type"],
    }
    hashes = {}
    for name, argv in runs.items():
        assert medbench(capsys, *argv)[0] == 0
        hashes[name] = json.loads((tmp_path / name / "run.json").read_text())["config_sha256"]
    assert hashes["a"] == hashes["b"] != hashes["c"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("closed_rul = 'yesno'", "unknown key 'closed_rul'; allowed keys: models, tasks"),
        ("limit = 'ten'", "limit must be a whole number >= 1, not 'ten'"),
        ("demo = 1", "demo must be true or false, not 1"),
        ("resamples = true", "resamples must be a whole number >= 1, not True"),
        ("closed_rule = 'closed'", "closed_rule must be one of yesno, answer_type"),
        ("models = ['gpt5']", "models: unknown model 'gpt5'"),
        ("tasks = 'slak'", "tasks: unknown task 'slak'"),
        ("models = [1, 2]", "models must be a list of model names"),
        ("[model_args]\nyes = 3", "model_args.yes must be a table"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_mistakes_in_the_file_name_the_file_and_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = config(tmp_path, text)
    code, err = medbench(capsys, "run", "--config", str(path), "--output", str(tmp_path / "r"))
    assert code == 2
    assert str(path) in err and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_a_missing_config_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = medbench(capsys, "run", "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "cannot be read" in err
