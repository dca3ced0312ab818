"""Every loader, every layout: no row is lost without being counted (issue 9, items 3, 4, 5, 8, 9).

Each case writes a dataset in one layout with bad rows mixed in and checks that
``rows_read == samples + skipped + sum(dropped)``, that each skip names its file and row, and that the reasons
are the same on a second load and hold no memory address (they go into results.json).
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PATH_QAS,
    RAD_IMAGES,
    RAD_RECORDS,
    SLAKE_TEST,
    build_pathvqa,
    build_rocov2,
    build_slake,
    build_vqa_rad,
    image_bytes,
    load_split,
    rad_record,
    slake_record,
    write_mirror_parquet,
)

from medbench.tasks.rocov2 import SUBSET_SIZE


@dataclass
class Case:
    """A dataset written with bad rows, and what its load must account for."""

    task: str
    root: Path
    rows: int  # rows in the annotation file / mirror split, as written
    skipped: int  # how many of them are bad
    dropped: dict[str, int]
    options: dict[str, Any] = field(default_factory=dict)


# --- SLAKE: JSON with an images folder, or the hub mirror's imgs.zip -------------------------------------------
SLAKE_BAD = [
    "not a record",
    42,
    slake_record(20, 0, "Which organ?", ["Lung", "Heart"]),  # type: ignore[arg-type]
    slake_record(21, 0, "Is this normal?", True),  # type: ignore[arg-type]
    slake_record(22, 0, {"text": "Which organ?"}, "Lung"),  # type: ignore[arg-type]
    {**slake_record(23, 0, "Which organ?", "Lung"), "qid": ""},
    {**slake_record(24, 0, "Which organ?", "Lung"), "qid": "   "},
    {**slake_record(25, 0, "Which organ?", "Lung"), "qid": [25]},
    slake_record(26, 9, "Which organ?", "Lung"),  # image xmlab9 does not exist
    {**slake_record(27, 0, "Which organ?", "Lung"), "q_lang": ["en"]},
]
SLAKE_GOOD_EXTRA = [slake_record(30, 0, "How many lungs?", 2), slake_record(31, 1, "How many?", 2.0)]  # type: ignore[arg-type]


def slake_case(root: Path, *, zipped: bool) -> Case:
    test = [*SLAKE_TEST, *SLAKE_BAD, *SLAKE_GOOD_EXTRA]
    build_slake(root, zipped=zipped, test=test)
    return Case("slake", root, len(test), len(SLAKE_BAD), {"non_english": 1})


# --- VQA-RAD: original JSON + folder, the mirror, and the mirror joined with the JSON --------------------------
RAD_BAD = [
    "not a record",
    [1, 2],
    {
        k: v
        for k, v in rad_record(40, "synpic100.jpg", "Is it?", "Yes", "test_freeform", "CLOSED").items()
        if k != "phrase_type"
    },
    rad_record(41, "synpic100.jpg", "Is it?", "Yes", "test_bogus", "CLOSED"),
    rad_record(42, "synpic100.jpg", "How many?", ["2"], "test_freeform", "OPEN"),  # type: ignore[arg-type]
    {**rad_record(43, "synpic100.jpg", "Is it?", "Yes", "test_para", "CLOSED"), "qid": ""},
    rad_record(44, "synpic999.jpg", "Is it?", "Yes", "test_para", "CLOSED"),  # no such image
]
RAD_GOOD_EXTRA = [rad_record(45, "synpic200.jpg", "How many lesions?", 2, "test_freeform", "OPEN")]  # type: ignore[arg-type]


def rad_original_case(root: Path) -> Case:
    build_vqa_rad(root)
    records = [*RAD_RECORDS, *RAD_BAD, *RAD_GOOD_EXTRA]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(records))
    other = sum(1 for r in RAD_RECORDS if r["phrase_type"] in ("freeform", "para"))
    return Case("vqa_rad", root, len(records), len(RAD_BAD), {"other_split": other})


def write_rad_mirror_with_bad_rows(root: Path) -> int:
    """The test shard of the mirror, plus rows without a question, an answer or image bytes; returns the
    number of bad rows."""
    rows = [r for r in RAD_RECORDS if r["phrase_type"].startswith("test_")]
    questions: list[str | None] = [r["question"].lower() for r in rows] + [None, "is it?", "is it?"]
    answers: list[str | None] = [r["answer"].lower() for r in rows] + ["yes", "  ", "yes"]
    images: list[tuple[str, bytes | None]] = [(r["image_name"], image_bytes(RAD_IMAGES[r["image_name"]])) for r in rows]
    images += [("a.jpg", image_bytes(1)), ("b.jpg", image_bytes(2)), ("c.jpg", None)]
    write_mirror_parquet(
        root / "data" / "test-00000-of-00001.parquet", {"question": questions, "answer": answers}, images
    )
    return 3


def rad_mirror_case(root: Path) -> Case:
    root.mkdir(parents=True)
    bad = write_rad_mirror_with_bad_rows(root)
    return Case("vqa_rad", root, 3 + bad, bad, {})


def rad_joined_case(root: Path) -> Case:
    rad_original_case(root)
    bad = write_rad_mirror_with_bad_rows(root)
    return Case("vqa_rad", root, 3 + bad, bad, {}, {"closed_rule": "answer_type"})


# --- PathVQA: pickle + images folder, or the mirror -----------------------------------------------------------
PATH_BAD = [
    "not a dict",
    {"image": "test_0001", "question": "What is present?", "answer": ["neutrophils"]},
    {"image": "test_0001", "question": False, "answer": "no"},
    {"image": "test_0404", "question": "Is this normal?", "answer": "no"},  # no such image
    {"image": ["test_0001"], "question": "Is this normal?", "answer": "no"},
]
# Equal to a PATH_QAS row after lowercasing, but not exactly: kept (the mirror keeps it too).
PATH_CASE_VARIANT = {"image": "test_0001", "question": "What is PRESENT?", "answer": "Neutrophils"}


def path_original_case(root: Path) -> Case:
    build_pathvqa(root)
    rows = [*PATH_QAS["test"], *PATH_BAD, PATH_CASE_VARIANT]
    (root / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps(rows))
    return Case("pathvqa", root, len(rows), len(PATH_BAD), {"exact_duplicates": 1})


def path_mirror_case(root: Path) -> Case:
    build_pathvqa(root, mirror=True)
    questions = ["Is it inflamed?", None, "What is present?"]
    answers = ["yes", "no", "neutrophils"]
    images: list[tuple[str, bytes | None]] = [("x.jpg", image_bytes(4)), ("y.jpg", image_bytes(4)), ("z.jpg", None)]
    shard = root / "data" / "test-00000-of-00001-x.parquet"
    good = 3  # the unique PATH_QAS test rows the builder wrote
    shard.unlink()
    unique = [dict(t) for t in dict.fromkeys(tuple(sorted(r.items())) for r in PATH_QAS["test"])]
    seeds = {"test_0001": 4, "test_0002": 5}
    write_mirror_parquet(
        shard,
        {"question": [r["question"] for r in unique] + questions, "answer": [r["answer"] for r in unique] + answers},
        [(f"img_{i}.jpg", image_bytes(seeds[r["image"]])) for i, r in enumerate(unique)] + images,
    )
    return Case("pathvqa", root, good + 3, 2, {"exact_duplicates": 0})


# --- ROCOv2: CSV + images folder (paper subset or --full), or the mirror ----------------------------------------
ROCO_BAD_LINES = [
    b'ROCOv2_2023_test_000050,"Caption with a stray quote',
    b"ROCOv2_2023_test_000051,Caption with a bad byte \xe9 here",
    b"ROCOv2_2023_test_000052,one,too many",
    b",Caption without an ID",
    b"   ,Caption with a blank ID",
    b"ROCOv2_2023_test_000001,A second row with the first row's ID",
    b"../../etc/passwd,Caption",
    b"ROCOv2_2023_test_000053,",
    b"ROCOv2_2023_test_000054,Caption whose image is missing",
]


def roco_csv_case(root: Path, *, extra: int = 0, full: bool = False) -> Case:
    build_rocov2(root, extra_test=extra)
    with (root / "test_captions.csv").open("ab") as fh:
        fh.write(b"\r\n".join(ROCO_BAD_LINES) + b"\r\n\r\n")  # and a blank line, which is no row
    good = 2 + extra
    dropped = {} if full else {"not_in_paper_subset": max(0, good - SUBSET_SIZE)}
    return Case("rocov2", root, good + len(ROCO_BAD_LINES), len(ROCO_BAD_LINES), dropped, {"full": full})


def roco_mirror_case(root: Path) -> Case:
    root.mkdir(parents=True)
    ids: list[str | None] = ["ROCOv2_2023_test_000001", "ROCOv2_2023_test_000002", None, "", "ROCOv2_2023_test_000001"]
    ids += ["ROCOv2_2023_test_000003", "ROCOv2_2023_test_000004"]
    captions: list[str | None] = ["Chest X-ray.", "Axial CT.", "No ID.", "Empty ID.", "Repeated ID.", "  ", "No image."]
    images: list[tuple[str, bytes | None]] = [(f"{n}.png", image_bytes(n, "PNG")) for n in range(6)] + [("x", None)]
    write_mirror_parquet(
        root / "data" / "test-00000-of-00001.parquet",
        {"image_id": ids, "caption": captions, "cui": [["C0000001"] for _ in ids]},
        images,
    )
    return Case("rocov2", root, 7, 5, {"not_in_paper_subset": 0})


LAYOUTS: dict[str, Callable[[Path], Case]] = {
    "slake-json-folder": lambda root: slake_case(root, zipped=False),
    "slake-json-zip": lambda root: slake_case(root, zipped=True),
    "vqa_rad-original": rad_original_case,
    "vqa_rad-mirror": rad_mirror_case,
    "vqa_rad-joined": rad_joined_case,
    "pathvqa-pkl": path_original_case,
    "pathvqa-mirror": path_mirror_case,
    "rocov2-csv-subset": lambda root: roco_csv_case(root, extra=SUBSET_SIZE + 3),
    "rocov2-csv-full": lambda root: roco_csv_case(root, extra=SUBSET_SIZE + 3, full=True),
    "rocov2-csv-small": roco_csv_case,
    "rocov2-mirror": roco_mirror_case,
}
# A skip's ``where``: ``file[index]`` (JSON, pickle), ``file:line`` (CSV), ``file row n`` (parquet).
WHERE = re.compile(r"^\S.*(\.json\[\d+\]|\.pkl\[\d+\]|\.csv:\d+|\.parquet row \d+)$")
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}|object at ")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_row_is_a_sample_a_skip_or_a_counted_drop(tmp_path: Path, layout: str) -> None:
    case = LAYOUTS[layout](tmp_path / "data")
    split = load_split(case.task, case.root, **case.options)
    notes = split.notes
    assert notes["rows_read"] == case.rows
    assert notes["dropped"] == case.dropped
    assert notes["rows_read"] == len(split.samples) + len(split.skipped) + sum(notes["dropped"].values())
    assert len(split.skipped) == case.skipped, [s.reason for s in split.skipped]
    for skip in split.skipped:
        assert WHERE.match(skip.where), skip.where
        assert skip.where in skip.reason, (skip.where, skip.reason)
    assert len({s.id for s in split.samples}) == len(split.samples)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_skip_reasons_are_deterministic_and_hold_no_addresses(tmp_path: Path, layout: str) -> None:
    """Two loads of the same files give the same skip entries, so results.json is reproducible."""
    case = LAYOUTS[layout](tmp_path / "data")
    first = load_split(case.task, case.root, **case.options)
    second = load_split(case.task, case.root, **case.options)
    assert [s.as_dict() for s in first.skipped] == [s.as_dict() for s in second.skipped]
    assert [s.id for s in first.samples] == [s.id for s in second.samples]
    for skip in first.skipped:
        assert not ADDRESS.search(skip.reason), skip.reason


def test_slake_numbers_become_text_and_other_types_are_refused(tmp_path: Path) -> None:
    """Guards item 5: a list answer used to become the answer "['Lung', 'Heart']", True became "True", and an
    empty qid was accepted as the id ""."""
    split = load_split("slake", slake_case(tmp_path / "slake", zipped=False).root)
    by_id = {s.id: s.reference for s in split.samples}
    assert by_id["30"] == "2" and by_id["31"] == "2"
    reasons = {s.where.rsplit("[", 1)[1].rstrip("]"): s.reason for s in split.skipped}
    first_bad = len(SLAKE_TEST)
    expected = [
        "expected an object, found a string",
        "expected an object, found a number",
        "answer is a list, expected text or a number",
        "answer is a boolean, expected text or a number",
        "question is an object, expected text or a number",
        "qid is empty",
        "qid is empty",
        "qid is a list",
        "xmlab9/source.jpg is missing",
        "q_lang is a list",
    ]
    for offset, text in enumerate(expected):
        assert text in reasons[str(first_bad + offset)], reasons[str(first_bad + offset)]


def test_vqa_rad_rows_without_a_split_are_skipped_not_dropped(tmp_path: Path) -> None:
    """Guards item 3: non-object rows and a test row without phrase_type used to vanish from both splits."""
    root = rad_original_case(tmp_path / "rad").root
    test = load_split("vqa_rad", root)
    train = load_split("vqa_rad", root, "train")
    for split in (test, train):
        reasons = [s.reason for s in split.skipped]
        assert any("expected an object, found a string" in r for r in reasons)
        assert any("expected an object, found a list" in r for r in reasons)
        assert any("phrase_type is missing, so the row's split is unknown" in r for r in reasons)
        assert any("phrase_type 'test_bogus' is unknown" in r for r in reasons)
    assert len(train.skipped) == 4 and train.notes["dropped"] == {"other_split": 3 + 3 + 1}
    test_by_id = {s.id: s.reference for s in test.samples}
    assert test_by_id["45"] == "2"  # a JSON integer answer, as LLaVA-Med's loader turns it into text
    assert any("answer is a list" in s.reason for s in test.skipped)
    assert any("qid is empty" in s.reason for s in test.skipped)


def test_image_decode_reasons_hold_no_address() -> None:
    from medbench.errors import SampleError
    from medbench.images import decode_image

    with pytest.raises(SampleError) as info:
        decode_image(b"not an image", where="x.jpg", size=None)
    assert not ADDRESS.search(str(info.value)), str(info.value)
