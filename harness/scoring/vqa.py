"""Per-sample VQA scoring: answer extraction and the ``strict`` protocol (pure functions).

``strict`` (the headline protocol): extract the answer (text after "The answer is:", first non-empty line,
trailing periods dropped), apply VQA-v2 normalisation to both sides; when the gold is yes/no, compare it with
the first whole-word yes/no of the answer; otherwise require normalised exact match.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from medbench.scoring.normalize import normalize_answer

_ANSWER_IS = re.compile(r"the\s+answer\s+is\s*:?", re.IGNORECASE)
_YES_NO_WORD = re.compile(r"\b(yes|no)\b")


def coerce_text(value: Any) -> str:
    """Predictions may arrive as None, numbers or lists from hand-written files: make them text."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(coerce_text(v) for v in value)
    return str(value)


def extract_answer(raw: Any) -> str:
    """The answer part of a model output.

    Text after the first "The answer is:" (the paper's training target format), then the first non-empty line,
    stripped, with trailing periods removed.
    """
    text = coerce_text(raw)
    match = _ANSWER_IS.search(text)
    if match:
        text = text[match.end() :]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line.rstrip(".").strip()


def first_yes_no(normalized: str) -> str | None:
    """The first whole-word "yes" or "no" in an already normalised answer."""
    match = _YES_NO_WORD.search(normalized)
    return match.group(1) if match else None


def strict_score(prediction: Any, reference: str, equivalent: Callable[[str, str], bool] | None = None) -> float:
    """1.0 if ``prediction`` answers ``reference`` under the ``strict`` protocol, else 0.0.

    ``equivalent(answer, gold)`` (both normalised) may accept a non-identical open answer: the ``clinical``
    protocol passes its synonym table here.
    """
    gold = normalize_answer(reference)
    answer = normalize_answer(extract_answer(prediction))
    if not answer:
        return 0.0
    if gold in ("yes", "no"):
        return float(first_yes_no(answer) == gold)
    return float(answer == gold or (equivalent is not None and equivalent(answer, gold)))
