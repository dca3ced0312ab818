"""medbench.generation.generate_all: batches in the model's own order, of the model's own (adapting) batch size when
the run sets none, each committed before the next (what the hf: fast path relies on to see an image's questions in
one batch, and to grow its batches from measured memory); for adapters that overlap batches (openai:), the next
batch running while the current one finishes, commits still in order, and a failure stopping the other batch."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from medbench.cache import PredictionCache
from medbench.generation import generate_all
from medbench.models.base import Model
from medbench.schema import ImageRef, Request


class Recorder(Model):
    """Answers each request with its id; records the batches it is given; doubles its batch size after each."""

    def __init__(self, reverse: bool = False, grow: bool = False) -> None:
        super().__init__("recorder")
        self.batch_size = 2
        self.batches: list[list[str]] = []
        self.reverse, self.grow = reverse, grow

    def order(self, requests: Sequence[Request]) -> list[int]:
        return list(range(len(requests)))[::-1] if self.reverse else super().order(requests)

    def generate(self, requests: Sequence[Request]) -> list[str]:
        self.batches.append([r.sample_id for r in requests])
        if self.grow:
            self.batch_size *= 2
        return [r.sample_id for r in requests]


def requests(n: int) -> list[Request]:
    image = ImageRef("file", "/nonexistent.png")
    return [Request(f"s{i}", "t", "vqa", "p" * (n - i), "q", image) for i in range(n)]  # later ones shorter


def run(model: Recorder, reqs: list[Request], batch_size: int | None) -> dict[str, str]:
    with PredictionCache(None) as cache:
        got = generate_all(
            model, reqs, [f"k{r.sample_id}" for r in reqs], cache, batch_size=batch_size, advance=lambda n: None
        )
    return got.outputs


def test_the_default_order_is_by_prompt_length() -> None:
    model = Recorder()
    outputs = run(model, requests(5), 2)
    assert model.batches == [["s4", "s3"], ["s2", "s1"], ["s0"]]  # shortest prompts first
    assert outputs == {f"s{i}": f"s{i}" for i in range(5)}


def test_batches_follow_the_models_own_order() -> None:
    reqs = list(reversed(requests(5)))  # s4 (shortest) ... s0: the default order would send s4 first
    model = Recorder(reverse=True)  # this model wants them in reverse of the given order
    run(model, reqs, 2)
    assert model.batches == [["s0", "s1"], ["s2", "s3"], ["s4"]]


def test_without_a_run_batch_size_the_models_own_is_read_before_each_batch() -> None:
    # Guards the fast path's memory-sized batches: a fixed chunk taken once would cap them at the first size.
    model = Recorder(grow=True)
    run(model, requests(14), None)
    assert [len(b) for b in model.batches] == [2, 4, 8]
    fixed = Recorder(grow=True)
    run(fixed, requests(14), 3)  # the user's --batch-size holds
    assert [len(b) for b in fixed.batches] == [3, 3, 3, 3, 2]


class Overlapping(Model):
    """Answers with the ids; its first batch finishes only once the second has started (an event, bounded: without
    the overlap it gives up and says so); ``fail`` names a batch index that raises."""

    overlaps_batches = True

    def __init__(self, fail: int | None = None) -> None:
        super().__init__("overlapping")
        self.batch_size = 2
        self.lock = threading.Lock()
        self.started: list[int] = []
        self.running = 0
        self.most_running = 0
        self.second_started = threading.Event()
        self.cancelled = threading.Event()
        self.returned: list[int] = []
        self.fail = fail

    def cancel(self) -> None:
        self.cancelled.set()

    def generate(self, requests: Sequence[Request]) -> list[str]:
        with self.lock:
            index = len(self.started)
            self.started.append(index)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if index == 1:
                self.second_started.set()
            if index == 0 and not self.second_started.wait(10):
                raise AssertionError("the second batch never started while the first was running")
            if index == self.fail:
                raise RuntimeError(f"batch {index} failed")
            if self.fail is not None and index == self.fail + 1:  # runs until cancelled
                if not self.cancelled.wait(10):
                    raise AssertionError("never cancelled")
                raise RuntimeError("cancelled")
            return [r.sample_id for r in requests]
        finally:
            with self.lock:
                self.running -= 1
                self.returned.append(index)


class Commits(PredictionCache):
    """A cache in memory that records the sample ids of each commit."""

    def __init__(self) -> None:
        super().__init__(None)
        self.commits: list[list[str]] = []

    def put_many(self, rows: Any) -> None:
        rows = list(rows)
        self.commits.append([r[4] for r in rows])
        super().put_many(rows)


def test_an_overlapping_model_runs_the_next_batch_while_one_finishes_and_commits_in_order() -> None:
    model, reqs = Overlapping(), requests(6)
    with Commits() as cache:
        got = generate_all(
            model, reqs, [f"k{r.sample_id}" for r in reqs], cache, batch_size=None, advance=lambda n: None
        )
        commits = cache.commits
    assert got.outputs == {f"s{i}": f"s{i}" for i in range(6)} and got.generated == 6
    assert model.most_running == 2  # two batches in flight, never more
    assert commits == [["s5", "s4"], ["s3", "s2"], ["s1", "s0"]]  # batch by batch, in the model's order
    assert got.model_seconds > 0


def test_a_failing_batch_cancels_the_one_in_flight_and_nothing_is_left_running() -> None:
    model, reqs = Overlapping(fail=1), requests(8)
    with Commits() as cache:
        with pytest.raises(RuntimeError, match="batch 1 failed"):
            generate_all(model, reqs, [f"k{r.sample_id}" for r in reqs], cache, batch_size=2, advance=lambda n: None)
        commits = cache.commits
    assert model.cancelled.is_set()
    assert sorted(model.returned) == sorted(model.started) == [0, 1, 2]  # every call returned; no 4th batch began
    assert commits == [["s7", "s6"]]  # the batch done before the failure is kept (a rerun resumes after it)


def test_a_model_that_does_not_overlap_gets_one_batch_at_a_time() -> None:
    class Counting(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.running = self.most = 0

        def generate(self, requests: Sequence[Request]) -> list[str]:
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                return super().generate(requests)
            finally:
                self.running -= 1

    model = Counting()
    run(model, requests(7), 2)
    assert model.most == 1 and len(model.batches) == 4
