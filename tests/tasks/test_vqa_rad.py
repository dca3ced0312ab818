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
    assert split.notes["join_with_original"] == {"matched": 3, "unmatched": 0}
    assert [s.metadata["qid"] for s in split.samples] == ["4", "5", "6"]
    assert [s.metadata["question_type"] for s in split.samples] == ["ABN", "POS", "ORGAN"]
    assert [s.answer_type for s in split.samples] == ["closed", "closed", "open"]
    assert "VQA_RAD Dataset Public.json" in split.files
