import json
from pathlib import Path

import pytest
from conftest import build_slake, load_split, slake_record

from medbench.errors import DataError


def test_original_layout_english_only_with_native_ids_and_metadata(tmp_path: Path) -> None:
    split = load_split("slake", build_slake(tmp_path / "slake"))
    assert [s.id for s in split.samples] == ["1", "2", "3", "5"]  # qid 4 is Chinese
    assert split.notes["non_english_rows_excluded"] == 1
    assert split.layout == "original"
    first = split.samples[0]
    assert first.task == "slake" and first.question == "Is this a chest image?" and first.reference == "Yes"
    assert {k: first.metadata[k] for k in ("modality", "location", "content_type", "base_type")} == {
        "modality": "X-Ray",
        "location": "Chest",
        "content_type": "Organ",
        "base_type": "vqa",
    }
    assert first.metadata["dataset_answer_type"] == "CLOSED"
    assert split.skipped == []


def test_closed_rules(tmp_path: Path) -> None:
    root = build_slake(tmp_path / "slake")
    yesno = {s.id: s.answer_type for s in load_split("slake", root, closed_rule="yesno").samples}
    labels = {s.id: s.answer_type for s in load_split("slake", root, closed_rule="answer_type").samples}
    # qid 3 ("Left") is CLOSED by the dataset's label but has no yes/no gold.
    assert yesno == {"1": "closed", "2": "open", "3": "open", "5": "closed"}
    assert labels == {"1": "closed", "2": "open", "3": "closed", "5": "closed"}


@pytest.mark.parametrize("validation_name", ["validate.json", "validation.json"])
def test_validation_file_either_name(tmp_path: Path, validation_name: str) -> None:
    root = build_slake(tmp_path / "slake", validation_name=validation_name)
    assert len(load_split("slake", root, "validation").samples) == 2


def test_hub_mirror_zip_layout(tmp_path: Path) -> None:
    split = load_split("slake", build_slake(tmp_path / "slake", zipped=True))
    assert split.layout.startswith("hf-mirror")
    image = split.samples[0].image
    assert image.kind == "zip" and image.member == "imgs/xmlab0/source.jpg"
    opened = image.open()
    assert opened.mode == "RGB" and opened.size == (512, 512)
    assert image.open(64).size == (64, 64)
    assert image.open(None).size == (24, 24)


def test_bad_rows_are_skipped_with_reasons(tmp_path: Path) -> None:
    test = [
        slake_record(1, 0, "Is this a chest image?", "Yes"),
        slake_record(2, 7, "Which organ?", "Lung"),  # xmlab7 does not exist
        {**slake_record(3, 0, "Q?", "A"), "img_name": "../../../etc/passwd"},
        slake_record(4, 0, "   ", "Lung"),
        slake_record(5, 0, "Which organ?", ""),
        slake_record(1, 1, "Duplicate qid?", "Yes"),
        "not a record",
    ]
    split = load_split("slake", build_slake(tmp_path / "slake", test=test))  # type: ignore[arg-type]
    assert [s.id for s in split.samples] == ["1"]
    reasons = [s.reason for s in split.skipped]
    assert len(reasons) == 6
    assert "xmlab7/source.jpg is missing" in reasons[0]
    assert "escapes the data folder" in reasons[1]
    assert "question is empty" in reasons[2] and "answer is empty" in reasons[3]
    assert "duplicate qid 1" in reasons[4] and "expected an object" in reasons[5]
    assert all("test.json[" in s.where for s in split.skipped)


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    root = build_slake(tmp_path / "slake")
    (root / "test.json").write_text('[{"qid": 1,\n  "question": }]')
    with pytest.raises(DataError, match=r"test\.json: malformed JSON at line 2"):
        load_split("slake", root)


def test_missing_images_folder_explains_layout(tmp_path: Path) -> None:
    root = tmp_path / "slake"
    root.mkdir()
    (root / "test.json").write_text(json.dumps([]))
    with pytest.raises(DataError, match=r"imgs/xmlab<N>/source\.jpg"):
        load_split("slake", root)
