"""The results contract: typed results from medbench.evaluate, read back with load_run, comparability keys that
cover what decides the numbers and nothing operational, image references in prediction rows, old runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import medbench
from medbench.errors import DataError, UsageError
from medbench.results import SCHEMA_VERSION, RunResults, load_run

DEMO = {"demo": True, "resamples": 200}


def run(tmp_path: Path, name: str, **options: object) -> medbench.results.RunResults:
    merged = {**DEMO, "cache": tmp_path / "cache.sqlite", **options}
    return medbench.evaluate(["prior", "yes"], ["vqa_rad", "rocov2"], output=tmp_path / name, **merged)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunResults]:
    tmp = tmp_path_factory.mktemp("results")
    return tmp, run(tmp, "base")


def test_evaluate_returns_what_load_run_reads_back(base: tuple[Path, RunResults]) -> None:
    tmp, results = base
    again = load_run(tmp / "base")
    assert again.to_json() == results.to_json()
    entry = again.get("prior", "vqa_rad").metric("strict", "overall_accuracy")
    assert entry is not None and entry["n"] == 15
    doc = json.loads((tmp / "base" / "results.json").read_text())
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["metrics"]["prior"]["vqa_rad"]["strict"]["overall_accuracy"] == entry


def test_rows_are_read_lazily_with_a_locatable_image(base: tuple[Path, RunResults]) -> None:
    tmp, _ = base
    results = load_run(tmp / "base")
    rows = list(results.rows("yes", "vqa_rad"))
    assert len(rows) == 15
    image = rows[0]["image"]
    assert image["kind"] == "file" and image["path"].startswith("VQA_RAD Image Folder/")
    import hashlib

    from medbench.tasks.base import DEMO_ROOT

    data = (DEMO_ROOT / "vqa_rad" / image["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == image["sha256"]


def test_operational_settings_leave_the_comparability_key_alone(base: tuple[Path, RunResults]) -> None:
    tmp, results = base
    other = run(tmp, "other", batch_size=3, verify_images=False, no_cache=True)
    for model in ("prior", "yes"):
        for task in ("vqa_rad", "rocov2"):
            assert other.get(model, task).comparability == results.get(model, task).comparability


@pytest.mark.parametrize(
    ("option", "value", "setting"),
    [
        ("closed_rule", "answer_type", "closed_rule"),
        ("prompt", "generic", "prompt_sha256"),
        ("image_size", 256, "image_size"),
        ("limit", 5, "data_checksum"),
        ("seed", 3, "bootstrap"),
    ],
)
def test_settings_that_decide_numbers_change_the_key_and_are_named(
    base: tuple[Path, RunResults], option: str, value: object, setting: str
) -> None:
    tmp, results = base
    other = run(tmp, f"changed-{option}", **{option: value})
    ours, theirs = results.get("yes", "vqa_rad").comparability, other.get("yes", "vqa_rad").comparability
    assert ours.key != theirs.key
    assert setting in ours.differences(theirs)


def test_models_on_the_same_task_share_a_key(base: tuple[Path, RunResults]) -> None:
    _, results = base
    assert results.get("prior", "rocov2").comparability == results.get("yes", "rocov2").comparability


def test_an_old_run_without_schema_version_is_read_as_version_0(base: tuple[Path, RunResults], tmp_path: Path) -> None:
    source, _ = base
    doc = json.loads((source / "base" / "results.json").read_text())
    for key in ("schema_version", "comparability"):
        doc.pop(key)
    (tmp_path / "results.json").write_text(json.dumps(doc))
    old = load_run(tmp_path)
    assert old.header["upgraded_from"] == 0
    assert old.get("yes", "vqa_rad").metrics == doc["metrics"]["yes"]["vqa_rad"]
    assert old.get("yes", "vqa_rad").comparability.key == ""  # unknown, never guessed


def test_unreadable_runs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no results\.json"):
        load_run(tmp_path)
    (tmp_path / "results.json").write_text('{"schema_version": 99, "metrics": {}, "tasks": {}}')
    with pytest.raises(DataError, match="newer than this medbench reads"):
        load_run(tmp_path)
    (tmp_path / "results.json").write_text("{truncated")
    with pytest.raises(DataError, match="cannot be read as JSON"):
        load_run(tmp_path)


def test_evaluate_refuses_unknown_options(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"unknown option.*closed_rul"):
        medbench.evaluate(["yes"], ["vqa_rad"], demo=True, closed_rul="yesno", output=tmp_path / "x")


def test_a_long_model_name_makes_a_short_distinct_folder_name() -> None:
    # Guards `medbench run` with adapters at long absolute paths: the report's A~vs~B folder name passed 255 bytes.
    from medbench.results import SAFE_NAME_MAX, safe_name

    stem = "hf:/tmp/" + "x" * 150 + "/base+lora:/tmp/" + "y" * 150
    a, b = safe_name(stem + "/stage2"), safe_name(stem + "/stage3")
    assert len(a) <= SAFE_NAME_MAX and len(b) <= SAFE_NAME_MAX and a != b
    assert len(f"{a}~vs~{b}".encode()) < 255
    assert safe_name("hf:/x/y+lora:z") == "hf__x_y+lora_z"  # short names unchanged
