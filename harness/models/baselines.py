"""Blind baselines: the language-prior floor of every leaderboard. They never look at the image.

``prior`` answers each question with the most frequent training answer for the same normalised question text.
For an unseen question it predicts the answer type from the question's first word (the majority
closed/open label of training questions starting with that word) and answers with the most frequent training
answer of that type. The answer type is learnt from training data only; the evaluated sample's own
closed/open label is derived from its gold answer and is never used. For captions it returns the most
frequent training caption.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, ClassVar

from medbench.errors import DataError
from medbench.models.base import Model
from medbench.schema import Request, Sample
from medbench.scoring.normalize import normalize_answer


def question_key(question: str) -> str:
    """Normalised question text used to look up the training prior."""
    return normalize_answer(question)


def _first_word(question: str) -> str:
    words = question_key(question).split()
    return words[0] if words else ""


def _most_common(counter: Counter[str]) -> str:
    # Ties break alphabetically so the baseline is deterministic whatever the training-file order.
    best = max(counter.values())
    return min(answer for answer, count in counter.items() if count == best)


class PriorBaseline(Model):
    """Most frequent training answer for the question; see the module docstring for the fallbacks."""

    needs_training_data: ClassVar[bool] = True
    uses_images: ClassVar[bool] = False
    cacheable: ClassVar[bool] = False
    batch_size = 256

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        self._by_question: dict[str, dict[str, str]] = {}
        self._type_by_word: dict[str, dict[str, str]] = {}
        self._by_type: dict[str, dict[str, str]] = {}
        self._caption: dict[str, str] = {}
        self._fitted: dict[str, int] = {}

    def fit(self, task: str, train: Sequence[Sample]) -> None:
        if not train:
            raise DataError(
                f"prior baseline: the training split of {task!r} has no usable samples, so there is no prior to "
                "learn; add the task's train split to the data folder, or run without the prior model"
            )
        self._fitted[task] = len(train)
        if train[0].question is None:
            self._caption[task] = _most_common(Counter(s.reference.strip() for s in train))
            return
        answers: dict[str, Counter[str]] = defaultdict(Counter)
        types_by_word: dict[str, Counter[str]] = defaultdict(Counter)
        by_type: dict[str, Counter[str]] = defaultdict(Counter)
        for s in train:
            answer = normalize_answer(s.reference)
            answers[question_key(s.question or "")][answer] += 1
            kind = s.answer_type or "open"
            types_by_word[_first_word(s.question or "")][kind] += 1
            types_by_word[""][kind] += 1
            by_type[kind][answer] += 1
        self._by_question[task] = {q: _most_common(c) for q, c in answers.items()}
        self._type_by_word[task] = {w: _most_common(c) for w, c in types_by_word.items()}
        self._by_type[task] = {t: _most_common(c) for t, c in by_type.items()}

    def _answer(self, request: Request) -> str:
        task = request.task
        if task not in self._fitted:
            raise RuntimeError(f"prior baseline was not fitted on {task!r}'s training split")
        if request.kind == "caption":
            return self._caption[task]
        question = request.question or ""
        hit = self._by_question[task].get(question_key(question))
        if hit is not None:
            return hit
        words = self._type_by_word[task]
        kind = words.get(_first_word(question), words[""])
        return self._by_type[task].get(kind) or next(iter(self._by_type[task].values()))

    def generate(self, requests: Sequence[Request]) -> list[str]:
        return [self._answer(r) for r in requests]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "fitted_on": dict(sorted(self._fitted.items()))}


class YesBaseline(Model):
    """Always answers "yes" (for captions too): the floor for closed questions."""

    uses_images: ClassVar[bool] = False
    cacheable: ClassVar[bool] = False
    batch_size = 1024

    def generate(self, requests: Sequence[Request]) -> list[str]:
        return ["yes" for _ in requests]
