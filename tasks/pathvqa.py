"""PathVQA (He et al., 2020): pathology VQA.

Original layout: ``qas/{train,val,test}/{split}_qa.pkl`` (a pickled list of ``{image, question, answer}``
dicts, read with a restricted unpickler that refuses anything but plain data) and ``images/{split}/<image>.jpg``.
Hugging Face mirror ``flaviagiammarino/path-vqa``: ``data/{train,validation,test}-*.parquet`` (19,654/6,259/
6,719 after dropping duplicate rows). Like the mirror, the original layout drops exact duplicate
(image, question, answer) rows, and both layouts use the same content-hash id (image bytes, question, answer),
so predictions line up whichever layout was read.
"""

from __future__ import annotations

import hashlib
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
    read_mirror_split,
    read_plain_pickle,
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
)

_ORIGINAL_SPLIT = {"train": "train", "validation": "val", "test": "test"}


@register_task
class PathVqa(Task):
    name = "pathvqa"
    description = "PathVQA: pathology VQA, 6,719 test questions (deduplicated); closed/open/overall accuracy"
    kind = "vqa"
    order = 2
    folder_aliases = ("pvqa", "PathVQA", "path-vqa")
    hub = HubMirror(
        "flaviagiammarino/path-vqa",
        "1685832883334b5bb5beaf4e4b333fdeecaa4ad9",
        {s: [f"data/{s}-*.parquet"] for s in ("train", "validation", "test")},
    )
    expected_layout = """
PathVQA expects, in <data-dir>/pathvqa/ (or pvqa/), the original layout:
  qas/{train,val,test}/{split}_qa.pkl     images/{train,val,test}/<image>.jpg
or the Hugging Face mirror layout data/{train,validation,test}-*.parquet (flaviagiammarino/path-vqa).
Get it from https://github.com/UCSD-AI4H/PathVQA (data/README.md) or `medbench data fetch --tasks pathvqa`."""

    def load(self, source: DataSource, split: str, options: LoadOptions) -> LoadedSplit:
        root = source.root
        if parquet_files(root, split):
            rows = read_mirror_split(root, split, ["question", "answer"])
            return self._build(rows, split, options, "hf-mirror", mirror_checksums(root, split))
        original = _ORIGINAL_SPLIT[split]
        pkl = root / "qas" / original / f"{original}_qa.pkl"
        if not pkl.is_file():
            raise DataError(self.missing_data_message([f"{pkl} (not found)", f"{root}/data/{split}-*.parquet"]))
        records = read_plain_pickle(pkl)
        if not isinstance(records, list):
            raise DataError(f"{pkl}: expected a list of question dicts, found {type(records).__name__}")
        folder = root / "images" / original
        files = {pkl.relative_to(root).as_posix(): sha256_file(pkl)}
        if folder.is_dir():
            files[f"images/{original}/"] = listing_checksum(folder)
        return self._build(self._original_rows(records, pkl.as_posix(), folder), split, options, "original", files)

    @staticmethod
    def _original_rows(records: list[Any], pkl: str, folder: Any) -> Any:
        digests: dict[str, str | None] = {}
        for index, record in enumerate(records):
            where = f"{pkl}[{index}]"
            if not isinstance(record, dict):
                yield (
                    where,
                    {"_error": f"{where}: expected a dict, found {type(record).__name__}"},
                    None,
                    None,
                )
                continue
            name = str(record.get("image", "")).strip()
            try:
                path = safe_join(folder, f"{name}.jpg" if name and "." not in name else name, where=where)
            except SampleError as exc:
                yield where, {"_error": str(exc)}, None, None
                continue
            if name not in digests:
                digests[name] = hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else None
            digest = digests[name]
            if digest is None:
                record = {
                    **record,
                    "_error": f"{where}: image {path} is missing; re-download the PathVQA images",
                }
            yield where, record, digest, ImageRef("file", str(path))

    def _build(self, rows: Any, split: str, options: LoadOptions, layout: str, files: dict[str, str]) -> LoadedSplit:
        samples: list[Sample] = []
        skipped: list[Skipped] = []
        seen: set[str] = set()
        duplicates = 0
        for where, record, digest, image in rows:
            try:
                if "_error" in record:
                    raise SampleError(record["_error"])
                question = clean_text(record.get("question"), field_name="question", where=where)
                answer = clean_text(record.get("answer"), field_name="answer", where=where)
                if digest is None:
                    raise SampleError(f"{where}: row has no image bytes; re-download the dataset")
            except SampleError as exc:
                skipped.append(Skipped(where, str(exc)))
                continue
            sample_id = content_id(digest, mirror_text(question), mirror_text(answer))
            if sample_id in seen:
                duplicates += 1  # the mirror drops these too: same image, question and answer
                continue
            seen.add(sample_id)
            image_name = record.get("image") or record.get("_image_path") or digest
            samples.append(
                self.vqa_sample(
                    sample_id=sample_id,
                    image=image,
                    question=question,
                    reference=answer,
                    dataset_label=None,
                    options=options,
                    metadata={"split": split, "image_id": str(image_name)},
                )
            )
        return LoadedSplit(samples, skipped, layout, files, {"duplicate_rows_dropped": duplicates})
