import os
import pickle
from pathlib import Path

import pytest
from conftest import build_pathvqa, image_bytes, load_split, write_mirror_parquet

from medbench.errors import DataError
from medbench.tasks._readers import mirror_text


def test_original_layout_drops_duplicates_like_the_mirror(tmp_path: Path) -> None:
    split = load_split("pathvqa", build_pathvqa(tmp_path / "pvqa"))
    assert len(split.samples) == 3
    assert split.notes["duplicate_rows_dropped"] == 1
    assert [s.answer_type for s in split.samples] == ["closed", "open", "open"]
    assert split.samples[0].metadata["image_id"] == "test_0001"
    assert len(load_split("pathvqa", tmp_path / "pvqa", "validation").samples) == 1


def test_ids_match_across_original_and_mirror_layouts(tmp_path: Path) -> None:
    original = load_split("pathvqa", build_pathvqa(tmp_path / "a"))
    mirror = load_split("pathvqa", build_pathvqa(tmp_path / "b", mirror=True))
    assert mirror.layout == "hf-mirror"
    assert [s.id for s in original.samples] == [s.id for s in mirror.samples]
    assert mirror.samples[0].image.open().mode == "RGB"


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))

    marker = ""


def test_restricted_unpickler_refuses_code_and_never_runs_it(tmp_path: Path) -> None:
    root = build_pathvqa(tmp_path / "pvqa")
    marker = tmp_path / "pwned"
    _Evil.marker = str(marker)
    (root / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps([_Evil()], protocol=2))
    with pytest.raises(DataError, match=r"test_qa\.pkl: unsafe or invalid pickle \(refused to import posix\.system"):
        load_split("pathvqa", root)
    assert not marker.exists()


def test_restricted_unpickler_refuses_classes(tmp_path: Path) -> None:
    root = build_pathvqa(tmp_path / "pvqa")
    (root / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps([Path("x")]))
    with pytest.raises(DataError, match="refused to import pathlib"):
        load_split("pathvqa", root)


def test_plain_pickle_protocols_are_accepted(tmp_path: Path) -> None:
    root = build_pathvqa(tmp_path / "pvqa")
    rows = [{"image": "test_0001", "question": "Is this normal?", "answer": "no", "extra": (1, 2.5, None, {3})}]
    for protocol in (0, 2, 4, 5):
        (root / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps(rows, protocol=protocol))
        assert len(load_split("pathvqa", root).samples) == 1


def test_missing_and_escaping_images_are_skipped(tmp_path: Path) -> None:
    root = build_pathvqa(tmp_path / "pvqa")
    rows = [
        {"image": "test_0001", "question": "Q1?", "answer": "yes"},
        {"image": "test_9999", "question": "Q2?", "answer": "no"},
        {"image": "../../train/train_0001", "question": "Q3?", "answer": "no"},
    ]
    (root / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps(rows))
    split = load_split("pathvqa", root)
    assert len(split.samples) == 1
    assert "test_9999.jpg is missing" in split.skipped[0].reason
    assert "escapes the data folder" in split.skipped[1].reason


def test_missing_annotation_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "pvqa").mkdir()
    with pytest.raises(DataError, match=r"qas/\{train,val,test\}/\{split\}_qa\.pkl"):
        load_split("pathvqa", tmp_path / "pvqa")


def test_rows_equal_only_after_lowercasing_are_kept_with_distinct_stable_ids(tmp_path: Path) -> None:
    """Guards issue 9 item 6: the mirror drops exact duplicates only, so a row that differs from an earlier one
    only in case or spacing is kept (the old loader dropped it as a duplicate). The mirror lowercases both into
    equal rows; they are numbered by occurrence, so the ids agree across layouts."""
    rows = [
        {"image": "test_0001", "question": "What is present?", "answer": "neutrophils"},
        {"image": "test_0001", "question": "What is  PRESENT ?", "answer": "Neutrophils"},
        {"image": "test_0001", "question": "What is present?", "answer": "neutrophils"},  # exact duplicate
        {"image": "test_0002", "question": "What is present?", "answer": "neutrophils"},
    ]
    root = build_pathvqa(tmp_path / "a")
    (root / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps(rows))
    original = load_split("pathvqa", root)
    assert len(original.samples) == 3 and original.notes["dropped"] == {"exact_duplicates": 1}
    assert original.notes["duplicate_rows"] == [
        f"{root}/qas/test/test_qa.pkl[2] (same image, question and answer as {root}/qas/test/test_qa.pkl[0])"
    ]
    assert len({s.id for s in original.samples}) == 3

    mirror_root = tmp_path / "b"
    kept = [rows[0], rows[1], rows[3]]
    write_mirror_parquet(
        mirror_root / "data" / "test-00000-of-00001.parquet",
        {key: [mirror_text(r[key]) for r in kept] for key in ("question", "answer")},
        [(f"img_{i}.jpg", image_bytes({"test_0001": 4, "test_0002": 5}[r["image"]])) for i, r in enumerate(kept)],
    )
    mirror = load_split("pathvqa", mirror_root)
    assert [s.id for s in mirror.samples] == [s.id for s in original.samples]
    assert mirror.samples[0].question == mirror.samples[1].question == "what is present?"
