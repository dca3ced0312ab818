"""medbench.generation.generate_all: batches in the model's own order, of the model's own (adapting) batch size when
the run sets none, each committed before the next (what the hf: fast path relies on to see an image's questions in
one batch, and to grow its batches from measured memory)."""

from __future__ import annotations

from collections.abc import Sequence

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
