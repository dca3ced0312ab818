"""Split large, pure-Python scoring work over the machine's cores.

Caption metrics spend their time in regex tokenisation and n-gram counting, which the GIL serialises. For large
inputs the work is cut in contiguous chunks: the calling process scores one, forked workers the others, and the
results are concatenated in order, so the output is identical to a serial run. Small inputs, platforms without
``fork``, and ``MEDBENCH_SCORING_WORKERS=1`` run serially.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
MIN_PARALLEL_ITEMS = 2000


def workers() -> int:
    """How many processes to use: ``MEDBENCH_SCORING_WORKERS``, else the usable cores (at most 8)."""
    configured = os.environ.get("MEDBENCH_SCORING_WORKERS")
    if configured:
        return max(1, int(configured))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def map_chunks(func: Callable[[Sequence[T]], list[R]], items: Sequence[T]) -> list[R]:
    """``func(items)``, computed in contiguous chunks across processes when ``items`` is large."""
    count = workers()
    if len(items) < MIN_PARALLEL_ITEMS or count < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return func(items)
    size = -(-len(items) // count)
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    with ProcessPoolExecutor(len(chunks) - 1, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(func, chunk) for chunk in chunks[1:]]
        out = func(chunks[0])
        for future in futures:
            out.extend(future.result())
    return out
