"""What every task plugin shares: the Task base class, load options/results, the closed/open rule, and
finding a dataset (``--data-dir`` / ``MEDBENCH_DATA``, the bundled demo set, or a pinned Hugging Face mirror).
"""

from __future__ import annotations

import hashlib
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from medbench.errors import DataError, SampleError
from medbench.schema import MAX_NEW_TOKENS, AnswerType, ImageRef, Sample, TaskKind
from medbench.scoring.normalize import is_yes_no
from medbench.tasks._readers import value_kind

ClosedRule = Literal["yesno", "answer_type"]
CLOSED_RULES: tuple[str, ...] = ("yesno", "answer_type")
DEMO_ROOT = Path(__file__).parent / "demo"


@dataclass(frozen=True)
class HubMirror:
    """A Hugging Face dataset mirror pinned to one commit, and the files a split needs from it."""

    repo_id: str
    revision: str
    patterns: dict[str, list[str]]  # split -> allow_patterns

    def allow_patterns(self, split: str) -> list[str]:
        return [*self.patterns.get(split, []), "README.md"]


@dataclass(frozen=True)
class DataSource:
    """Where a task's files were found. ``kind`` is ``local`` (user folder), ``demo`` or ``hub``."""

    kind: Literal["local", "demo", "hub"]
    root: Path
    repo_id: str | None = None
    revision: str | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.kind, "root": str(self.root)}
        if self.repo_id:
            out.update(repo_id=self.repo_id, revision=self.revision)
        return out


@dataclass(frozen=True)
class LoadOptions:
    """Options that change which samples a task yields."""

    closed_rule: ClosedRule = "yesno"
    full: bool = False  # rocov2: all test captions instead of the paper's fixed 1,000-sample subset
    seed: int = 0


@dataclass
class Skipped:
    """A sample that could not be used, with where it came from and why (never dropped silently).

    ``where`` names the file and the row (``file[index]``, ``file:line``, ``file row n``); ``reason`` starts
    with it and must not vary between runs (no object reprs or memory addresses).
    """

    where: str
    reason: str
    id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "where": self.where, "reason": self.reason}


@dataclass
class LoadedSplit:
    """The samples of one split plus everything needed to reproduce and audit them."""

    samples: list[Sample]
    skipped: list[Skipped]
    layout: str
    files: dict[str, str] = field(default_factory=dict)  # relative path of an annotation/mirror file -> sha256
    #: Audit notes, written into results.json. Every loader sets ``rows_read`` (rows in the annotation file or
    #: mirror) and ``dropped`` (rows left out on purpose, by reason: other split, non-English, exact duplicate,
    #: outside the paper subset), so that ``rows_read == len(samples) + len(skipped) + sum(dropped.values())``.
    #: ``warnings`` (list of str), when present, are shown to the user.
    notes: dict[str, Any] = field(default_factory=dict)

    def checksum(self) -> str:
        """One sha256 over the per-file checksums of everything read."""
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(f"{name}\0{self.files[name]}\n".encode())
        return digest.hexdigest()


def decide_answer_type(reference: str, dataset_label: str | None, rule: ClosedRule) -> tuple[AnswerType, bool]:
    """Closed or open for one VQA sample under ``rule``; the flag says the yes/no fallback was used.

    ``yesno``: closed iff the normalised gold is "yes" or "no" (the split the paper's Table 1 implies).
    ``answer_type``: the dataset's own OPEN/CLOSED label where it has one, else the yes/no rule (flagged).
    """
    if rule == "answer_type" and dataset_label:
        label = str(dataset_label).strip().upper()
        if label in ("OPEN", "CLOSED"):
            return ("closed" if label == "CLOSED" else "open"), False
    return ("closed" if is_yes_no(reference) else "open"), rule == "answer_type"


def _number_text(value: int | float) -> str:
    """A number as the text a person would write: ``2`` -> "2", ``2.0`` -> "2", ``2.5`` -> "2.5".

    VQA-RAD has a few integer answers (JSON ``4``, ``12``); LLaVA-Med's and MultiMedEval's loaders turn them
    into "4" and "12" with ``str``. An integral float is written the same way, so an answer of 2 reads "2"
    whichever way the file stored it.
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def clean_text(value: Any, *, field_name: str, where: str) -> str:
    """A non-empty stripped string from an annotation field, else a :class:`SampleError`.

    Strings and numbers are accepted (numbers as :func:`_number_text`); a missing value, NaN, infinity, a
    boolean, a list or an object is refused with a reason that names the type, never a Python repr.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise SampleError(f"{where}: {field_name} is missing; fix or remove this row", where=where)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SampleError(
            f"{where}: {field_name} is {value_kind(value)}, expected text or a number; fix or remove this row",
            where=where,
        )
    if isinstance(value, float) and math.isinf(value):
        raise SampleError(f"{where}: {field_name} is an infinite number; fix or remove this row", where=where)
    text = value.strip() if isinstance(value, str) else _number_text(value)
    if not text:
        raise SampleError(f"{where}: {field_name} is empty; fix or remove this row", where=where)
    return text


def qid_record(record: dict[str, Any], seen: set[str], *, image_key: str, where: str) -> tuple[str, str, str, str]:
    """``(id, question, answer, image name)`` of an original-layout record keyed by ``qid`` (SLAKE, VQA-RAD).

    The id is the qid as text (VQA-RAD has one string qid, "0"); a missing, empty or non-scalar qid, a repeated
    qid and an unusable question, answer or image name raise :class:`SampleError` (see :func:`clean_text`).
    """
    sample_id = clean_text(record.get("qid"), field_name="qid", where=where)
    if sample_id in seen:
        raise SampleError(f"{where}: duplicate qid {sample_id}; only the first is used", where=where)
    question = clean_text(record.get("question"), field_name="question", where=where)
    answer = clean_text(record.get("answer"), field_name="answer", where=where)
    image = clean_text(record.get(image_key), field_name=image_key, where=where)
    return sample_id, question, answer, image


def content_id(*parts: str) -> str:
    """A stable id from content, for sources without a native id."""
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


class Task(ABC):
    """A benchmark task. Subclasses live in one file each and register with ``@register_task``."""

    name: ClassVar[str]
    description: ClassVar[str]
    kind: ClassVar[TaskKind]
    order: ClassVar[int] = 100  # listing order (the paper's: SLAKE, PathVQA, VQA-RAD, ROCOv2)
    splits: ClassVar[tuple[str, ...]] = ("train", "validation", "test")
    folder_aliases: ClassVar[tuple[str, ...]] = ()
    #: Metadata fields ``results.json`` breaks the VQA metrics down by.
    subgroup_fields: ClassVar[tuple[str, ...]] = ()
    hub: ClassVar[HubMirror]
    #: One paragraph telling the user what files are expected where, and how to get them.
    expected_layout: ClassVar[str]

    @property
    def max_new_tokens(self) -> int:
        """The generation budget of this task's requests (its kind's, unless a task overrides it)."""
        return MAX_NEW_TOKENS[self.kind]

    @abstractmethod
    def load(self, source: DataSource, split: str, options: LoadOptions) -> LoadedSplit:
        """Read ``split`` from ``source`` into samples; per-row problems go to ``skipped``."""

    def vqa_sample(
        self,
        *,
        sample_id: str,
        image: ImageRef,
        question: str,
        reference: str,
        dataset_label: str | None,
        options: LoadOptions,
        metadata: dict[str, Any],
    ) -> Sample:
        """Build a VQA sample, applying the closed/open rule and recording the dataset's own label."""
        answer_type, fell_back = decide_answer_type(reference, dataset_label, options.closed_rule)
        meta = dict(metadata)
        meta["dataset_answer_type"] = str(dataset_label).upper() if dataset_label else None
        if fell_back:
            meta["closed_rule_fallback"] = True
        return Sample(sample_id, self.name, image, question, reference, answer_type, meta)

    def missing_data_message(self, tried: list[str]) -> str:
        lines = [f"no data found for task {self.name!r}.", "Looked in:"]
        lines += [f"  - {t}" for t in tried]
        lines += [
            "",
            self.expected_layout.strip(),
            "",
            "Or try the bundled demo set: `medbench run` (no arguments).",
        ]
        return "\n".join(lines)


def find_local_root(task: Task, data_dir: Path) -> Path | None:
    """The task's folder inside ``data_dir`` (its name or a known alias), if present."""
    for name in (task.name, *task.folder_aliases):
        candidate = data_dir / name
        if candidate.is_dir():
            return candidate
    return None


def locate(task: Task, split: str, *, data_dir: Path | None, demo: bool) -> DataSource:
    """Find where ``task``'s data lives, in this order: demo (if asked), ``data_dir`` or ``MEDBENCH_DATA``,
    then the pinned Hugging Face mirror (downloaded when the hub is reachable, else the local cache)."""
    if demo:
        return DataSource("demo", DEMO_ROOT / task.name)
    tried: list[str] = []
    env = os.environ.get("MEDBENCH_DATA")
    for folder, label in ((data_dir, "--data-dir"), (Path(env) if env else None, "MEDBENCH_DATA")):
        if folder is None:
            continue
        root = find_local_root(task, folder)
        if root is not None:
            return DataSource("local", root)
        names = " or ".join(f"{folder / n}/" for n in (task.name, *task.folder_aliases))
        tried.append(f"{label}: {names} (not found)")
        if label == "--data-dir":
            # An explicit folder is the user's intent: do not silently fall through to the hub.
            raise DataError(task.missing_data_message(tried))
    from medbench.data.hub import snapshot

    mirror = task.hub
    path, problem = snapshot(mirror.repo_id, mirror.revision, mirror.allow_patterns(split))
    if path is not None:
        return DataSource("hub", path, mirror.repo_id, mirror.revision)
    tried.append(f"Hugging Face mirror {mirror.repo_id}@{mirror.revision[:10]}: {problem}")
    raise DataError(task.missing_data_message(tried))
