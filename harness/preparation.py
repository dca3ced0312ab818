"""Preparing a task for a run: locate and load its split, read, hash and check every distinct image once, and
record the split's content checksums, closed/open counts and warnings. Every model then sees exactly these
samples."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medbench.errors import DataError, SampleError
from medbench.images import decode_image, read_image_bytes
from medbench.prompts import prompt_hash
from medbench.registry import get_task
from medbench.runconfig import RunConfig
from medbench.schema import ImageRef, Sample
from medbench.scoring.caption import lexical_variants
from medbench.tasks.base import LoadedSplit, LoadOptions, Skipped, Task, locate

Progress = Callable[[str, int], Any]  # (description, total) -> context manager yielding advance(n)


@dataclass
class PreparedTask:
    """A loaded task split, its images checked, ready for every model."""

    task: Task
    split: LoadedSplit
    samples: list[Sample]
    skipped: list[Skipped]
    info: dict[str, Any]
    image_sha256: dict[str, str]  # sample id -> sha256 of its image bytes (part of every prediction's cache key)
    root: Path  # the data folder the images were read from


def _closed_counts(samples: Sequence[Sample]) -> dict[str, int]:
    counts = Counter(s.answer_type for s in samples)
    return {"closed": counts.get("closed", 0), "open": counts.get("open", 0)}


def image_digests(
    samples: Sequence[Sample], verify: bool, progress: Progress, name: str
) -> tuple[dict[ImageRef, str], dict[ImageRef, str]]:
    """sha256 of the bytes behind every distinct image reference, and the references that failed, with the reason.

    Each reference is read once however many questions share it, and with ``verify`` each distinct content is
    decoded once: PathVQA's original files hold 858 images for 6,719 questions, and its mirror repeats the same
    image bytes in every row.
    """
    digests: dict[ImageRef, str] = {}
    failed: dict[ImageRef, str] = {}
    decoded: dict[str, str | None] = {}  # digest -> None if it decodes, else why not (first failure's message)
    refs = list(dict.fromkeys(s.image for s in samples))
    label = "checking images" if verify else "hashing images"
    with progress(f"{label} {name}", len(refs)) as advance:
        for ref in refs:
            advance(1)
            try:
                data = read_image_bytes(ref)
            except SampleError as exc:
                failed[ref] = str(exc)
                continue
            digest = hashlib.sha256(data).hexdigest()
            if verify and digest not in decoded:
                decoded[digest] = _decode_problem(data, ref)
            problem = decoded.get(digest)
            if problem is not None:
                failed[ref] = problem
            else:
                digests[ref] = digest
    return digests, failed


def _decode_problem(data: bytes, ref: ImageRef) -> str | None:
    """None if ``data`` decodes as an image, else the reason (naming ``ref``)."""
    try:
        decode_image(data, where=ref.describe(), size=None)
    except SampleError as exc:
        return str(exc)
    return None


def data_checksums(annotations: str, samples: Sequence[Sample], digests: dict[ImageRef, str]) -> dict[str, str]:
    """The split's content checksums: its annotation files, the bytes of every evaluated sample's image (bound to
    the sample id, so swapping two images changes it), and both together (``checksum``)."""
    images = hashlib.sha256()
    for sample_id, digest in sorted((s.id, digests[s.image]) for s in samples):
        images.update(f"{sample_id}\0{digest}\n".encode())
    both = hashlib.sha256(f"{annotations}\0{images.hexdigest()}".encode()).hexdigest()
    return {"checksum": both, "annotations_sha256": annotations, "images_sha256": images.hexdigest()}


def prepare_task(name: str, config: RunConfig, progress: Progress) -> PreparedTask:
    """Locate, load and check one task's evaluation split."""
    task = get_task(name)
    if config.split not in task.splits:
        raise DataError(f"task {name!r} has no split {config.split!r}; it has {', '.join(task.splits)}")
    source = locate(task, config.split, data_dir=config.data_dir, demo=config.demo)
    options = LoadOptions(closed_rule=config.closed_rule, full=config.full, seed=config.seed)
    loaded = task.load(source, config.split, options)
    skipped = list(loaded.skipped)
    samples = loaded.samples[: config.limit] if config.limit else list(loaded.samples)
    digests, failed = image_digests(samples, config.verify_images, progress, name)
    skipped += [Skipped(s.image.describe(), failed[s.image], s.id) for s in samples if s.image in failed]
    samples = [s for s in samples if s.image not in failed]
    if not samples:
        reasons = "; ".join(s.reason for s in skipped[:3])
        raise DataError(f"task {name!r}: no usable samples in {source.root} ({len(skipped)} skipped: {reasons})")
    checksums = data_checksums(loaded.checksum(), samples, digests)
    info = {
        "split": config.split,
        "kind": task.kind,
        "data": source.describe()
        | {"layout": loaded.layout, **checksums, "files": loaded.files, "images": len(set(digests.values()))},
        "n_samples": len(samples),
        "n_loaded": len(loaded.samples),
        "limit": config.limit,
        "skipped": {"count": len(skipped), "samples": [s.as_dict() for s in skipped]},
        "notes": loaded.notes,
    }
    warnings = [str(w) for w in loaded.notes.get("warnings", [])]
    if task.kind == "vqa":
        fallback = sum(1 for s in samples if s.metadata.get("closed_rule_fallback"))
        info["closed_rule"] = {
            "rule": config.closed_rule,
            **_closed_counts(samples),
            "fallback_to_yesno": fallback,
        }
        if fallback:
            warnings.append(
                f"{name}: --closed-rule answer_type: {fallback} of {len(samples)} questions have no dataset "
                "answer_type label and were split by the yes/no rule instead"
            )
    else:
        info["metric_variants"] = lexical_variants()
    info["warnings"] = warnings
    info["prompt"] = {"style": config.prompt, "sha256": prompt_hash(config.prompt, task.kind)}
    return PreparedTask(task, loaded, samples, skipped, info, {s.id: digests[s.image] for s in samples}, source.root)


def training_split(task: Task, config: RunConfig) -> list[Sample]:
    source = locate(task, "train", data_dir=config.data_dir, demo=config.demo)
    return task.load(source, "train", LoadOptions(closed_rule=config.closed_rule, full=True)).samples
