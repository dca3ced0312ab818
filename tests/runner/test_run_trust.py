"""``medbench run`` never serves a stale number, never loses a row silently, and refuses bad options cleanly.

In-process runs on a copy of the demo set with the ``imgecho`` model (its answer is a hash of the image it was
shown), so each test can see exactly which image bytes produced which prediction.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runkit import data_dir, imgecho, medbench, read_json, rows  # noqa: F401 (fixtures, see runkit)

IMAGES = "VQA_RAD Image Folder"
Run = Callable[..., tuple[int, str]]


def bmp(seed: int) -> bytes:
    """An uncompressed image: every one of the same dimensions has the same file size."""
    pixels = np.random.default_rng(seed).integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="BMP")
    return buf.getvalue()


def test_swapping_two_same_size_images_regenerates_their_samples(
    medbench: Run, imgecho: type, data_dir: Path, tmp_path: Path
) -> None:
    # Guards: the cache key and the data checksum covered (path, size) of image files, not their bytes.
    one, two = data_dir / "vqa_rad" / IMAGES / "synpic90001.jpg", data_dir / "vqa_rad" / IMAGES / "synpic90002.jpg"
    one.write_bytes(bmp(1))
    two.write_bytes(bmp(2))
    assert one.stat().st_size == two.stat().st_size
    args = ["run", "--models", "imgecho", "--tasks", "vqa_rad", "--data-dir", str(data_dir)]
    assert medbench(*args, "--output", str(tmp_path / "a"))[0] == 0
    one.write_bytes(bmp(2))
    two.write_bytes(bmp(1))
    assert medbench(*args, "--output", str(tmp_path / "b"))[0] == 0
    assert medbench(*args, "--no-cache", "--output", str(tmp_path / "fresh"))[0] == 0

    first, second = read_json(tmp_path / "a" / "results.json"), read_json(tmp_path / "b" / "results.json")
    assert first["tasks"]["vqa_rad"]["data"]["checksum"] != second["tasks"]["vqa_rad"]["data"]["checksum"]
    assert (
        first["tasks"]["vqa_rad"]["data"]["annotations_sha256"]
        == second["tasks"]["vqa_rad"]["data"]["annotations_sha256"]
    )
    swapped = {
        r["id"] for r in rows(tmp_path / "a", "imgecho", "vqa_rad") if r["metadata"]["image_id"] != "synpic90003.jpg"
    }
    counts = read_json(tmp_path / "b" / "run.json")["counts"]["imgecho"]["vqa_rad"]
    assert counts["generated"] == len(swapped) > 0  # exactly the samples of the two swapped images
    assert rows(tmp_path / "b", "imgecho", "vqa_rad") == rows(tmp_path / "fresh", "imgecho", "vqa_rad")
    before = {r["id"]: r["prediction"] for r in rows(tmp_path / "a", "imgecho", "vqa_rad")}
    after = {r["id"]: r["prediction"] for r in rows(tmp_path / "b", "imgecho", "vqa_rad")}
    assert {i for i in before if before[i] != after[i]} == swapped


def test_each_distinct_image_is_decoded_once(medbench: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Guards: images were decoded once per sample (PathVQA: 858 images decoded 6,719 times).
    import medbench.preparation as preparation

    decoded: list[str] = []
    real = preparation.decode_image

    def counting(data: bytes, *, where: str, size: int | None) -> Image.Image:
        decoded.append(where)
        return real(data, where=where, size=size)

    monkeypatch.setattr(preparation, "decode_image", counting)
    assert medbench("run", "--demo", "--models", "yes", "--tasks", "pathvqa", "--output", str(tmp_path / "r"))[0] == 0
    results = read_json(tmp_path / "r" / "results.json")
    assert results["tasks"]["pathvqa"]["n_samples"] > results["tasks"]["pathvqa"]["data"]["images"]
    assert sorted(decoded) == sorted(set(decoded))
    assert len(decoded) == results["tasks"]["pathvqa"]["data"]["images"]


@pytest.mark.parametrize(
    ("option", "value"),
    [("--resamples", "0"), ("--resamples", "-1"), ("--seed", "-1"), ("--image-size", "-5"), ("--batch-size", "0")],
)
def test_bad_option_values_exit_2_naming_the_option(medbench: Run, tmp_path: Path, option: str, value: str) -> None:
    code, err = medbench("run", "--demo", option, value, "--output", str(tmp_path / "r"))
    assert code == 2
    assert option in err and "Traceback" not in err
    assert not (tmp_path / "r" / "results.json").exists()


@pytest.mark.parametrize(("option", "value"), [("--resamples", "0"), ("--seed", "-1")])
def test_score_refuses_bad_option_values(
    medbench: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    assert medbench("run", "--demo", "--models", "yes", "--tasks", "vqa_rad", "--output", str(tmp_path / "r"))[0] == 0
    code, err = medbench("score", str(tmp_path / "r" / "predictions" / "yes" / "vqa_rad.jsonl"), option, value)
    assert code == 2 and option in err


def test_a_failed_run_says_so_in_run_json(medbench: Run, tmp_path: Path, data_dir: Path) -> None:
    # Guards: a run that stopped with an error stayed "running" in run.json.
    (data_dir / "vqa_rad" / "VQA_RAD Dataset Public.json").write_text("[{not json", encoding="utf-8")
    code, err = medbench(
        "run", "--models", "yes", "--tasks", "vqa_rad", "--data-dir", str(data_dir), "--output", str(tmp_path / "r")
    )
    assert code == 2 and "malformed JSON" in err
    record = read_json(tmp_path / "r" / "run.json")
    assert record["status"] == "failed"
    assert "malformed JSON" in record["error"]


def test_prior_with_an_empty_training_split_exits_2(medbench: Run, tmp_path: Path, data_dir: Path) -> None:
    # Guards: a ValueError traceback after the test split had been loaded and checked.
    (data_dir / "slake" / "train.json").write_text("[]", encoding="utf-8")
    code, err = medbench(
        "run", "--models", "prior", "--tasks", "slake", "--data-dir", str(data_dir), "--output", str(tmp_path / "r")
    )  # fmt: skip
    assert code == 2
    assert "training split" in err and "Traceback" not in err
    assert read_json(tmp_path / "r" / "run.json")["status"] == "failed"


def test_decompression_bomb_is_skipped_and_counted(
    medbench: Run, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Guards: PIL's DecompressionBombError (not an OSError) escaped as a traceback.
    big = data_dir / "vqa_rad" / IMAGES / "synpic90001.jpg"
    Image.new("RGB", (1000, 1000)).save(big, format="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # 1M pixels > 2 x 100k (demo images: <= 65,536)
    code, err = medbench(
        "run", "--models", "yes", "--tasks", "vqa_rad", "--data-dir", str(data_dir), "--output", str(tmp_path / "r")
    )
    assert code == 0, err
    skipped = read_json(tmp_path / "r" / "results.json")["tasks"]["vqa_rad"]["skipped"]
    assert skipped["count"] > 0
    assert all("decompression bomb" in s["reason"] for s in skipped["samples"])


def test_no_verify_images_still_skips_and_counts_unreadable_images(
    medbench: Run, imgecho: type, tmp_path: Path, data_dir: Path
) -> None:
    folder = data_dir / "vqa_rad" / IMAGES
    (folder / "synpic90001.jpg").unlink()  # unreadable: found when its bytes are hashed
    (folder / "synpic90002.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")  # readable, fails to decode
    code, err = medbench(
        "run", "--models", "imgecho", "--tasks", "vqa_rad", "--data-dir", str(data_dir),
        "--no-verify-images", "--output", str(tmp_path / "r"),
    )  # fmt: skip
    assert code == 0, err
    results = read_json(tmp_path / "r" / "results.json")
    info, counts = results["tasks"]["vqa_rad"], results["counts"]["imgecho"]["vqa_rad"]
    predicted = rows(tmp_path / "r", "imgecho", "vqa_rad")
    assert {r["metadata"]["image_id"] for r in predicted} == {"synpic90003.jpg"}
    assert counts["generation_failed"] > 0 and info["skipped"]["count"] > 0
    # Every loaded sample is either predicted or skipped, with its reason.
    assert len(predicted) + counts["skipped"] == 15  # the demo's VQA-RAD test questions
    assert all("corrupt" in s["reason"] for s in counts["generation_failures"])


def test_batch_size_is_honoured(medbench: Run, imgecho: type, tmp_path: Path) -> None:
    # Guards: --batch-size N was capped at the adapter's default batch size.
    assert imgecho.batch_size == 2
    code, _ = medbench(
        "run", "--demo", "--models", "imgecho", "--tasks", "slake", "--batch-size", "5", "--output", str(tmp_path / "r")
    )
    assert code == 0
    assert max(imgecho.batches) == 5


def test_reusing_an_output_folder_leaves_no_other_runs_records(medbench: Run, tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert medbench("run", "--demo", "--models", "prior,yes", "--tasks", "slake", "--output", str(out))[0] == 0
    assert (out / "predictions" / "prior").is_dir()
    assert medbench("run", "--demo", "--models", "yes", "--tasks", "slake", "--output", str(out))[0] == 0
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["yes"]
    assert list(read_json(out / "results.json")["metrics"]) == ["yes"]
    assert read_json(out / "run.json")["replaced_previous_run"]["status"] == "complete"


def test_an_output_folder_that_is_not_a_run_is_refused(medbench: Run, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, err = medbench("run", "--demo", "--models", "yes", "--output", str(out))
    assert code == 2 and "not empty" in err
    assert (out / "notes.txt").read_text() == "keep me"


def test_two_runs_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    from datetime import datetime

    from medbench.api import new_run_dir

    now = datetime(2026, 12, 1, 12, 0, 0)
    first, second = new_run_dir(tmp_path, now), new_run_dir(tmp_path, now)
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name == first.name + "-2"


def test_run_json_records_thread_settings(medbench: Run, tmp_path: Path) -> None:
    assert medbench("run", "--demo", "--models", "yes", "--tasks", "vqa_rad", "--output", str(tmp_path / "r"))[0] == 0
    threads = read_json(tmp_path / "r" / "run.json")["threads"]
    assert "OMP_NUM_THREADS" in threads and threads["cpu_count"]


def test_answer_type_fallback_is_warned_on_screen(medbench: Run, tmp_path: Path) -> None:
    # PathVQA has no answer_type labels: every question falls back to the yes/no rule.
    code, err = medbench(
        "run", "--demo", "--models", "yes", "--tasks", "pathvqa", "--closed-rule", "answer_type",
        "--output", str(tmp_path / "r"),
    )  # fmt: skip
    assert code == 0
    assert "warning" in err and "yes/no rule" in err


def test_long_model_names_are_not_truncated_into_ambiguity() -> None:
    from rich.console import Console

    from medbench.console import print_results
    from medbench.results import RunResults

    names = ["hf:/tmp/checkpoints/run-2026-11-30/final-one", "hf:/tmp/checkpoints/run-2026-11-30/final-two"]
    entry = {"value": 0.5, "ci95": [0.4, 0.6]}
    vqa = {"closed_accuracy": entry, "open_accuracy": entry, "overall_accuracy": entry}
    results = {
        "data": "user",
        "headline_protocol": "strict",
        "closed_rule": "yesno",
        "headline": {"slake": "strict"},
        "tasks": {"slake": {"kind": "vqa", "n_samples": 3, "skipped": {"count": 0}}},
        "metrics": {name: {"slake": {"strict": vqa}} for name in names},
    }
    console = Console(width=80, record=True, color_system=None)
    print_results(RunResults.from_json(results), console)
    text = console.export_text()
    assert "…" not in text
    # Folded cells continue on the next lines: the model column, read top to bottom, holds both names in full.
    column = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│"))
    assert all(name in column for name in names)


def test_model_configuration_errors_come_before_any_task_is_loaded(
    medbench: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Guards: models were built only after every task had been loaded and its images checked (67 s on real data
    # before "adapter not found").
    pytest.importorskip("transformers")
    import json

    import medbench.runner as runner

    loaded: list[str] = []
    monkeypatch.setattr(runner, "prepare_task", lambda name, *a, **k: loaded.append(name))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "mllama"}))
    code, err = medbench(
        "run", "--demo", "--models", f"hf:{model}+lora:{tmp_path / 'no-adapter'}", "--output", str(tmp_path / "r")
    )
    assert code == 2 and "Traceback" not in err
    assert loaded == []


def test_an_empty_bertscore_column_says_why() -> None:
    # Guards: without the hf extra the column was empty with no word of why (and rich ate "[hf]" as markup).
    from rich.console import Console

    from medbench.console import print_results
    from medbench.results import RunResults

    entry = {"value": 0.1, "ci95": [0.0, 0.2], "n": 2}
    results = {
        "data": "demo",
        "headline_protocol": "strict",
        "headline": {"rocov2": "caption"},
        "tasks": {"rocov2": {"kind": "caption", "n_samples": 2, "skipped": {"count": 0}}},
        "metrics": {"yes": {"rocov2": {"caption": {"bleu": entry}}}},
        "scoring": {
            "bertscore": {"model": None, "origin": "bert-score/torch not installed (pip install 'medbench[hf]')"}
        },
    }
    console = Console(width=200, record=True, color_system=None)
    print_results(RunResults.from_json(results), console)
    assert (
        "bertscore: not computed — bert-score/torch not installed (pip install 'medbench[hf]')" in console.export_text()
    )
