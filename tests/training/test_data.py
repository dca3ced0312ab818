"""Training data from the task plugins' train splits: every train sample, the evaluation's prompts, a seeded
epoch order that a resumed run replays, content checksums, and unreadable images skipped and counted."""

from __future__ import annotations

import shutil
from pathlib import Path

from medbench.prompts import render_prompt
from medbench.registry import get_task
from medbench.tasks.base import DEMO_ROOT, LoadOptions, locate
from medbench.training.config import TrainConfig
from medbench.training.data import batches, epoch_order, load_examples


def test_stage2_mixes_every_train_sample_of_the_three_sets_with_the_evaluation_prompts() -> None:
    data = load_examples(TrainConfig.load("stage2", ["data.demo=true"]))
    for name in ("slake", "vqa_rad", "pathvqa"):
        task = get_task(name)
        expected = task.load(locate(task, "train", data_dir=None, demo=True), "train", LoadOptions(full=True)).samples
        mine = [e for e in data.examples if e.task == name]
        assert [e.id for e in mine] == [s.id for s in expected] and data.info[name]["n_samples"] == len(expected)
        for example, sample in zip(mine, expected, strict=True):
            assert (
                example.prompt == render_prompt("role", "vqa", sample.question) and example.answer == sample.reference
            )
    generic = load_examples(TrainConfig.load("stage2", ["data.demo=true", "data.prompt=generic", "data.limit=2"]))
    assert len(generic.examples) == 6  # data.limit: the first 2 of each task
    questions = {(s.task, s.id): s.question for s in _train("slake") + _train("vqa_rad") + _train("pathvqa")}
    for example in generic.examples:
        assert example.prompt == render_prompt("generic", "vqa", questions[(example.task, example.id)])
        assert example.prompt != render_prompt("role", "vqa", questions[(example.task, example.id)])


def _train(name: str) -> list:
    task = get_task(name)
    return task.load(locate(task, "train", data_dir=None, demo=True), "train", LoadOptions(full=True)).samples


def test_epoch_order_is_a_seeded_permutation_per_epoch() -> None:
    first, again, second = epoch_order(50, 0, 0), epoch_order(50, 0, 0), epoch_order(50, 0, 1)
    assert first == again and sorted(first) == list(range(50)) and first != second
    assert epoch_order(50, 1, 0) != first
    assert batches(first, 8)[-1] == first[48:] and sum(len(b) for b in batches(first, 8)) == 50


def test_the_checksum_covers_image_bytes_and_a_broken_image_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(DEMO_ROOT / "slake", root / "slake")
    config = ["data.tasks=slake", f"data.data_dir={root}"]
    before = load_examples(TrainConfig.load("stage2", config))
    victim = before.examples[0].image.path
    Path(victim).write_bytes(b"not an image")
    after = load_examples(TrainConfig.load("stage2", config))
    assert after.info["slake"]["data"]["checksum"] != before.info["slake"]["data"]["checksum"]
    gone = [e.id for e in before.examples if e.image.path == victim]
    assert [e.id for e in after.examples] == [e.id for e in before.examples if e.id not in gone]
    assert after.info["slake"]["skipped"]["count"] == len(gone) > 0
