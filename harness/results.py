"""The results contract: what a run directory holds, as typed records, and the one way to read it back.

``medbench run`` (through :class:`RunResults`) is the only writer of ``results.json``; the console, ``medbench
score``, the reports and the regression gate read runs through :func:`load_run`, never by poking at JSON paths.

``results.json`` (``schema_version`` 1) keeps the shape earlier versions wrote — ``metrics[model][task][protocol]
[metric] = {value, ci95, n}``, ``subgroups``, ``judge_agreement``, ``counts``, ``tasks``, ``models``, ``scoring``,
``headline`` — and adds ``schema_version`` and ``comparability[model][task] = {key, settings}``.

The **comparability key** of a (model, task) result hashes exactly what decides its numbers besides the model: the
task, split, data checksum (annotation files and every evaluated image's bytes), closed rule, prompt style and
template hash, image size, generation budget, protocol definitions, BERTScore variant, judge identity, bootstrap
settings and medbench's scoring version — and nothing operational (output or cache path, batch size, image
verification, thread counts). Two results with equal keys are comparable; :meth:`Comparability.differences` says
which setting differs when they are not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from medbench.errors import DataError, SampleError
from medbench.provenance import stable_hash
from medbench.schema import ImageRef

SCHEMA_VERSION = 1
#: Bumped whenever a change to scoring can move a number for the same predictions.
SCORING_VERSION = 1
#: Keys of ``results.json`` that hold per-(model, task) results.
_PER_RESULT = ("metrics", "subgroups", "judge_agreement")


class MetricEntry(TypedDict, total=False):
    """One metric: ``value`` (a fraction in [0, 1]; a 1-5 score with ``scale``; an int for counts such as
    ``judge_failures``; None when no sample counted), its percentile-bootstrap ``ci95`` [lo, hi] (None for counts
    and empty subsets) and ``n``, the samples it averages."""

    value: float | int | None
    ci95: list[float] | None
    n: int
    scale: str


class ImageRecord(TypedDict, total=False):
    """A prediction row's image: see :func:`image_record`."""

    kind: str
    path: str
    member: str | None
    row_group: int
    row: int
    sha256: str


class PredictionRow(TypedDict, total=False):
    """One line of ``predictions/<model>/<task>.jsonl``. ``prediction`` is the raw output, ``answer`` the extracted
    answer, ``scores`` ``{protocol or metric: value}`` (``protocol/extra`` keys for protocol extras), ``judge`` the
    judge's record where one ran (verdict or score, reason, raw reply, judge and server-reported model, failure)."""

    id: str
    task: str
    model: str
    answer_type: str | None
    question: str | None
    reference: str
    prediction: str
    answer: str
    metadata: dict[str, Any]
    image: ImageRecord
    scores: dict[str, float | None]
    judge: dict[str, Any]


#: ``metrics[protocol][metric]`` of one (model, task).
TaskMetrics = dict[str, dict[str, MetricEntry]]


@dataclass(frozen=True)
class Comparability:
    """The comparability key of one (model, task) result and the settings it hashes."""

    key: str
    settings: dict[str, Any]

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Comparability:
        return cls(stable_hash(dict(settings)), dict(settings))

    def differences(self, other: Comparability) -> dict[str, tuple[Any, Any]]:
        """``{setting: (ours, theirs)}`` for every setting that differs (empty iff the keys are equal)."""
        names = sorted(set(self.settings) | set(other.settings))
        return {
            n: (self.settings.get(n), other.settings.get(n))
            for n in names
            if self.settings.get(n) != other.settings.get(n)
        }

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "settings": self.settings}


def comparability_settings(
    *,
    task: str,
    task_info: Mapping[str, Any],
    scoring: Mapping[str, Any],
    judge: Mapping[str, Any] | None,
    image_size: int,
    max_new_tokens: int,
) -> dict[str, Any]:
    """What decides a (model, task) result's numbers besides the model (see the module docstring)."""
    data = task_info.get("data", {})
    variant = scoring.get("bertscore") or {}
    # The BERTScore model by content where it is a local folder (its path differs between machines), else by name.
    bertscore = {k: v for k, v in variant.items() if k in ("num_layers", "idf", "rescale_with_baseline", "lowercase")}
    bertscore["model"] = variant.get("weights_digest") or variant.get("model")
    settings: dict[str, Any] = {
        "task": task,
        "split": task_info.get("split"),
        "data_checksum": data.get("checksum"),
        "closed_rule": (task_info.get("closed_rule") or {}).get("rule"),
        "prompt_style": (task_info.get("prompt") or {}).get("style"),
        "prompt_sha256": (task_info.get("prompt") or {}).get("sha256"),
        "image_size": image_size,
        "max_new_tokens": max_new_tokens,
        "protocols_sha256": stable_hash(scoring.get("protocols")),
        "bertscore": bertscore if task_info.get("kind") == "caption" else None,
        "bootstrap": scoring.get("bootstrap"),
        "judge": _judge_identity(judge),
        "scoring_version": SCORING_VERSION,
    }
    return settings


def _judge_identity(judge: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The judge's model, endpoint scope and prompt templates (not its concurrency, timeouts or key variable)."""
    if not judge:
        return None
    templates = {name: t.get("sha256") for name, t in (judge.get("templates") or {}).items()}
    return {"model": judge.get("model"), "scope": judge.get("cache_scope"), "templates": templates}


@dataclass
class TaskResult:
    """One model's result on one task."""

    model: str
    task: str
    metrics: TaskMetrics
    counts: dict[str, Any]
    comparability: Comparability
    subgroups: dict[str, Any] | None = None
    judge_agreement: dict[str, Any] | None = None
    timing: dict[str, Any] | None = None

    def metric(self, protocol: str, metric: str) -> MetricEntry | None:
        """``{value, ci95, n}`` of one metric, or None."""
        return self.metrics.get(protocol, {}).get(metric)


@dataclass
class RunResults:
    """A run's results: the header (tasks, models, scoring, judge) and a :class:`TaskResult` per (model, task).

    Built by the runner, written with :meth:`write`, read back with :func:`load_run` (``run_dir`` set: prediction
    rows are then read lazily with :meth:`rows`)."""

    header: dict[str, Any]
    results: dict[str, dict[str, TaskResult]] = field(default_factory=dict)
    run_dir: Path | None = None

    @property
    def tasks(self) -> dict[str, Any]:
        return dict(self.header.get("tasks", {}))

    @property
    def models(self) -> list[str]:
        return list(self.results)

    def add(self, result: TaskResult) -> None:
        self.results.setdefault(result.model, {})[result.task] = result

    def get(self, model: str, task: str) -> TaskResult | None:
        return self.results.get(model, {}).get(task)

    def rows(self, model: str, task: str) -> Iterator[PredictionRow]:
        """The prediction rows of one (model, task), read lazily from ``predictions/<model>/<task>.jsonl``."""
        if self.run_dir is None:
            raise DataError("these results were not read from a run directory; no prediction rows to read")
        path = self.run_dir / "predictions" / safe_name(model) / f"{task}.jsonl"
        try:
            handle = path.open(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{path}: cannot be read ({exc}); is the run complete?") from exc
        with handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc

    def record(self) -> dict[str, Any]:
        """The run's ``run.json`` (argv, resolved config, versions, git commit, platform, threads, status); empty when
        these results were not read from a run directory or it has none."""
        if self.run_dir is None:
            return {}
        try:
            data = json.loads((self.run_dir / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` document."""
        doc = dict(self.header)
        doc["tasks"] = {task: dict(info) for task, info in self.header.get("tasks", {}).items()}
        doc["schema_version"] = SCHEMA_VERSION
        if "judge" in self.header:
            doc["judge_agreement"] = {}
        for key in ("metrics", "subgroups", "comparability"):
            doc[key] = {}
        for model, per_task in self.results.items():
            doc["metrics"][model] = {t: r.metrics for t, r in per_task.items()}
            doc["subgroups"][model] = {t: r.subgroups for t, r in per_task.items() if r.subgroups is not None}
            doc["comparability"][model] = {t: r.comparability.to_json() for t, r in per_task.items()}
            agreements = {t: r.judge_agreement for t, r in per_task.items() if r.judge_agreement is not None}
            if agreements:
                doc.setdefault("judge_agreement", {})[model] = agreements
            doc.setdefault("counts", {})[model] = {t: r.counts for t, r in per_task.items()}
            for task, result in per_task.items():
                if result.timing is not None:
                    doc["tasks"].setdefault(task, {}).setdefault("timing", {})[model] = result.timing
        return doc

    @classmethod
    def from_json(
        cls, doc: Mapping[str, Any], run_dir: Path | None = None, *, where: str = "results.json"
    ) -> RunResults:
        """Read a ``results.json`` document; one without ``schema_version`` (written before the contract) is read
        as version 0 — the same shape without comparability keys — and says so in ``header["upgraded_from"]``."""
        version = doc.get("schema_version", 0)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise DataError(
                f"{where}: schema_version {version!r} is newer than this medbench reads ({SCHEMA_VERSION}); "
                "upgrade medbench to read this run"
            )
        if "metrics" not in doc or "tasks" not in doc:
            raise DataError(f"{where}: not a medbench results document (no 'metrics' or 'tasks')")
        header = {k: v for k, v in doc.items() if k not in (*_PER_RESULT, "counts", "comparability", "schema_version")}
        header["tasks"] = {t: {k: v for k, v in info.items() if k != "timing"} for t, info in doc["tasks"].items()}
        if version == 0:
            header["upgraded_from"] = 0
        out = cls(header, run_dir=run_dir)
        for model, per_task in doc["metrics"].items():
            for task, metrics in per_task.items():
                key = (doc.get("comparability", {}).get(model, {}).get(task)) or {}
                out.add(
                    TaskResult(
                        model=model,
                        task=task,
                        metrics=metrics,
                        counts=doc.get("counts", {}).get(model, {}).get(task, {}),
                        comparability=Comparability(key.get("key", ""), key.get("settings", {})),
                        subgroups=doc.get("subgroups", {}).get(model, {}).get(task),
                        judge_agreement=(doc.get("judge_agreement") or {}).get(model, {}).get(task),
                        timing=doc["tasks"].get(task, {}).get("timing", {}).get(model),
                    )
                )
        return out

    def write(self, run_dir: Path) -> None:
        """Write ``results.json`` atomically (a killed run leaves the previous complete version)."""
        from medbench.fileio import write_json_atomic

        write_json_atomic(run_dir / "results.json", self.to_json())


def image_record(ref: ImageRef, root: Path, sha256: str) -> ImageRecord:
    """A prediction row's locatable image reference: ``{kind, path, member, row_group, row, sha256}`` with ``path``
    relative to the data root (``member``: the zip member or parquet column; ``row_group``/``row``: the parquet
    cell), so a report can show the image from the data folder without running a loader, and check it is the
    same image by its sha256."""
    path = Path(ref.path)
    try:
        relative = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # outside the data root (a symlinked folder): keep it absolute
        relative = path.as_posix()
    record: ImageRecord = {"kind": ref.kind, "path": relative, "sha256": sha256}
    if ref.kind != "file":
        record["member"] = ref.member
    if ref.kind == "parquet":
        record["row_group"] = ref.row_group
        record["row"] = ref.row
    return record


def image_ref(record: Mapping[str, Any], root: Path | None) -> ImageRef:
    """The inverse of :func:`image_record`: the :class:`ImageRef` a prediction row's image record points at, its
    relative ``path`` joined to the task's data ``root``. A record it cannot locate is a :class:`SampleError`."""
    path = Path(str(record.get("path", "")))
    if not path.is_absolute():
        if root is None:
            raise SampleError("the run does not record its data folder")
        path = root / path
    kind = record.get("kind", "file")
    if kind not in ("file", "zip", "parquet"):
        raise SampleError(f"unknown image kind {kind!r}")
    return ImageRef(
        kind, str(path), record.get("member"), int(record.get("row_group", 0) or 0), int(record.get("row", 0) or 0)
    )


#: The longest :func:`safe_name`: two of them side by side (a report's ``A~vs~B`` folder) stay under the 255-byte
#: file-name limit of common file systems.
SAFE_NAME_MAX = 96


def safe_name(model_name: str) -> str:
    """A model name usable as a folder name (``hf:/x/y+lora:z`` -> ``hf__x_y+lora_z``): ``predictions/<it>/``.
    A longer one than :data:`SAFE_NAME_MAX` (an adapter's absolute path) keeps its first 80 characters and ends with
    12 hex digits of the whole name's sha256, so that names differing only at the end stay apart."""
    slug = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in model_name).strip("._") or "model"
    if len(slug) <= SAFE_NAME_MAX:
        return slug
    return f"{slug[:80]}-{hashlib.sha256(model_name.encode()).hexdigest()[:12]}"


def load_run(run_dir: str | Path) -> RunResults:
    """Read a run directory's ``results.json`` (prediction rows are read lazily with :meth:`RunResults.rows`).

    A folder without ``results.json``, an unreadable or malformed one, or one from a newer medbench is a
    :class:`~medbench.errors.DataError` naming the file and what to do; one from before the contract (no
    ``schema_version``) is read as version 0."""
    folder = Path(run_dir)
    path = folder / "results.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{folder}: no results.json; is this a medbench run directory (and did the run finish)?"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as JSON ({exc}); was the run interrupted while writing it?") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return RunResults.from_json(doc, folder, where=str(path))
