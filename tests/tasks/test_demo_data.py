"""The bundled demo set (tasks/demo, built by scripts/build_demo_data.py): its splits must not share test items.

Guards issue 9 item 11: 12 of the 14 PathVQA demo test questions were also in the demo train split, so the
question-only ``prior`` baseline scored 92.9% there; SLAKE, VQA-RAD and ROCOv2 shared (image, question) pairs
or images between train and test.
"""

from __future__ import annotations

import hashlib
from itertools import combinations

import pytest

from medbench.models.baselines import question_key
from medbench.registry import get_task
from medbench.schema import Sample
from medbench.tasks.base import LoadOptions, locate

TASKS = ("slake", "vqa_rad", "pathvqa", "rocov2")
#: Test-split sizes of the demo set; the splits were made disjoint without changing them.
TEST_SIZES = {"slake": 16, "vqa_rad": 15, "pathvqa": 14, "rocov2": 6}


def demo_split(task: str, split: str) -> list[Sample]:
    plugin = get_task(task)
    loaded = plugin.load(locate(plugin, split, data_dir=None, demo=True), split, LoadOptions(full=True))
    assert loaded.skipped == [], [s.reason for s in loaded.skipped]
    return loaded.samples


def pairs(samples: list[Sample]) -> set[tuple[str, str]]:
    """(sha256 of the image bytes, question as the prior baseline looks it up); captions have no question, so
    for ROCOv2 this is the set of images."""
    return {(hashlib.sha256(s.image.read_bytes()).hexdigest(), question_key(s.question or "")) for s in samples}


@pytest.mark.parametrize("task", TASKS)
def test_demo_splits_share_no_image_question_pair(task: str) -> None:
    splits = {split: pairs(demo_split(task, split)) for split in get_task(task).splits}
    assert all(splits.values())
    for a, b in combinations(splits, 2):
        assert not splits[a] & splits[b], f"{task}: {a} and {b} share {sorted(splits[a] & splits[b])}"


def test_pathvqa_demo_test_questions_are_not_asked_in_training() -> None:
    """PathVQA's demo images are all crops of two pictures, so a test question asked of another crop of the
    same picture in train is the same item: no test question may occur in train or validation."""
    test = {question_key(s.question or "") for s in demo_split("pathvqa", "test")}
    for split in ("train", "validation"):
        assert not test & {question_key(s.question or "") for s in demo_split("pathvqa", split)}


@pytest.mark.parametrize("task", TASKS)
def test_demo_test_sizes_are_unchanged(task: str) -> None:
    assert len(demo_split(task, "test")) == TEST_SIZES[task]
