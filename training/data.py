"""Training data: the task plugins' train splits (original layouts, Hugging Face mirrors, the demo set) as
(image, prompt, answer) examples, with the same prompt templates the evaluation renders.

Stage 1 reads ROCOv2's train captions; stage 2 mixes SLAKE, VQA-RAD and PathVQA's train questions. **Mixing**
(``concat-shuffle``): every train sample of every task once per epoch, concatenated and shuffled with the seed and
the epoch number — the paper trains on the union of the three sets and states no weighting, so none is applied; a
resumed run replays exactly the same order (:func:`epoch_order`). Each example's image is hashed (sha256 of its
bytes), and the data checksum recorded in the run card covers the annotation files and every image, as an
evaluation run's does; an image that cannot be read or decoded is skipped and counted with its reason.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medbench.errors import DataError
from medbench.prompts import prompt_hash, render_prompt
from medbench.schema import ImageRef
from medbench.training.config import TrainConfig


@dataclass(frozen=True)
class TrainExample:
    """One training sample: the image, the user prompt the evaluation would send, and the gold answer."""

    id: str
    task: str
    kind: str  # vqa | caption
    image: ImageRef
    prompt: str
    answer: str


@dataclass
class TrainingData:
    """The examples of one stage and what the run card records about them."""

    examples: list[TrainExample]
    info: dict[str, Any] = field(default_factory=dict)  # per task: source, checksums, counts, skipped, prompt hash


@contextmanager
def _quiet(description: str, total: int) -> Iterator[Any]:
    yield lambda n=1: None


def load_examples(config: TrainConfig) -> TrainingData:
    """Read every task of ``config.data`` (train split), check each distinct image once, and render prompts."""
    from medbench.preparation import data_checksums, image_digests
    from medbench.registry import get_task
    from medbench.tasks.base import LoadOptions, Skipped, locate

    settings = config.data
    out = TrainingData([])
    for name in settings.tasks:
        task = get_task(name)
        if settings.split not in task.splits:
            raise DataError(f"task {name!r} has no split {settings.split!r}; it has {', '.join(task.splits)}")
        data_dir = Path(settings.data_dir) if settings.data_dir else None
        source = locate(task, settings.split, data_dir=data_dir, demo=settings.demo)
        loaded = task.load(source, settings.split, LoadOptions(seed=config.optim.seed, full=True))
        samples = loaded.samples[: settings.limit] if settings.limit else list(loaded.samples)
        digests, failed = image_digests(samples, True, _quiet, name)
        skipped = list(loaded.skipped) + [
            Skipped(s.image.describe(), failed[s.image], s.id) for s in samples if s.image in failed
        ]
        samples = [s for s in samples if s.image not in failed]
        if not samples:
            raise DataError(f"task {name!r}: no usable {settings.split} samples in {source.root}")
        for s in samples:
            prompt = render_prompt(settings.prompt, task.kind, s.question)
            out.examples.append(TrainExample(s.id, name, task.kind, s.image, prompt, s.reference))
        out.info[name] = {
            "split": settings.split,
            "data": source.describe() | data_checksums(loaded.checksum(), samples, digests) | {"layout": loaded.layout},
            "n_samples": len(samples),
            "skipped": {"count": len(skipped), "samples": [s.as_dict() for s in skipped[:50]]},
            "prompt": {"style": settings.prompt, "sha256": prompt_hash(settings.prompt, task.kind)},
        }
    return out


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch (``concat-shuffle``): a permutation fixed by (seed, epoch), so a resumed run
    sees exactly the order an uninterrupted one did."""
    order = list(range(n))
    random.Random(f"medbench-train:{seed}:{epoch}").shuffle(order)
    return order


def batches(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive batches of ``order`` (the last one may be smaller)."""
    return [list(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
