"""The loaders on the real third-party files in ../shared/realdata (read by path, never copied into the
repository; every test skips cleanly where the files are absent). Images are tiny stand-ins written into
tmp_path unless the real ones are there (VQA-RAD's test images are)."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import image_bytes, load_split, write_image, write_mirror_parquet

from medbench.tasks._readers import mirror_text

#: ``shared/realdata`` beside the checkout (as on the developers' machines and in CI), or ``$MEDBENCH_REALDATA``.
REAL = Path(os.environ.get("MEDBENCH_REALDATA") or Path(__file__).resolve().parents[3] / "shared" / "realdata")


def real(relative: str) -> Path:
    path = REAL / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def accounted(split: Any) -> int:
    return len(split.samples) + len(split.skipped) + sum(split.notes["dropped"].values())


# --- SLAKE -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slake")
    names: set[str] = set()
    for name in ("train.json", "validate.json", "test.json"):
        source = real(f"slake/{name}")
        (root / name).symlink_to(source)
        names |= {r["img_name"] for r in json.loads(source.read_text())}
    for n, name in enumerate(sorted(names)):
        write_image(root / "imgs" / name, n)
    return root


def test_slake_real_test_split_gives_the_published_counts(slake_root: Path) -> None:
    split = load_split("slake", slake_root, closed_rule="answer_type")
    assert len(split.samples) == 1061 and split.skipped == []
    assert Counter(s.answer_type for s in split.samples) == {"open": 645, "closed": 416}
    assert split.notes["rows_read"] == 2094 and split.notes["dropped"] == {"non_english": 1033}
    assert split.notes["rows_read"] == accounted(split)
    assert len({s.metadata["image_id"] for s in split.samples}) == 96


def test_slake_real_train_and_validation_count_every_row(slake_root: Path) -> None:
    train = load_split("slake", slake_root, "train")
    # 4,919 English rows; qid 1622 has an empty answer and is the one skip.
    assert len(train.samples) == 4918 and [s.id for s in train.skipped] == ["1622"]
    assert "answer is empty" in train.skipped[0].reason
    assert train.notes["rows_read"] == 9835 == accounted(train)
    validation = load_split("slake", slake_root, "validation")
    assert len(validation.samples) == 1053 and validation.notes["rows_read"] == 2099 == accounted(validation)


# --- VQA-RAD ---------------------------------------------------------------------------------------------
RAD_JSON = "vqa_rad/VQA_RAD Dataset Public.json"
RAD_IMAGES = "vqa_rad/VQA_RAD Image Folder (test images only)"


def rad_test_rows() -> list[dict[str, Any]]:
    rows = json.loads(real(RAD_JSON).read_text())
    return [r for r in rows if r["phrase_type"] in ("test_freeform", "test_para")]


def build_real_rad(root: Path, *, images: bool, mirror: bool, real_image_bytes: bool = True) -> Path:
    """The real JSON, optionally the real test images, optionally a mirror test shard built from the same rows
    the way the mirror was (lowercased question and answer, the image bytes embedded)."""
    root.mkdir(parents=True)
    (root / "VQA_RAD Dataset Public.json").symlink_to(real(RAD_JSON))
    folder = real(RAD_IMAGES)
    if images:
        (root / "VQA_RAD Image Folder").symlink_to(folder)
    if mirror:
        rows = rad_test_rows()
        seeds = {name: n for n, name in enumerate(sorted({r["image_name"] for r in rows}))}

        def image(name: str) -> bytes:
            return (folder / name).read_bytes() if real_image_bytes else image_bytes(seeds[name])

        write_mirror_parquet(
            root / "data" / "test-00000-of-00001.parquet",
            {
                "question": [mirror_text(r["question"]) for r in rows],
                "answer": [mirror_text(r["answer"]) for r in rows],
            },
            [(r["image_name"], image(r["image_name"])) for r in rows],
        )
    return root


def test_vqa_rad_real_original_layout_gives_the_published_counts(tmp_path: Path) -> None:
    split = load_split("vqa_rad", build_real_rad(tmp_path / "rad", images=True, mirror=False))
    assert len(split.samples) == 451 and split.skipped == []
    assert Counter(s.answer_type for s in split.samples) == {"closed": 251, "open": 200}  # gold yes/no: 251
    labels = load_split("vqa_rad", tmp_path / "rad", closed_rule="answer_type")
    assert Counter(s.answer_type for s in labels.samples) == {"closed": 272, "open": 179}
    assert split.notes["rows_read"] == 2248 and split.notes["dropped"] == {"other_split": 1797}
    assert split.notes["rows_read"] == accounted(split)


def test_vqa_rad_real_mirror_joins_on_question_and_answer_without_the_images(tmp_path: Path) -> None:
    """Guards issue 9 item 7: without the original image folder the join used to recover 0 of 451 labels and
    still call the layout "joined". 437 of the 451 test (question, answer) pairs are distinct; two pairs are
    shared by rows that disagree on image_organ (5 rows), and those must stay unjoined, not guessed."""
    root = build_real_rad(tmp_path / "rad", images=False, mirror=True, real_image_bytes=False)
    split = load_split("vqa_rad", root, closed_rule="answer_type")
    join = split.notes["join_with_original"]
    assert join["matched"] == 446 and join["unmatched"] == 5
    assert join["matched_by"] == {"image+question+answer": 0, "question+answer": 446}
    assert sum(join["unmatched_why"].values()) == 5 and all("ambiguous" in why for why in join["unmatched_why"])
    assert len(join["unmatched_rows"]) == 5
    assert split.layout == "hf-mirror + original (joined)"
    labelled = [s for s in split.samples if s.metadata["dataset_answer_type"]]
    assert len(labelled) == 446 and sum(bool(s.metadata.get("closed_rule_fallback")) for s in split.samples) == 5
    warnings = split.notes["warnings"]
    assert any("by question and answer text only" in w for w in warnings)
    assert any("5 of 451 mirror rows could not be joined" in w for w in warnings)
    assert split.notes["rows_read"] == 451 == accounted(split)


def test_vqa_rad_real_mirror_joins_on_image_bytes_when_the_images_are_there(tmp_path: Path) -> None:
    root = build_real_rad(tmp_path / "rad", images=True, mirror=True)
    split = load_split("vqa_rad", root, closed_rule="answer_type")
    join = split.notes["join_with_original"]
    assert join["matched_by"] == {"image+question+answer": 451, "question+answer": 0} and join["unmatched"] == 0
    assert Counter(s.answer_type for s in split.samples) == {"closed": 272, "open": 179}
    assert split.notes["warnings"] == []
    original = load_split("vqa_rad", build_real_rad(tmp_path / "orig", images=True, mirror=False))
    assert sorted(s.metadata["qid"] for s in split.samples) == sorted(s.id for s in original.samples)


# --- PathVQA ---------------------------------------------------------------------------------------------
def pvqa_rows() -> list[dict[str, str]]:
    """pvqa_test.json (LXMERT style) as the original pickle's rows: one {image, question, answer} per question,
    in file order."""
    rows = []
    for entry in json.loads(real("pathvqa/pvqa_test.json").read_text()):
        for question, label in zip(entry["sentf"]["pvqa"], entry["labelf"]["pvqa"], strict=True):
            (answer,) = label
            rows.append({"image": entry["img_id"], "question": question, "answer": answer})
    return rows


@pytest.fixture(scope="module")
def pvqa_layouts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The real test questions in the original layout (pickle + one tiny image per img_id) and in the mirror
    layout built from them as the mirror's processing.py did: exact duplicates dropped, then lowercased."""
    rows = pvqa_rows()
    images = {name: image_bytes(n) for n, name in enumerate(sorted({r["image"] for r in rows}))}
    original = tmp_path_factory.mktemp("pvqa_original")
    (original / "qas" / "test").mkdir(parents=True)
    (original / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps(rows, protocol=4))
    for name, data in images.items():
        (original / "images" / "test").mkdir(parents=True, exist_ok=True)
        (original / "images" / "test" / f"{name}.jpg").write_bytes(data)
    kept = _first_occurrences(rows)
    mirror = tmp_path_factory.mktemp("pvqa_mirror")
    write_mirror_parquet(
        mirror / "data" / "test-00000-of-00001.parquet",
        {"question": [mirror_text(r["question"]) for r in kept], "answer": [mirror_text(r["answer"]) for r in kept]},
        [(f"img_{i}.jpg", images[r["image"]]) for i, r in enumerate(kept)],
    )
    return original, mirror


def _first_occurrences(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """``DataFrame.drop_duplicates()``: the first of every exact (image, question, answer) row, in order."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for row in rows:
        key = tuple(row.values())
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def test_pathvqa_real_test_questions_keep_what_the_mirror_keeps(pvqa_layouts: tuple[Path, Path]) -> None:
    """Guards issue 9 item 6: the loader used to drop 650 rows (rows equal only after lowercasing too) and keep
    6,111; the mirror drops the 42 exact duplicates only and keeps 6,719."""
    split = load_split("pathvqa", pvqa_layouts[0])
    assert len(split.samples) == 6719 and split.skipped == []
    assert split.notes["rows_read"] == 6761 and split.notes["dropped"] == {"exact_duplicates": 42}
    assert len(split.notes["duplicate_rows"]) == 42 and split.notes["rows_read"] == accounted(split)
    assert len({s.id for s in split.samples}) == 6719


def test_pathvqa_real_ids_are_the_same_in_the_mirror_layout(pvqa_layouts: tuple[Path, Path]) -> None:
    original = load_split("pathvqa", pvqa_layouts[0])
    mirror = load_split("pathvqa", pvqa_layouts[1])
    assert mirror.layout == "hf-mirror" and len(mirror.samples) == 6719
    assert mirror.notes["dropped"] == {"exact_duplicates": 0}
    assert [s.id for s in mirror.samples] == [s.id for s in original.samples]


# --- ROCOv2 ----------------------------------------------------------------------------------------------
def build_real_rocov2(root: Path, captions: bytes | None = None) -> Path:
    """The real 93-row prefix of test_captions.csv / test_concepts.csv (CRLF, quoted captions), tiny images."""
    source = real("rocov2/test_captions.first93rows.csv").read_bytes()
    root.mkdir(parents=True)
    (root / "test_captions.csv").write_bytes(source if captions is None else captions)
    (root / "test_concepts.csv").write_bytes(real("rocov2/test_concepts.first93rows.csv").read_bytes())
    for n, row in enumerate(csv.DictReader(io.StringIO(source.decode("utf-8"), newline=""))):
        write_image(root / "test" / f"{row['ID']}.jpg", n)
    return root


def test_rocov2_real_prefix_reads_every_row_as_the_csv_module_does(tmp_path: Path) -> None:
    source = real("rocov2/test_captions.first93rows.csv").read_bytes()
    expected = {r["ID"]: r["Caption"].strip() for r in csv.DictReader(io.StringIO(source.decode(), newline=""))}
    split = load_split("rocov2", build_real_rocov2(tmp_path / "rocov2"))
    assert len(split.samples) == 93 and split.skipped == []
    assert {s.id: s.reference for s in split.samples} == expected
    assert split.notes["rows_read"] == 93 == accounted(split)
    by_id = {s.id: s for s in split.samples}
    assert by_id["ROCOv2_2023_test_000066"].reference.startswith("A 69-year-old man")  # leading space, in quotes
    assert all(s.metadata["cuis"] for s in split.samples)


def test_rocov2_real_prefix_with_a_stray_quote_loses_only_that_row(tmp_path: Path) -> None:
    """Guards issue 9 item 1: a stray quote used to swallow every later row into one caption (skipped: 0)."""
    lines = real("rocov2/test_captions.first93rows.csv").read_bytes().split(b"\r\n")
    assert lines[10].startswith(b"ROCOv2_2023_test_000010,")
    lines[10] = lines[10].replace(b",", b',"', 1)  # opening quote, never closed
    split = load_split("rocov2", build_real_rocov2(tmp_path / "rocov2", b"\r\n".join(lines)))
    assert len(split.samples) == 92 and len(split.skipped) == 1
    assert split.skipped[0].where.endswith("test_captions.csv:11")
    assert "unbalanced quote" in split.skipped[0].reason and "line 12 starts a new row" in split.skipped[0].reason
    assert all("ROCOv2_2023_test_" not in s.reference for s in split.samples)
