"""VQA-RAD (Lau et al., Sci Data 2018).

Original layout (OSF): ``VQA_RAD Dataset Public.json`` plus ``VQA_RAD Image Folder/synpic*.jpg``; the official
split is ``phrase_type``: train = {freeform, para}, test = {test_freeform, test_para} (451 questions). id = ``qid``.
Hugging Face mirror ``flaviagiammarino/vqa-rad``: ``data/{train,test}-*.parquet`` with image/question/answer
(1,793/451), lowercased, without ``answer_type``/``question_type``/``image_organ``. When the original JSON sits
next to the mirror, mirror rows get those fields back by joining on (image bytes, question, answer), or, where the
original images are not there (the JSON is small, the images come with the mirror), on (question, answer) alone
as long as every original row with that question and answer carries the same labels; rows that match nothing,
or only rows that disagree, stay unlabelled and are counted in ``notes["join_with_original"]``.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medbench.errors import DataError, SampleError
from medbench.images import safe_join
from medbench.registry import register_task
from medbench.schema import ImageRef, Sample
from medbench.tasks._readers import (
    id_text,
    mirror_checksums,
    mirror_text,
    parquet_files,
    read_json_records,
    read_mirror_split,
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
    qid_record,
)

ORIGINAL_JSON = "VQA_RAD Dataset Public.json"
IMAGE_FOLDER = "VQA_RAD Image Folder"
_PHRASE_TYPES = {"train": {"freeform", "para"}, "test": {"test_freeform", "test_para"}}
_ALL_PHRASE_TYPES = sorted(set().union(*_PHRASE_TYPES.values()))
#: Fields a joined mirror row takes from the original; the first three are labels that results depend on
#: (closed/open rule, subgroups), so original rows that disagree on them are never used for a join.
_LABELS = ("answer_type", "question_type", "image_organ")
_JOINED_FIELDS = (*_LABELS, "qid", "phrase_type", "image_name")


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
    def _original_records(self, root: Path, split: str) -> _OriginalSplit:
        """The rows of ``split`` in the original JSON, with every other row counted: skipped (not an object, no
        known ``phrase_type``) or dropped (the other split)."""
        json_path = root / ORIGINAL_JSON
        wanted = _PHRASE_TYPES[split]
        records = read_json_records(json_path)
        out = _OriginalSplit(json_path, len(records), {ORIGINAL_JSON: sha256_file(json_path)})
        for index, record in enumerate(records):
            where = f"{json_path}[{index}]"
            if not isinstance(record, dict):
                out.skipped.append(Skipped(where, f"{where}: expected an object, found {value_kind(record)}"))
                continue
            phrase = record.get("phrase_type")
            phrase = phrase.strip() if isinstance(phrase, str) else phrase
            if not isinstance(phrase, str) or phrase not in _ALL_PHRASE_TYPES:
                out.skipped.append(
                    Skipped(
                        where,
                        f"{where}: {_phrase_problem(record)}, so the row's split is unknown (expected one of "
                        f"{', '.join(_ALL_PHRASE_TYPES)}); fix or remove this row",
                        id_text(record.get("qid")),
                    )
                )
                continue
            if phrase not in wanted:
                out.other_split += 1
                continue
            out.rows.append((where, record))
        if not out.rows:
            raise DataError(f"{json_path}: no rows with phrase_type in {sorted(wanted)}; is this the VQA-RAD file?")
        return out

    def _load_original(self, root: Path, split: str, options: LoadOptions) -> LoadedSplit:
        original = self._original_records(root, split)
        folder = root / IMAGE_FOLDER
        if not folder.is_dir():
            raise DataError(self.missing_data_message([f"{folder}/ (not found)"]))
        samples: list[Sample] = []
        skipped = list(original.skipped)
        seen: set[str] = set()
        for where, record in original.rows:
            try:
                sample_id, question, answer, name = qid_record(record, seen, image_key="image_name", where=where)
                path = safe_join(folder, name, where=where)
                if not path.is_file():
                    raise SampleError(f"{where}: image {path} is missing; re-download the VQA-RAD image folder")
            except SampleError as exc:
                skipped.append(Skipped(where, str(exc), id_text(record.get("qid"))))
                continue
            seen.add(sample_id)
            samples.append(
                self._sample(sample_id, ImageRef("file", str(path)), question, answer, record, split, options, name)
            )
        notes = {"rows_read": original.rows_read, "dropped": {"other_split": original.other_split}}
        return LoadedSplit(samples, skipped, "original", original.files, notes)

    # -- Hugging Face mirror ------------------------------------------------------------------------------
    def _join_index(self, root: Path, split: str) -> tuple[_JoinIndex, dict[str, str]]:
        """The original rows of ``split`` indexed for joining mirror rows to them."""
        original = self._original_records(root, split)
        folder = root / IMAGE_FOLDER
        index = _JoinIndex()
        digests: dict[str, str | None] = {}
        for where, record in original.rows:
            try:
                question = clean_text(record.get("question"), field_name="question", where=where)
                answer = clean_text(record.get("answer"), field_name="answer", where=where)
                name = clean_text(record.get("image_name"), field_name="image_name", where=where)
            except SampleError:
                index.unusable += 1  # the same row would be skipped when loading the original layout
                continue
            if name not in digests:
                digests[name] = _file_sha1(folder, name, where)
            digest = digests[name]
            key = (mirror_text(question), mirror_text(answer))
            record = {**record, "image_name": name}
            index.by_text[key].append(record)
            if digest is not None:
                index.by_image[(digest, *key)].append(record)
        index.images_found = sum(1 for d in digests.values() if d is not None)
        index.images_named = len(digests)
        return index, original.files

    def _load_mirror(self, root: Path, split: str, options: LoadOptions, *, join: bool) -> LoadedSplit:
        files = mirror_checksums(root, split)
        index = _JoinIndex()
        if join:
            index, original_files = self._join_index(root, split)
            files.update(original_files)
        samples: list[Sample] = []
        skipped: list[Skipped] = []
        seen: set[str] = set()
        joined: Counter[str] = Counter()
        unjoined: list[str] = []
        rows_read = 0
        for where, record, digest, image in read_mirror_split(root, split, ["question", "answer"]):
            rows_read += 1
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
                    Skipped(where, f"{where}: duplicate of an earlier row (same image, question, answer)", sample_id)
                )
                continue
            seen.add(sample_id)
            original: dict[str, Any] = {}
            if join:
                original, how = index.match(digest, mirror_text(question), mirror_text(answer))
                joined[how] += 1
                if not original:
                    unjoined.append(f"{where}: {how}")
            samples.append(
                self._sample(
                    sample_id, image, question, answer, original, split, options, original.get("image_name") or digest
                )
            )
        notes: dict[str, Any] = {"rows_read": rows_read, "dropped": {}}
        layout = "hf-mirror"
        if join:
            notes["join_with_original"], notes["warnings"] = _join_report(index, joined, unjoined, len(samples))
            if notes["join_with_original"]["matched"]:
                layout = "hf-mirror + original (joined)"
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
        image_id: str,
    ) -> Sample:
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
                "qid": id_text(record.get("qid")),
                "question_type": record.get("question_type"),
                "image_organ": record.get("image_organ"),
                "phrase_type": record.get("phrase_type"),
            },
        )


def _phrase_problem(record: dict[str, Any]) -> str:
    """What is wrong with a record's ``phrase_type``, for a skip reason."""
    if "phrase_type" not in record:
        return "phrase_type is missing"
    phrase = record["phrase_type"]
    return (
        f"phrase_type {phrase.strip()!r} is unknown"
        if isinstance(phrase, str)
        else f"phrase_type is {value_kind(phrase)}"
    )


def _file_sha1(folder: Path, name: str, where: str) -> str | None:
    """sha1 of an original image (the mirror's image bytes are the originals'), None when it is not there."""
    try:
        return hashlib.sha1(safe_join(folder, name, where=where).read_bytes()).hexdigest()
    except (SampleError, OSError):
        return None


@dataclass
class _OriginalSplit:
    """The rows of one split of the original JSON and how every other row was accounted for."""

    path: Path
    rows_read: int
    files: dict[str, str]
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    other_split: int = 0


_BY_IMAGE = "image+question+answer"
_BY_TEXT = "question+answer"
_AMBIGUOUS = "ambiguous: original rows with this question and answer disagree on answer_type/question_type/image_organ"
_NO_MATCH = "no original row has this question and answer"


@dataclass
class _JoinIndex:
    """Original rows by (image sha1, question, answer) and by (question, answer), in the mirror's lowercase."""

    by_image: defaultdict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    by_text: defaultdict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    unusable: int = 0  # rows without a usable question, answer or image name
    images_found: int = 0
    images_named: int = 0

    def match(self, digest: str, question: str, answer: str) -> tuple[dict[str, Any], str]:
        """``(fields taken from the original, how)``: the fields are empty when nothing could be joined, and
        ``how`` is the key used or why no join was made."""
        for how, rows in (
            (_BY_IMAGE, self.by_image.get((digest, question, answer))),
            (_BY_TEXT, self.by_text.get((question, answer))),
        ):
            if rows:
                merged = _merge(rows)
                return (merged, how) if merged is not None else ({}, _AMBIGUOUS)
        return {}, _NO_MATCH


def _merge(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The joined fields of ``rows`` (original rows sharing one join key): None if they disagree on a label;
    other fields (qid, image name) are kept only where all rows agree, so nothing is guessed."""
    merged: dict[str, Any] = {}
    for name in _JOINED_FIELDS:
        values = {_label_text(row.get(name)) for row in rows}
        if len(values) > 1:
            if name in _LABELS:
                return None
            continue
        merged[name] = rows[0].get(name)
    return merged


def _label_text(value: Any) -> Any:
    """A label as compared for a join (VQA-RAD has 'CLOSED ' with a trailing space in two rows)."""
    return value.strip().upper() if isinstance(value, str) else value


def _join_report(
    index: _JoinIndex, joined: Counter[str], unjoined: list[str], total: int
) -> tuple[dict[str, Any], list[str]]:
    """``notes["join_with_original"]`` and the warnings to show for a mirror joined with the original JSON."""
    matched = joined[_BY_IMAGE] + joined[_BY_TEXT]
    report: dict[str, Any] = {
        "matched": matched,
        "unmatched": total - matched,
        "matched_by": {_BY_IMAGE: joined[_BY_IMAGE], _BY_TEXT: joined[_BY_TEXT]},
        "unmatched_why": {why: joined[why] for why in (_AMBIGUOUS, _NO_MATCH) if joined[why]},
        "unmatched_rows": unjoined,
        "original_images_found": f"{index.images_found} of {index.images_named}",
        "original_rows_unusable": index.unusable,
    }
    warnings: list[str] = []
    if not matched:
        warnings.append(
            f"vqa_rad: {ORIGINAL_JSON} was found next to the mirror, but none of its rows matched any of the "
            f"{total} mirror rows, so no answer_type/question_type/image_organ labels were recovered "
            "(layout reported as hf-mirror); check that both are the same release"
        )
        return report, warnings
    if joined[_BY_TEXT]:
        warnings.append(
            f"vqa_rad: {joined[_BY_TEXT]} of {total} mirror rows were joined to {ORIGINAL_JSON} by question and "
            f"answer text only (original images found: {report['original_images_found']}; put the "
            f"'{IMAGE_FOLDER}/' folder next to it to join on image bytes too)"
        )
    if total - matched:
        reasons = "; ".join(f"{n} {why}" for why, n in report["unmatched_why"].items())
        warnings.append(
            f"vqa_rad: {total - matched} of {total} mirror rows could not be joined to {ORIGINAL_JSON} ({reasons}); "
            "they have no answer_type/question_type/image_organ labels (see notes.join_with_original.unmatched_rows)"
        )
    return report, warnings
