"""SLAKE (Liu et al., ISBI 2021), English questions only.

Original layout (``Slake1.0/``): ``imgs/xmlab<N>/source.jpg``, ``train.json``, ``validate.json`` (the hub mirror
renamed it ``validation.json``), ``test.json``; each JSON file is a list of question records in English and
Chinese. The mirror ``BoKelvin/SLAKE`` ships the same JSON files with the images in ``imgs.zip``.
English test set: 1,061 questions. id = ``qid``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from medbench.errors import DataError, SampleError
from medbench.images import safe_join, safe_member
from medbench.registry import register_task
from medbench.schema import ImageRef, Sample
from medbench.tasks._readers import id_text, read_json_records, sha256_file, value_kind
from medbench.tasks.base import (
    DataSource,
    HubMirror,
    LoadedSplit,
    LoadOptions,
    Skipped,
    Task,
    qid_record,
)

_SPLIT_FILES = {
    "train": ("train.json",),
    "validation": ("validation.json", "validate.json"),
    "test": ("test.json",),
}


@register_task
class Slake(Task):
    name = "slake"
    description = "SLAKE (English): radiology VQA, 1,061 test questions; closed/open/overall accuracy"
    kind = "vqa"
    order = 1
    subgroup_fields = ("modality", "location", "content_type")
    folder_aliases = ("Slake1.0", "SLAKE", "Slake")
    hub = HubMirror(
        "BoKelvin/SLAKE",
        "a9083ce6c34ac3ffb17671a605962924d8a8f9e9",
        {s: [*files, "imgs.zip"] for s, files in _SPLIT_FILES.items()},
    )
    expected_layout = """
SLAKE expects its original layout in <data-dir>/slake/ (or Slake1.0/):
  imgs/xmlab<N>/source.jpg   (or imgs.zip as on the hub mirror)
  train.json, validate.json or validation.json, test.json
Get it from https://www.med-vqa.com/slake or the Hugging Face mirror BoKelvin/SLAKE
(`medbench data fetch --tasks slake` where the hub is reachable)."""

    def load(self, source: DataSource, split: str, options: LoadOptions) -> LoadedSplit:
        root = source.root
        json_path = next((root / f for f in _SPLIT_FILES[split] if (root / f).is_file()), None)
        if json_path is None:
            raise DataError(self.missing_data_message([f"{root}/{' or '.join(_SPLIT_FILES[split])} (not found)"]))
        records = read_json_records(json_path)
        files = {json_path.name: sha256_file(json_path)}

        img_dir, zip_path = root / "imgs", root / "imgs.zip"
        members: set[str] = set()
        if img_dir.is_dir():
            layout = "original"
        elif zip_path.is_file():
            layout = "hf-mirror (imgs.zip)"
            files["imgs.zip"] = sha256_file(zip_path)
            with zipfile.ZipFile(zip_path) as zf:
                members = set(zf.namelist())
        else:
            raise DataError(self.missing_data_message([f"{img_dir}/ or {zip_path} (neither found)"]))

        samples: list[Sample] = []
        skipped: list[Skipped] = []
        seen: set[str] = set()
        non_english = 0
        for index, record in enumerate(records):
            where = f"{json_path}[{index}]"
            if not isinstance(record, dict):
                skipped.append(Skipped(where, f"{where}: expected an object, found {value_kind(record)}"))
                continue
            language = record.get("q_lang", "en")
            if isinstance(language, str) and language.strip() != "en":
                non_english += 1  # SLAKE's Chinese half: the benchmark is English-only
                continue
            try:
                if not isinstance(language, str):
                    raise SampleError(f"{where}: q_lang is {value_kind(language)}, expected text such as 'en'")
                sample_id, question, answer, img_name = qid_record(record, seen, image_key="img_name", where=where)
                image = self._image(img_name, img_dir, zip_path, members, where)
            except SampleError as exc:
                skipped.append(Skipped(where, str(exc), id_text(record.get("qid"))))
                continue
            seen.add(sample_id)
            samples.append(
                self.vqa_sample(
                    sample_id=sample_id,
                    image=image,
                    question=question,
                    reference=answer,
                    dataset_label=record.get("answer_type"),
                    options=options,
                    metadata={
                        "split": split,
                        "image_id": img_name,
                        "modality": record.get("modality"),
                        "location": record.get("location"),
                        "content_type": record.get("content_type"),
                        "base_type": record.get("base_type"),
                    },
                )
            )
        notes = {
            "rows_read": len(records),
            "dropped": {"non_english": non_english},
            "non_english_rows_excluded": non_english,
            "annotation_file": json_path.name,
        }
        return LoadedSplit(samples, skipped, layout, files, notes)

    @staticmethod
    def _image(img_name: str, img_dir: Path, zip_path: Path, members: set[str], where: str) -> ImageRef:
        if not members:
            path = safe_join(img_dir, img_name, where=where)
            if not path.is_file():
                raise SampleError(f"{where}: image {path} is missing; re-download the SLAKE images", where=where)
            return ImageRef("file", str(path))
        safe_member(img_name, where=where)
        for member in (f"imgs/{img_name}", img_name):
            if member in members:
                return ImageRef("zip", str(zip_path), member)
        raise SampleError(f"{where}: image {img_name!r} is not in {zip_path}; re-download imgs.zip", where=where)
