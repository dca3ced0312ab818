from pathlib import Path

from conftest import build_rocov2, load_split

from medbench.tasks.rocov2 import SUBSET_SIZE, paper_subset


def test_original_layout_captions_and_concepts(tmp_path: Path) -> None:
    split = load_split("rocov2", build_rocov2(tmp_path / "rocov2"))
    assert [s.id for s in split.samples] == ["ROCOv2_2023_test_000001", "ROCOv2_2023_test_000002"]
    assert split.samples[1].reference == 'Axial CT showing, a hepatic lesion "with" rim enhancement.'
    assert split.samples[0].metadata["cuis"] == ["C1306645", "C0817096"]
    assert split.samples[0].question is None and split.samples[0].answer_type is None
    assert split.notes["subset"]["size"] == 2
    assert len(load_split("rocov2", tmp_path / "rocov2", "validation").samples) == 1


def test_mirror_layout(tmp_path: Path) -> None:
    split = load_split("rocov2", build_rocov2(tmp_path / "rocov2", mirror=True))
    assert split.layout == "hf-mirror"
    assert [s.id for s in split.samples] == ["ROCOv2_2023_test_000001", "ROCOv2_2023_test_000002"]
    assert split.samples[0].metadata["cuis"] == ["C0000001"]
    assert split.samples[0].image.open(None).size == (24, 24)


def test_paper_subset_is_fixed_sorted_and_full_size() -> None:
    ids = [f"ROCOv2_2023_test_{i:06d}" for i in range(2500, 0, -1)]
    first, second = paper_subset(ids), paper_subset(list(reversed(ids)))
    assert first == second  # independent of file order
    assert len(first) == SUBSET_SIZE == len(set(first)) and first == sorted(first)
    assert set(paper_subset(ids, seed=1)) != set(first)
    assert paper_subset(ids[:10]) == sorted(ids[:10])


def test_default_subset_and_full(tmp_path: Path) -> None:
    root = build_rocov2(tmp_path / "rocov2", extra_test=SUBSET_SIZE + 5)
    subset = load_split("rocov2", root)
    assert len(subset.samples) == SUBSET_SIZE
    assert subset.notes["subset"]["of"] == SUBSET_SIZE + 7
    assert subset.notes["subset"]["ids"] == [s.id for s in subset.samples]
    assert len(load_split("rocov2", root, full=True).samples) == SUBSET_SIZE + 7


def test_malformed_csv_rows_and_traversal_are_skipped(tmp_path: Path) -> None:
    root = build_rocov2(tmp_path / "rocov2")
    with (root / "test_captions.csv").open("a") as fh:
        fh.write("ROCOv2_2023_test_000009,one,too many\n")
        fh.write("../../etc/passwd,caption\n")
        fh.write("ROCOv2_2023_test_000010,\n")
    split = load_split("rocov2", root)
    assert len(split.samples) == 2
    reasons = [s.reason for s in split.skipped]
    assert "test_captions.csv:4: malformed CSV row" in reasons[0]
    assert "escapes the data folder" in reasons[1]
    assert "Caption is empty" in reasons[2]


def test_rows_without_an_id_are_skipped_in_the_subset_mode_too(tmp_path: Path) -> None:
    """Guards issue 9 item 2: the subset was drawn from the non-empty IDs and then only the drawn rows were
    checked, so a row with an empty ID vanished unless --full was given."""
    root = build_rocov2(tmp_path / "rocov2", extra_test=SUBSET_SIZE + 5)
    clean_subset = load_split("rocov2", root).notes["subset"]["ids"]
    with (root / "test_captions.csv").open("a") as fh:
        fh.write(",A caption without an ID\n")
        fh.write("ROCOv2_2023_test_000001,A second caption for the first ID\n")
    for full in (False, True):
        split = load_split("rocov2", root, full=full)
        reasons = [s.reason for s in split.skipped]
        assert len(reasons) == 2, reasons
        assert "test_captions.csv:1009: ID is empty" in reasons[0]
        assert "test_captions.csv:1010: duplicate ID ROCOv2_2023_test_000001" in reasons[1]
        dropped = sum(split.notes["dropped"].values())
        assert split.notes["rows_read"] == SUBSET_SIZE + 9 == len(split.samples) + len(split.skipped) + dropped
    subset = load_split("rocov2", root)
    assert subset.notes["subset"]["ids"] == clean_subset  # bad rows do not move the paper subset
    assert subset.notes["dropped"] == {"not_in_paper_subset": 7}
