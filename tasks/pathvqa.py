"""PathVQA (He et al., 2020): pathology VQA.

Original layout: ``qas/{train,val,test}/{split}_qa.pkl`` (a pickled list of ``{image, question, answer}``
dicts, read with a restricted unpickler that refuses anything but plain data) and ``images/{split}/<image>.jpg``.
Hugging Face mirror ``flaviagiammarino/path-vqa``: ``data/{train,validation,test}-*.parquet`` (19,654/6,259/
6,719). The mirror was made (its scripts/processing.py) by dropping exact duplicate (image, question, answer)
rows of the pickles (``DataFrame.drop_duplicates``) and then lowercasing; the original layout drops exactly
those rows (test: 42 of 6,761) and records where they were. Both layouts give a row the same content-hash id
(image bytes, lowercased question, lowercased answer, and for the second and later rows equal after
lowercasing, their occurrence number), so predictions line up whichever layout was read.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medbench.errors import DataError, SampleError
from medbench.images import safe_join
from medbench.registry import register_task
from medbench.schema import ImageRef, Sample
from medbench.tasks._readers import (
    mirror_checksums,
    mirror_text,
    parquet_files,
    read_mirror_split,
    read_plain_pickle,
    sha256_file,
    value_kind,
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


@dataclass(frozen=True)
class _Duplicate:
    """A pickle row that repeats an earlier one exactly (the mirror dropped it): where the first one is."""

    first: str


#: One row as ``_build`` sees it: (where, the record, an error message or a duplicate marker, image sha1, image).
Row = tuple[str, dict[str, Any] | str | _Duplicate, str | None, ImageRef | None]

_ORIGINAL_SPLIT = {"train": "train", "validation": "val", "test": "test"}


@register_task
class PathVqa(Task):
    name = "pathvqa"
    description = (
        "PathVQA: pathology VQA, 6,719 test questions (exact duplicates dropped); closed/open/overall accuracy"
    )
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
            rows = self._mirror_rows(root, split)
            return self._build(rows, split, options, "hf-mirror", mirror_checksums(root, split))
        original = _ORIGINAL_SPLIT[split]
        pkl = root / "qas" / original / f"{original}_qa.pkl"
        if not pkl.is_file():
            raise DataError(self.missing_data_message([f"{pkl} (not found)", f"{root}/data/{split}-*.parquet"]))
        records = read_plain_pickle(pkl)
        if not isinstance(records, list):
            raise DataError(f"{pkl}: expected a list of question dicts, found {type(records).__name__}")
        files = {pkl.relative_to(root).as_posix(): sha256_file(pkl)}
        folder = root / "images" / original
        return self._build(self._original_rows(records, pkl, folder), split, options, "original", files)

    @staticmethod
    def _mirror_rows(root: Path, split: str) -> Iterator[Row]:
        for where, record, digest, image in read_mirror_split(root, split, ["question", "answer"]):
            if digest is None:
                yield where, f"{where}: row has no image bytes; re-download the parquet file", None, None
            else:
                yield where, record, digest, image

    @staticmethod
    def _original_rows(records: list[Any], pkl: Path, folder: Path) -> Iterator[Row]:
        """The pickle's rows as :data:`Row`; an exact duplicate of an earlier row (as the mirror's
        ``drop_duplicates`` sees rows) comes as a :class:`_Duplicate` naming the first one."""
        digests: dict[str, str | None] = {}
        first: dict[tuple[Any, ...], str] = {}
        for index, record in enumerate(records):
            where = f"{pkl}[{index}]"
            if not isinstance(record, dict):
                yield where, f"{where}: expected a dict, found {value_kind(record)}", None, None
                continue
            key = _exact_key(record)
            if key is not None and key in first:
                yield where, _Duplicate(first[key]), None, None
                continue
            if key is not None:
                first[key] = where
            try:
                name = clean_text(record.get("image"), field_name="image", where=where)
                path = safe_join(folder, f"{name}.jpg" if "." not in name else name, where=where)
            except SampleError as exc:
                yield where, str(exc), None, None
                continue
            if name not in digests:
                digests[name] = _sha1(path)
            if digests[name] is None:
                yield (
                    where,
                    f"{where}: image {path} is missing or unreadable; re-download the PathVQA images",
                    None,
                    None,
                )
                continue
            yield where, record, digests[name], ImageRef("file", str(path))

    def _build(
        self, rows: Iterator[Row], split: str, options: LoadOptions, layout: str, files: dict[str, str]
    ) -> LoadedSplit:
        samples: list[Sample] = []
        skipped: list[Skipped] = []
        duplicates: list[str] = []
        occurrences: Counter[str] = Counter()
        rows_read = 0
        for where, record, digest, image in rows:
            rows_read += 1
            if isinstance(record, _Duplicate):
                duplicates.append(f"{where} (same image, question and answer as {record.first})")
                continue
            try:
                if isinstance(record, str):
                    raise SampleError(record, where=where)
                if digest is None or image is None:
                    raise SampleError(f"{where}: row has no image; re-download the dataset", where=where)
                question = clean_text(record.get("question"), field_name="question", where=where)
                answer = clean_text(record.get("answer"), field_name="answer", where=where)
            except SampleError as exc:
                skipped.append(Skipped(where, str(exc)))
                continue
            # Rows that differ only in case or spacing are distinct in the pickle (the mirror keeps both, then
            # lowercases them into equal rows): number them by occurrence so ids stay unique and equal across
            # layouts. The first occurrence keeps the plain content id.
            parts = (digest, mirror_text(question), mirror_text(answer))
            base = content_id(*parts)
            occurrences[base] += 1
            n = occurrences[base]
            sample_id = base if n == 1 else content_id(*parts, f"occurrence {n}")
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
        notes = {
            "rows_read": rows_read,
            "dropped": {"exact_duplicates": len(duplicates)},
            "duplicate_rows_dropped": len(duplicates),
            "duplicate_rows": duplicates,
        }
        return LoadedSplit(samples, skipped, layout, files, notes)


def _sha1(path: Path) -> str | None:
    """sha1 of an image file (the mirror's image bytes are the originals', so ids agree), None if unreadable."""
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _exact_key(record: dict[str, Any]) -> tuple[Any, ...] | None:
    """A pickle row as ``DataFrame.drop_duplicates`` compares rows (every column, exact values; a missing key
    reads as missing), or None when a value is not a plain scalar (such a row is skipped later anyway)."""
    items = sorted((str(k), v) for k, v in record.items() if v is not None)
    if all(isinstance(v, str | int | float) for _k, v in items):
        return tuple(items)
    return None
