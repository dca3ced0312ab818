"""Getting one model's outputs for one task: cache lookup, batches in the model's order, a commit per batch.

Requests already in the cache are not sent to the model. The rest are put in the model's batching order
(:meth:`~medbench.models.base.Model.order`: by prompt length, so batches pad little; the ``hf:`` fast path keeps
an image's questions together, so that its image is encoded once) and generated batch by batch; each batch's
outputs are committed to the cache as soon as it is done. Batches run one after the other, except for adapters that
:attr:`~medbench.models.base.Model.overlaps_batches` (``openai:``): the next batch is started while the current
one finishes (two in flight; outputs are still committed batch by batch, in order), so that a served model's
request slots do not idle while a batch waits for its slowest request. The caller gets every output back keyed by sample
id, in any order, plus how many were generated and how many came from the cache. A request whose image cannot be
read or decoded at generation time (possible with ``--no-verify-images``) is retried alone; if it fails alone it
is returned in ``failed`` with the reason — a skipped sample, counted, never a crashed run and never an empty
prediction.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from medbench.cache import PredictionCache, prediction_key
from medbench.errors import SampleError
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
    failed: dict[str, str] = field(default_factory=dict)  # sample id -> why it could not be generated
    model_seconds: float = 0.0  # time spent inside the model's generate calls (not cache look-ups or commits)
    new_tokens: int | None = None  # tokens the model generated in those calls, where the adapter counts them


def request_keys(
    model: Model,
    requests: Sequence[Request],
    *,
    prompt_style: str,
    data_checksum: str,
    image_sha256: Sequence[str],
) -> list[str]:
    """The cache key of every request (see :func:`medbench.cache.prediction_key`); ``image_sha256`` holds the
    digest of each request's image bytes, in the same order."""
    fingerprint = model.fingerprint()
    return [
        prediction_key(
            fingerprint=fingerprint,
            task=r.task,
            data_checksum=data_checksum,
            sample_id=r.sample_id,
            prompt=r.prompt,
            prompt_sha256=prompt_hash(prompt_style, r.kind),
            image_sha256=digest,
            image_size=r.image_size,
            max_new_tokens=r.max_new_tokens,
        )
        for r, digest in zip(requests, image_sha256, strict=True)
    ]


def _generate_batch(model: Model, batch: Sequence[Request]) -> tuple[list[str | None], dict[str, str]]:
    """Outputs of one batch (None where a request failed) and the failures' reasons. A batch that raises
    :class:`SampleError` is retried one request at a time, so one unreadable image costs only its own sample."""
    try:
        return list(_checked(model, batch)), {}
    except SampleError as exc:
        if len(batch) == 1:  # already alone: no point in asking again
            return [None], {batch[0].sample_id: str(exc)}
    texts: list[str | None] = []
    failed: dict[str, str] = {}
    for request in batch:
        try:
            texts.extend(_checked(model, [request]))
        except SampleError as exc:
            texts.append(None)
            failed[request.sample_id] = str(exc)
    return texts, failed


def _checked(model: Model, batch: Sequence[Request]) -> list[str]:
    texts = model.generate(list(batch))
    if len(texts) != len(batch):
        raise RuntimeError(f"model {model.name} returned {len(texts)} outputs for {len(batch)} requests")
    return ["" if t is None else str(t) for t in texts]


def generate_all(
    model: Model,
    requests: Sequence[Request],
    keys: Sequence[str],
    cache: PredictionCache,
    *,
    batch_size: int | None,
    advance: Callable[[int], Any],
) -> Generated:
    """Outputs for ``requests``: cached ones looked up, the others generated in batches of ``batch_size`` (None:
    the model's own ``batch_size``, read before each batch, so an adapter that sizes batches from the memory it
    measured grows them) in the model's order."""
    found = cache.get_many(list(keys))
    outputs = {r.sample_id: found[k] for r, k in zip(requests, keys, strict=True) if k in found}
    advance(len(outputs))
    pending = [(r, k) for r, k in zip(requests, keys, strict=True) if k not in found]
    todo = [pending[i] for i in model.order([r for r, _ in pending])]
    fingerprint = model.fingerprint()
    failed: dict[str, str] = {}
    model_seconds = 0.0
    tokens_before = model.new_tokens
    if todo:
        model.load()  # weights load here, outside the generation timing (and not at all when all is cached)
    batches = _chunks(todo, lambda: max(1, batch_size or model.batch_size))
    run = _overlapped if model.overlaps_batches else _one_by_one
    for batch, texts, batch_failed, seconds in run(model, batches):
        model_seconds += seconds
        failed.update(batch_failed)
        done = [(r, k, t) for (r, k), t in zip(batch, texts, strict=True) if t is not None]
        cache.put_many((k, model.name, fingerprint, r.task, r.sample_id, t) for r, k, t in done)
        outputs.update((r.sample_id, t) for r, _, t in done)
        advance(len(batch))
    counted = None if tokens_before is None or model.new_tokens is None else model.new_tokens - tokens_before
    return Generated(outputs, len(todo) - len(failed), len(found), failed, model_seconds, counted)


_Pending = list[tuple[Request, str]]  # a batch: requests and their cache keys
_Done = tuple[_Pending, "list[str | None]", dict[str, str], float]  # batch, outputs, failures, model seconds


def _chunks(todo: _Pending, size: Callable[[], int]) -> Iterator[_Pending]:
    """``todo`` in batches, each as large as ``size()`` says just before it is cut (a model may resize)."""
    start = 0
    while start < len(todo):
        batch = todo[start : start + size()]
        start += len(batch)
        yield batch


def _one_by_one(model: Model, batches: Iterator[_Pending]) -> Iterator[_Done]:
    """Each batch generated after the previous one is committed; its seconds are its own generate call's."""
    for batch in batches:
        started = time.perf_counter()
        texts, failed = _generate_batch(model, [r for r, _ in batch])
        yield batch, texts, failed, time.perf_counter() - started


def _overlapped(model: Model, batches: Iterator[_Pending]) -> Iterator[_Done]:
    """Batches generated two at a time in flight, yielded (to be committed) in order, each as soon as it and those
    before it are done. The model seconds are wall-clock time while a batch is in flight (the two overlap, so
    their own durations would count the overlap twice). When one fails, the other is cancelled and waited for, and
    the failure is raised: no request is still running once this returns."""
    window: deque[tuple[_Pending, Future[tuple[list[str | None], dict[str, str]]]]] = deque()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="medbench-batch") as pool:

        def submit() -> None:
            batch = next(batches, None)
            if batch is not None:
                window.append((batch, pool.submit(_generate_batch, model, [r for r, _ in batch])))

        try:
            mark = time.perf_counter()
            submit()
            submit()
            while window:
                batch, future = window[0]
                texts, failed = future.result()
                window.popleft()
                now = time.perf_counter()
                seconds, mark = now - mark, now
                submit()  # before the commit: it queues behind the batch still in flight
                yield batch, texts, failed, seconds  # the commit runs while the next batches are in flight
        except BaseException:
            model.cancel()
            wait([f for _, f in window])
            raise
