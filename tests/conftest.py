"""Shared fixtures: small, format-faithful copies of every dataset layout, built offline in tmp folders.

Each builder writes real files in the dataset's own format (JSON lists, a pickled list of dicts, CSV, and
Hugging Face mirror parquet written with ``datasets`` and its ``Image`` feature), with tiny random images.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medbench import filehash


def image_bytes(seed: int, fmt: str = "JPEG", size: int = 24) -> bytes:
    """A small random RGB image, encoded."""
    pixels = np.random.default_rng(seed).integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(seed, "PNG" if path.suffix == ".png" else "JPEG"))
    return path


def write_mirror_parquet(path: Path, columns: dict[str, list[Any]], images: list[tuple[str, bytes | None]]) -> Path:
    """A Hugging Face mirror shard: ``datasets`` with an ``Image`` feature, as the mirrors were built.

    An image given as None is written as an empty (null) cell, a row without image bytes."""
    import datasets

    data = dict(columns)
    data["image"] = [None if b is None else {"bytes": b, "path": name} for name, b in images]
    features = {k: datasets.Value("string") for k in columns}
    if "cui" in columns:
        features["cui"] = datasets.Sequence(datasets.Value("string"))
    features["image"] = datasets.Image()
    ds = datasets.Dataset.from_dict(data, features=datasets.Features(features))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


# --- SLAKE -------------------------------------------------------------------------------------------------
def slake_record(
    qid: int,
    img: int,
    question: str,
    answer: str,
    *,
    lang: str = "en",
    answer_type: str = "OPEN",
    content_type: str = "Organ",
) -> dict[str, Any]:
    return {
        "img_id": img,
        "img_name": f"xmlab{img}/source.jpg",
        "question": question,
        "answer": answer,
        "q_lang": lang,
        "location": "Chest",
        "modality": "X-Ray",
        "answer_type": answer_type,
        "base_type": "vqa",
        "content_type": content_type,
        "triple": ["vhead", "_", "_"],
        "qid": qid,
    }


SLAKE_TEST = [
    slake_record(1, 0, "Is this a chest image?", "Yes", answer_type="CLOSED"),
    slake_record(2, 0, "Which organ is abnormal?", "Lung"),
    slake_record(3, 1, "Is the lesion on the left or right?", "Left", answer_type="CLOSED", content_type="Position"),
    slake_record(4, 1, "这是什么器官？", "肺", lang="zh"),
    slake_record(5, 1, "Does the picture contain heart?", "No", answer_type="CLOSED"),
]
SLAKE_TRAIN = [
    slake_record(11, 0, "Which organ is abnormal?", "Lung"),
    slake_record(12, 1, "Which organ is abnormal?", "Heart"),
    slake_record(13, 1, "Which organ is abnormal?", "Lung"),
    slake_record(14, 0, "Is this a chest image?", "Yes", answer_type="CLOSED"),
    slake_record(15, 0, "Is there a mass?", "No", answer_type="CLOSED"),
    slake_record(16, 1, "Is there a nodule?", "No", answer_type="CLOSED"),
]


def build_slake(
    root: Path,
    *,
    zipped: bool = False,
    validation_name: str = "validate.json",
    test: list[dict[str, Any]] | None = None,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.json").write_text(json.dumps(SLAKE_TRAIN, ensure_ascii=False))
    (root / validation_name).write_text(json.dumps(SLAKE_TRAIN[:2], ensure_ascii=False))
    (root / "test.json").write_text(json.dumps(SLAKE_TEST if test is None else test, ensure_ascii=False))
    if zipped:
        with zipfile.ZipFile(root / "imgs.zip", "w") as zf:
            for i in range(2):
                zf.writestr(f"imgs/xmlab{i}/source.jpg", image_bytes(i))
            zf.writestr("__MACOSX/imgs/._xmlab0", b"junk")
    else:
        for i in range(2):
            write_image(root / "imgs" / f"xmlab{i}" / "source.jpg", i)
    return root


# --- VQA-RAD -----------------------------------------------------------------------------------------------
def rad_record(
    qid: int,
    image: str,
    question: str,
    answer: str,
    phrase: str,
    answer_type: str,
    qtype: str = "PRES",
    organ: str = "CHEST",
) -> dict[str, Any]:
    return {
        "qid": qid,
        "phrase_type": phrase,
        "qid_linked_id": f"link{qid}",
        "image_case_url": "",
        "image_name": image,
        "image_organ": organ,
        "evaluation": "given",
        "question": question,
        "question_rephrase": "NULL",
        "question_relation": "NULL",
        "question_frame": "NULL",
        "question_type": qtype,
        "answer": answer,
        "answer_type": answer_type,
    }


RAD_RECORDS = [
    rad_record(1, "synpic100.jpg", "Is there a pneumothorax?", "No", "freeform", "CLOSED"),
    rad_record(2, "synpic100.jpg", "What  organ is shown ?", "Lungs", "para", "OPEN", "ORGAN"),
    rad_record(3, "synpic200.jpg", "Is there a pneumothorax?", "Yes", "freeform", "CLOSED", organ="ABD"),
    rad_record(4, "synpic100.jpg", "Is the heart enlarged?", "Yes", "test_freeform", "CLOSED", "ABN"),
    rad_record(
        5, "synpic200.jpg", "Which side is the lesion on, left or right?", "Left", "test_para", "CLOSED", "POS", "ABD"
    ),
    rad_record(6, "synpic200.jpg", "What organ is shown?", "Liver", "test_freeform", "OPEN", "ORGAN", "ABD"),
]
RAD_IMAGES = {"synpic100.jpg": 100, "synpic200.jpg": 200}


def _mirror_text(text: str) -> str:
    import re

    return re.sub(" +", " ", text.lower()).replace(" ?", "?").strip()


def build_vqa_rad(root: Path, *, original: bool = True, mirror: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if original:
        (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(RAD_RECORDS))
        for name, seed in RAD_IMAGES.items():
            write_image(root / "VQA_RAD Image Folder" / name, seed)
    if mirror:
        for split, phrases in (("train", {"freeform", "para"}), ("test", {"test_freeform", "test_para"})):
            rows = [r for r in RAD_RECORDS if r["phrase_type"] in phrases]
            write_mirror_parquet(
                root / "data" / f"{split}-00000-of-00001-abc.parquet",
                {
                    "question": [_mirror_text(r["question"]) for r in rows],
                    "answer": [_mirror_text(r["answer"]) for r in rows],
                },
                [(r["image_name"], image_bytes(RAD_IMAGES[r["image_name"]])) for r in rows],
            )
    return root


# --- PathVQA -----------------------------------------------------------------------------------------------
PATH_QAS = {
    "train": [
        {"image": "train_0001", "question": "Is this tissue inflamed?", "answer": "yes"},
        {"image": "train_0001", "question": "What stain is used?", "answer": "h&e"},
        {"image": "train_0002", "question": "Is this tissue inflamed?", "answer": "yes"},
    ],
    "val": [{"image": "val_0001", "question": "What stain is used?", "answer": "h&e"}],
    "test": [
        {"image": "test_0001", "question": "Is this tissue inflamed?", "answer": "no"},
        {"image": "test_0001", "question": "What is present?", "answer": "neutrophils"},
        {"image": "test_0001", "question": "What is present?", "answer": "neutrophils"},  # duplicate row
        {"image": "test_0002", "question": "What stain is used?", "answer": "h&e"},
    ],
}


def build_pathvqa(root: Path, *, mirror: bool = False) -> Path:
    seeds = {"train_0001": 1, "train_0002": 2, "val_0001": 3, "test_0001": 4, "test_0002": 5}
    for split, rows in PATH_QAS.items():
        if mirror:
            unique = [dict(t) for t in dict.fromkeys(tuple(sorted(r.items())) for r in rows)]
            name = {"val": "validation"}.get(split, split)
            write_mirror_parquet(
                root / "data" / f"{name}-00000-of-00001-x.parquet",
                {"question": [r["question"] for r in unique], "answer": [r["answer"] for r in unique]},
                [(f"img_{i}.jpg", image_bytes(seeds[r["image"]])) for i, r in enumerate(unique)],
            )
            continue
        qa = root / "qas" / split / f"{split}_qa.pkl"
        qa.parent.mkdir(parents=True, exist_ok=True)
        qa.write_bytes(pickle.dumps(rows, protocol=4))
        for image in {r["image"] for r in rows}:
            write_image(root / "images" / split / f"{image}.jpg", seeds[image])
    return root


# --- ROCOv2 ------------------------------------------------------------------------------------------------
ROCO_CAPTIONS = {
    "train": [
        ("ROCOv2_2023_train_000001", "Chest X-ray showing a left pleural effusion."),
        ("ROCOv2_2023_train_000002", "Axial CT of the abdomen showing a liver lesion."),
        ("ROCOv2_2023_train_000003", "Chest X-ray showing a left pleural effusion."),
    ],
    "valid": [("ROCOv2_2023_valid_000001", "MRI of the brain.")],
    "test": [
        ("ROCOv2_2023_test_000001", "Chest radiograph with a right pleural effusion."),
        ("ROCOv2_2023_test_000002", 'Axial CT showing, a hepatic lesion "with" rim enhancement.'),
    ],
}


def build_rocov2(root: Path, *, mirror: bool = False, extra_test: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in ROCO_CAPTIONS.items():
        rows = list(rows)
        if split == "test":
            rows += [(f"ROCOv2_2023_test_{i:06d}", f"Synthetic caption number {i}.") for i in range(3, 3 + extra_test)]
        if mirror:
            name = {"valid": "validation"}.get(split, split)
            write_mirror_parquet(
                root / "data" / f"{name}-00000-of-00001.parquet",
                {
                    "image_id": [i for i, _ in rows],
                    "caption": [c for _, c in rows],
                    "cui": [["C0000001"] for _ in rows],
                },
                [(f"{i}.png", image_bytes(n, "PNG")) for n, (i, _) in enumerate(rows)],
            )
            continue
        import csv

        with (root / f"{split}_captions.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["ID", "Caption"])
            writer.writerows(rows)
        with (root / f"{split}_concepts.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["ID", "CUIs"])
            writer.writerows([(i, "C1306645;C0817096") for i, _ in rows])
        for n, (image_id, _) in enumerate(rows):
            write_image(root / split / f"{image_id}.jpg", n)
    return root


Builder = Callable[..., Path]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A --data-dir holding all four tasks in their original layouts."""
    build_slake(tmp_path / "slake")
    build_vqa_rad(tmp_path / "vqa_rad")
    build_pathvqa(tmp_path / "pathvqa")
    build_rocov2(tmp_path / "rocov2")
    return tmp_path


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never touch the network or the user's caches or MEDBENCH_DATA."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
    monkeypatch.delenv("MEDBENCH_DATA", raising=False)
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path_factory.mktemp("cache") / "predictions.sqlite"))


def load_split(task: str, root: Path, split: str = "test", **options: Any) -> Any:
    """Load one split of ``task`` from a local folder (the task's own folder)."""
    from medbench.registry import get_task
    from medbench.tasks.base import DataSource, LoadOptions

    return get_task(task).load(DataSource("local", root), split, LoadOptions(**options))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path whose content :mod:`medbench.filehash` reads, in order (tests of the digest cache)."""
    seen: list[str] = []
    real: Callable[[str], str] = filehash._hash_file

    def counting(path: str) -> str:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(filehash, "_hash_file", counting)
    return seen
