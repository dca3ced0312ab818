"""VQA-RAD (Lau et al., Sci Data 2018).

Original layout (OSF): ``VQA_RAD Dataset Public.json`` plus ``VQA_RAD Image Folder/synpic*.jpg``; the official
split is ``phrase_type``: train = {freeform, para}, test = {test_freeform, test_para} (451 questions). id = ``qid``.
Hugging Face mirror ``flaviagiammarino/vqa-rad``: ``data/{train,test}-*.parquet`` with image/question/answer
(1,793/451), lowercased, without ``answer_type``/``question_type``/``image_organ``. When both layouts sit in the
same folder, mirror rows get those fields back by joining on image bytes, question and answer.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

from medbench.errors import DataError, SampleError
from medbench.images import safe_join
from medbench.registry import register_task
from medbench.schema import ImageRef, Sample
from medbench.tasks._readers import (
    listing_checksum,
    mirror_checksums,
    mirror_text,
    parquet_files,
    read_json_records,
    read_mirror_split,
    sha256_file,
)
from medbench.tasks.base import (
    DataSource,
    HubMirror,
    LoadedSplit,
    LoadOptions,
    Skipped,
    Task,
    clean_text,
    content_id,
    qid_record,
)

ORIGINAL_JSON = "VQA_RAD Dataset Public.json"
IMAGE_FOLDER = "VQA_RAD Image Folder"
_PHRASE_TYPES = {"train": {"freeform", "para"}, "test": {"test_freeform", "test_para"}}


@register_task
class VqaRad(Task):
    name = "vqa_rad"
    description = "VQA-RAD: radiology VQA, 451 test questions; closed/open/overall accuracy"
    kind = "vqa"
    order = 3
    splits = ("train", "test")
    subgroup_fields = ("question_type", "image_organ")
    folder_aliases = ("VQA_RAD", "vqa-rad", "VQA-RAD")
    hub = HubMirror(
        "flaviagiammarino/vqa-rad",
        "bcf91e7654fb9d51c8ab6a5b82cacf3fafd2fae9",
        {"train": ["data/train-*.parquet"], "test": ["data/test-*.parquet"]},
    )
    expected_layout = f"""
VQA-RAD expects, in <data-dir>/vqa_rad/, the original OSF files:
  {ORIGINAL_JSON}
  {IMAGE_FOLDER}/synpic*.jpg
and/or the Hugging Face mirror layout data/train-*.parquet, data/test-*.parquet (flaviagiammarino/vqa-rad).
Get it from https://osf.io/89kps/ or `medbench data fetch --tasks vqa_rad` where the hub is reachable."""

    def load(self, source: DataSource, split: str, options: LoadOptions) -> LoadedSplit:
        root = source.root
        has_original = (root / ORIGINAL_JSON).is_file()
        has_mirror = bool(parquet_files(root, split))
        if has_mirror:
            return self._load_mirror(root, split, options, join=has_original)
        if has_original:
            return self._load_original(root, split, options)
        raise DataError(self.missing_data_message([f"{root}/{ORIGINAL_JSON} or {root}/data/{split}-*.parquet"]))

    # -- original OSF layout ------------------------------------------------------------------------------
    def _original_records(self, root: Path, split: str) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, str]]:
        json_path = root / ORIGINAL_JSON
        wanted = _PHRASE_TYPES[split]
        rows = [
            (f"{json_path}[{i}]", r)
            for i, r in enumerate(read_json_records(json_path))
            if isinstance(r, dict) and r.get("phrase_type") in wanted
        ]
        if not rows:
            raise DataError(f"{json_path}: no rows with phrase_type in {sorted(wanted)}; is this the VQA-RAD file?")
        return rows, {ORIGINAL_JSON: sha256_file(json_path)}

    def _load_original(self, root: Path, split: str, options: LoadOptions) -> LoadedSplit:
        rows, files = self._original_records(root, split)
        folder = root / IMAGE_FOLDER
        if not folder.is_dir():
            raise DataError(self.missing_data_message([f"{folder}/ (not found)"]))
        files[f"{IMAGE_FOLDER}/"] = listing_checksum(folder)
        samples: list[Sample] = []
        skipped: list[Skipped] = []
        seen: set[str] = set()
        for where, record in rows:
            try:
                sample_id, question, answer, name = qid_record(record, seen, image_key="image_name", where=where)
                path = safe_join(folder, name, where=where)
                if not path.is_file():
                    raise SampleError(f"{where}: image {path} is missing; re-download the VQA-RAD image folder")
            except SampleError as exc:
                qid = record.get("qid")
                skipped.append(Skipped(where, str(exc), str(qid) if qid is not None else None))
                continue
            seen.add(sample_id)
            samples.append(
                self._sample(
                    sample_id,
                    ImageRef("file", str(path)),
                    question,
                    answer,
                    record,
                    split,
                    options,
                    image_id=name,
                )
            )
        return LoadedSplit(samples, skipped, "original", files, {})

    # -- Hugging Face mirror ------------------------------------------------------------------------------
    def _join_index(self, root: Path, split: str) -> tuple[dict[tuple[str, str, str], dict[str, Any]], dict[str, str]]:
        """Original records keyed by (image sha1, mirror-normalised question, answer)."""
        rows, files = self._original_records(root, split)
        folder = root / IMAGE_FOLDER
        digests: dict[str, str] = {}
        index: dict[tuple[str, str, str], dict[str, Any]] = {}
        for where, record in rows:
            name = str(record.get("image_name", ""))
            if name not in digests:
                try:
                    digests[name] = hashlib.sha1(safe_join(folder, name, where=where).read_bytes()).hexdigest()
                except (SampleError, OSError):
                    digests[name] = ""
            key = (digests[name], mirror_text(record.get("question")), mirror_text(record.get("answer")))
            index.setdefault(key, {**record, "image_name": name})
        return index, files

    def _load_mirror(self, root: Path, split: str, options: LoadOptions, *, join: bool) -> LoadedSplit:
        files = mirror_checksums(root, split)
        index: dict[tuple[str, str, str], dict[str, Any]] = {}
        if join:
            index, original_files = self._join_index(root, split)
            files.update(original_files)
        samples: list[Sample] = []
        skipped: list[Skipped] = []
        seen: set[str] = set()
        joined = Counter[str]()
        for where, record, digest, image in read_mirror_split(root, split, ["question", "answer"]):
            try:
                question = clean_text(record.get("question"), field_name="question", where=where)
                answer = clean_text(record.get("answer"), field_name="answer", where=where)
                if digest is None:
                    raise SampleError(f"{where}: row has no image bytes; re-download the parquet file")
            except SampleError as exc:
                skipped.append(Skipped(where, str(exc)))
                continue
            sample_id = content_id(digest, question, answer)
            if sample_id in seen:
                skipped.append(
                    Skipped(
                        where,
                        f"{where}: duplicate of an earlier row (same image, question, answer)",
                        sample_id,
                    )
                )
                continue
            seen.add(sample_id)
            original = index.get((digest, mirror_text(question), mirror_text(answer)), {})
            if join:
                joined["matched" if original else "unmatched"] += 1
            samples.append(
                self._sample(
                    sample_id,
                    image,
                    question,
                    answer,
                    original,
                    split,
                    options,
                    image_id=original.get("image_name") or digest,
                )
            )
        notes: dict[str, Any] = {}
        if join:
            notes["join_with_original"] = {"matched": joined["matched"], "unmatched": joined["unmatched"]}
        layout = "hf-mirror + original (joined)" if join else "hf-mirror"
        return LoadedSplit(samples, skipped, layout, files, notes)

    def _sample(
        self,
        sample_id: str,
        image: ImageRef,
        question: str,
        answer: str,
        record: dict[str, Any],
        split: str,
        options: LoadOptions,
        *,
        image_id: str,
    ) -> Sample:
        qid = record.get("qid")
        return self.vqa_sample(
            sample_id=sample_id,
            image=image,
            question=question,
            reference=answer,
            dataset_label=record.get("answer_type"),
            options=options,
            metadata={
                "split": split,
                "image_id": image_id,
                "qid": str(qid) if qid is not None else None,
                "question_type": record.get("question_type"),
                "image_organ": record.get("image_organ"),
                "phrase_type": record.get("phrase_type"),
            },
        )
