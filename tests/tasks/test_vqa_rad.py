import json
import shutil
from pathlib import Path

from conftest import build_vqa_rad, load_split


def test_original_layout_uses_phrase_type_split(tmp_path: Path) -> None:
    root = build_vqa_rad(tmp_path / "vqa_rad")
    test = load_split("vqa_rad", root)
    train = load_split("vqa_rad", root, "train")
    assert [s.id for s in test.samples] == ["4", "5", "6"]
    assert [s.id for s in train.samples] == ["1", "2", "3"]
    s = test.samples[1]
    assert s.metadata["question_type"] == "POS" and s.metadata["image_organ"] == "ABD"
    assert s.metadata["dataset_answer_type"] == "CLOSED"
    assert test.layout == "original"


def test_closed_rule_counts(tmp_path: Path) -> None:
    root = build_vqa_rad(tmp_path / "vqa_rad")
    yesno = [s.answer_type for s in load_split("vqa_rad", root).samples]
    labels = [s.answer_type for s in load_split("vqa_rad", root, closed_rule="answer_type").samples]
    assert yesno == ["closed", "open", "open"]  # "Left" is not a yes/no gold
    assert labels == ["closed", "closed", "open"]


def test_mirror_layout_content_ids_and_fallback(tmp_path: Path) -> None:
    root = build_vqa_rad(tmp_path / "vqa_rad", original=False, mirror=True)
    split = load_split("vqa_rad", root, closed_rule="answer_type")
    assert split.layout == "hf-mirror"
    assert len(split.samples) == 3 and all(len(s.id) == 16 for s in split.samples)
    assert split.samples[0].question == "is the heart enlarged?"
    # The mirror has no labels, so the answer_type rule falls back to yes/no and says so.
    assert all(s.metadata["closed_rule_fallback"] for s in split.samples)
    assert split.samples[0].image.kind == "parquet"
    assert split.samples[0].image.open().size == (512, 512)
    again = load_split("vqa_rad", root, closed_rule="answer_type")
    assert [s.id for s in again.samples] == [s.id for s in split.samples]
    assert len(load_split("vqa_rad", root, "train").samples) == 3


def test_mirror_joined_with_original_recovers_labels(tmp_path: Path) -> None:
    root = build_vqa_rad(tmp_path / "vqa_rad", original=True, mirror=True)
    split = load_split("vqa_rad", root, closed_rule="answer_type")
    assert split.layout == "hf-mirror + original (joined)"
    join = split.notes["join_with_original"]
    assert (join["matched"], join["unmatched"]) == (3, 0)
    assert join["matched_by"] == {"image+question+answer": 3, "question+answer": 0}
    assert split.notes["warnings"] == []
    assert [s.metadata["qid"] for s in split.samples] == ["4", "5", "6"]
    assert [s.metadata["question_type"] for s in split.samples] == ["ABN", "POS", "ORGAN"]
    assert [s.answer_type for s in split.samples] == ["closed", "closed", "open"]
    assert "VQA_RAD Dataset Public.json" in split.files


def test_mirror_and_json_without_the_image_folder_join_on_question_and_answer(tmp_path: Path) -> None:
    """Guards issue 9 item 7: without the original images the join recovered no label and the layout was
    still called "joined"; now rows are joined on (question, answer) and a warning says so."""
    root = build_vqa_rad(tmp_path / "vqa_rad", original=True, mirror=True)
    shutil.rmtree(root / "VQA_RAD Image Folder")
    split = load_split("vqa_rad", root, closed_rule="answer_type")
    join = split.notes["join_with_original"]
    assert join["matched_by"] == {"image+question+answer": 0, "question+answer": 3} and join["unmatched"] == 0
    assert split.layout == "hf-mirror + original (joined)"
    assert [s.answer_type for s in split.samples] == ["closed", "closed", "open"]
    assert [s.metadata["qid"] for s in split.samples] == ["4", "5", "6"]
    assert len(split.notes["warnings"]) == 1 and "by question and answer text only" in split.notes["warnings"][0]


def test_question_answer_pairs_with_disagreeing_labels_are_not_guessed(tmp_path: Path) -> None:
    root = build_vqa_rad(tmp_path / "vqa_rad", original=True, mirror=True)
    shutil.rmtree(root / "VQA_RAD Image Folder")
    records = json.loads((root / "VQA_RAD Dataset Public.json").read_text())
    # A second test row asking qid 6's question with qid 6's answer, but about another organ.
    records.append({**records[5], "qid": 7, "image_name": "synpic100.jpg", "image_organ": "CHEST"})
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(records))
    split = load_split("vqa_rad", root, closed_rule="answer_type")
    join = split.notes["join_with_original"]
    assert (join["matched"], join["unmatched"]) == (2, 1)
    assert list(join["unmatched_why"]) == [
        "ambiguous: original rows with this question and answer disagree on answer_type/question_type/image_organ"
    ]
    assert join["unmatched_rows"][0].startswith("test-00000-of-00001-abc.parquet row 2: ambiguous")
    unjoined = split.samples[2]
    assert unjoined.metadata["qid"] is None and unjoined.metadata["closed_rule_fallback"] is True
    assert any("1 of 3 mirror rows could not be joined" in w for w in split.notes["warnings"])


def test_a_join_that_matches_nothing_is_not_called_joined(tmp_path: Path) -> None:
    root = build_vqa_rad(tmp_path / "vqa_rad", original=True, mirror=True)
    records = json.loads((root / "VQA_RAD Dataset Public.json").read_text())
    for record in records:
        record["question"] += " (reworded)"
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(records))
    split = load_split("vqa_rad", root, closed_rule="answer_type")
    assert split.layout == "hf-mirror"
    assert split.notes["join_with_original"]["matched"] == 0
    assert "none of its rows matched any of the 3 mirror rows" in split.notes["warnings"][0]
    assert all(s.metadata["closed_rule_fallback"] for s in split.samples)
