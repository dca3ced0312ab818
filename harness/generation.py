"""Getting one model's outputs for one task: cache lookup, length-sorted batches, a commit per batch.

Requests already in the cache are not sent to the model. The rest are sorted by prompt length (so batches pad
little) and generated batch by batch; each batch's outputs are committed to the cache before the next batch
starts. The caller gets every output back keyed by sample id, in any order, plus how many were generated and how
many came from the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from medbench.cache import PredictionCache, prediction_key
from medbench.models.base import Model
from medbench.prompts import prompt_hash
from medbench.schema import Request

log = logging.getLogger(__name__)


@dataclass
class Generated:
    """Outputs by sample id and where they came from."""

    outputs: dict[str, str]
    generated: int
    cached: int


def request_keys(model: Model, requests: Sequence[Request], *, prompt_style: str, data_checksum: str) -> list[str]:
    """The cache key of every request (see :func:`medbench.cache.prediction_key`)."""
    fingerprint = model.fingerprint()
    return [
        prediction_key(
            fingerprint=fingerprint,
            task=r.task,
            data_checksum=data_checksum,
            sample_id=r.sample_id,
            prompt=r.prompt,
            prompt_sha256=prompt_hash(prompt_style, r.kind),
            image_size=r.image_size,
            max_new_tokens=r.max_new_tokens,
        )
        for r in requests
    ]


def generate_all(
    model: Model,
    requests: Sequence[Request],
    keys: Sequence[str],
    cache: PredictionCache,
    *,
    batch_size: int,
    advance: Callable[[int], Any],
) -> Generated:
    """Outputs for ``requests``: cached ones looked up, the others generated in length-sorted batches."""
    found = cache.get_many(list(keys))
    outputs = {r.sample_id: found[k] for r, k in zip(requests, keys, strict=True) if k in found}
    advance(len(outputs))
    todo = sorted(
        ((r, k) for r, k in zip(requests, keys, strict=True) if k not in found),
        key=lambda pair: len(pair[0].prompt),
    )
    fingerprint = model.fingerprint()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        texts = model.generate([r for r, _ in batch])
        if len(texts) != len(batch):
            raise RuntimeError(f"model {model.name} returned {len(texts)} outputs for {len(batch)} requests")
        texts = ["" if t is None else str(t) for t in texts]
        cache.put_many(
            (k, model.name, fingerprint, r.task, r.sample_id, t) for (r, k), t in zip(batch, texts, strict=True)
        )
        outputs.update((r.sample_id, t) for (r, _), t in zip(batch, texts, strict=True))
        advance(len(batch))
    return Generated(outputs, generated=len(todo), cached=len(found))
