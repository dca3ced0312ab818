"""The CLI end to end, as a user runs it (a subprocess of the installed console script's module)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_slake, build_vqa_rad

TASKS = ["slake", "pathvqa", "vqa_rad", "rocov2"]


def medbench(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "medbench.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=300,
    )


def test_demo_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = medbench("run", "--output", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "data: demo" in result.stdout and "prior" in result.stdout and "rocov2" in result.stdout
    assert "samples/s" in result.stderr and "ETA" in result.stderr
    results = json.loads((out / "results.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert results["data"] == "demo" and run["status"] == "complete" and run["data"] == "demo"
    assert run["versions"]["numpy"] and run["config_sha256"] and "git" in run
    assert set(results["metrics"]) == {"prior", "yes"}
    for model in ("prior", "yes"):
        assert set(results["metrics"][model]) == set(TASKS)
        for task in TASKS:
            info = results["tasks"][task]
            assert info["data"]["source"] == "demo" and len(info["data"]["checksum"]) == 64
            rows = [json.loads(line) for line in (out / "predictions" / model / f"{task}.jsonl").open()]
            assert len(rows) == info["n_samples"] > 0
            assert {
                "id",
                "task",
                "model",
                "answer_type",
                "question",
                "reference",
                "prediction",
                "answer",
                "metadata",
                "scores",
            } <= set(rows[0])
    strict = results["metrics"]["yes"]["slake"]["strict"]
    for metric in ("closed_accuracy", "open_accuracy", "overall_accuracy"):
        entry = strict[metric]
        assert 0 <= entry["ci95"][0] <= entry["value"] <= entry["ci95"][1] <= 1
    # "yes" is right on exactly the closed questions whose gold is yes, and never on open ones.
    rows = [json.loads(line) for line in (out / "predictions" / "yes" / "slake.jsonl").open()]
    closed = [r for r in rows if r["answer_type"] == "closed"]
    expected = sum(r["reference"].strip().lower() == "yes" for r in closed) / len(closed)
    assert strict["closed_accuracy"]["value"] == pytest.approx(expected)
    assert strict["open_accuracy"]["value"] == 0.0
    assert set(results["metrics"]["prior"]["rocov2"]["caption"]) >= {"bleu", "bleu4_sentence", "token_recall", "rouge1"}
    assert set(results["metrics"]["prior"]["slake"]) == {"strict", "clinical", "llava-med", "multimedeval"}
    slake_groups = results["subgroups"]["prior"]["slake"]
    assert set(slake_groups) == {"modality", "location", "content_type"}
    assert sum(g["n"] for g in slake_groups["modality"]["groups"].values()) == results["tasks"]["slake"]["n_samples"]
    assert results["tasks"]["slake"]["closed_rule"]["rule"] == "yesno"


def test_run_on_data_dir_counts_skipped_samples(tmp_path: Path) -> None:
    build_slake(tmp_path / "data" / "slake")
    (tmp_path / "data" / "slake" / "imgs" / "xmlab1" / "source.jpg").write_bytes(b"corrupt")
    out = tmp_path / "run"
    result = medbench(
        "run",
        "--tasks",
        "slake",
        "--models",
        "prior",
        "--data-dir",
        str(tmp_path / "data"),
        "--output",
        str(out),
        "--closed-rule",
        "answer_type",
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    info = results["tasks"]["slake"]
    assert info["n_samples"] == 2 and info["skipped"]["count"] == 2  # qids 3 and 5 use the corrupt xmlab1
    assert all("xmlab1/source.jpg: image is corrupt" in s["reason"] for s in info["skipped"]["samples"])
    assert info["closed_rule"] == {"rule": "answer_type", "closed": 1, "open": 1, "fallback_to_yesno": 0}
    assert results["data"] == "user" and info["data"]["source"] == "local"


def test_limit(tmp_path: Path) -> None:
    result = medbench(
        "run", "--demo", "--tasks", "vqa_rad", "--models", "yes", "--limit", "3", "--output", str(tmp_path / "r")
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r" / "results.json").read_text())["tasks"]["vqa_rad"]["n_samples"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--tasks", "slak"], "unknown task 'slak'; known tasks:"),
        (["run", "--demo", "--models", "gpt5"], "unknown model 'gpt5'; known models:"),
        (["run", "--demo", "--limit", "0"], "argument --limit: must be a whole number >= 1"),
    ],
)
def test_bad_names_exit_2_with_a_clear_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = medbench(*args, "--output", str(tmp_path / "r"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unreadable_dataset_stops_with_exit_2(tmp_path: Path) -> None:
    root = build_vqa_rad(tmp_path / "data" / "vqa_rad")
    (root / "VQA_RAD Dataset Public.json").write_text("{not json")
    result = medbench(
        "run", "--tasks", "vqa_rad", "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "r")
    )
    assert result.returncode == 2
    assert "VQA_RAD Dataset Public.json: malformed JSON at line 1" in result.stderr


def test_all_images_broken_is_wholly_unreadable(tmp_path: Path) -> None:
    root = build_vqa_rad(tmp_path / "data" / "vqa_rad")
    for image in (root / "VQA_RAD Image Folder").iterdir():
        image.write_bytes(b"x")
    result = medbench(
        "run", "--tasks", "vqa_rad", "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "r")
    )
    assert result.returncode == 2 and "no usable samples" in result.stderr


def test_missing_data_dir_task_folder(tmp_path: Path) -> None:
    result = medbench("run", "--tasks", "rocov2", "--data-dir", str(tmp_path), "--output", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "no data found for task 'rocov2'" in result.stderr and "_captions.csv" in result.stderr


def test_list(tmp_path: Path) -> None:
    tasks = medbench("list", "tasks")
    models = medbench("list", "models")
    assert tasks.returncode == models.returncode == 0
    assert all(t in tasks.stdout for t in TASKS) and "prior" in models.stdout and "yes" in models.stdout


def test_data_fetch_offline_fails_clearly() -> None:
    result = medbench("data", "fetch", "--tasks", "vqa_rad", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "flaviagiammarino/vqa-rad" in result.stderr
