"""Answer extraction and the ``strict`` protocol (medbench.scoring.vqa).

Expected values are derived by hand from the documented rules: take the text after the first "The answer is:"
(case-insensitive, colon optional), then its first non-empty line, stripped, trailing periods removed; VQA-v2
normalisation of both sides; a yes/no gold is compared with the first whole-word yes/no of the answer, any
other gold needs a normalised exact match; an answer that normalises to nothing scores 0.
"""

from __future__ import annotations

from typing import Any

import pytest

from medbench.scoring.vqa import coerce_text, extract_answer, first_yes_no, strict_score


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The answer is: Yes.", "Yes"),
        ("the answer is yes", "yes"),  # case-insensitive, colon optional
        ("THE ANSWER IS:no", "no"),
        ("Looking at the image.\nThe answer is: Left lung.\nBecause ...", "Left lung"),
        # only the first "The answer is" counts
        ("The answer is: liver. The answer is: spleen", "liver. The answer is: spleen"),
        ("The answer is:\n\n  no  \n", "no"),
        ("The answer is:", ""),
        # no prefix: the first non-empty line, stripped
        ("\n\n  Pneumonia  \nbecause of the opacity", "Pneumonia"),
        ("Liver...", "Liver"),  # every trailing period goes
        ("3.5", "3.5"),
        ("3.5.", "3.5"),
        ("Left lung", "Left lung"),
        ("", ""),
        ("   \n \n", ""),
    ],
)
def test_extract_answer(raw: str, expected: str) -> None:
    assert extract_answer(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ""),
        (3, "3"),
        (2.5, "2.5"),
        (["left", "lung"], "left lung"),
        (("yes",), "yes"),
        ([None, "no"], "no"),  # coerced to " no", then stripped
        ([], ""),
    ],
)
def test_extract_answer_coerces_non_strings(raw: Any, expected: str) -> None:
    assert extract_answer(raw) == expected


def test_coerce_text() -> None:
    assert coerce_text(None) == ""
    assert coerce_text(7) == "7"
    assert coerce_text(["a", ["b", "c"]]) == "a b c"
    assert coerce_text("x") == "x"


@pytest.mark.parametrize(
    ("normalized", "expected"),
    [
        ("no there is no effusion", "no"),
        ("yes and no", "yes"),
        ("there is no yes", "no"),
        ("not sure", None),  # "no" is followed by "t": not a whole word
        ("eyes", None),  # "yes" is preceded by "e"
        ("normal", None),
        ("unknown", None),
        ("", None),
    ],
)
def test_first_yes_no(normalized: str, expected: str | None) -> None:
    assert first_yes_no(normalized) == expected


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        # --- yes/no golds: the first whole-word yes/no of the normalised answer decides
        ("No, there is no effusion", "no", 1.0),  # -> "no there is no effusion"; first is "no"
        ("not sure", "no", 0.0),  # "not" is not the word "no"
        ("eyes", "yes", 0.0),  # "yes" inside "eyes" is not a whole word
        ("normal", "no", 0.0),
        ("yes and no", "no", 0.0),  # the first yes/no is "yes"
        ("yes and no", "yes", 1.0),
        ("The answer is: no.", "no", 1.0),
        ("The answer is: Yes, there is.", "yes", 1.0),
        ("YES", "yes", 1.0),
        ("yes", "Yes.", 1.0),  # the gold is normalised too
        ("No.", "yes", 0.0),
        ("nope", "no", 0.0),
        ("I don't know", "no", 0.0),  # no whole-word yes/no ("know" contains "no" after "k")
        ("none", "no", 0.0),  # "none" normalises to "0"
        ("Yes\nNo", "no", 0.0),  # only the first non-empty line is the answer
        ("There is no mass", "no", 1.0),
        # --- open golds: normalised exact match
        ("The Liver.", "liver", 1.0),  # -> "liver"
        ("left lung", "lung", 0.0),
        ("lung", "left lung", 0.0),
        ("two", "2", 1.0),  # number words become digits
        ("2", "two", 1.0),
        ("x-ray", "x ray", 1.0),  # glued hyphen -> space
        ("1,000", "1000", 1.0),  # comma between digits deleted
        ("3.5", "3.5", 1.0),
        ("3.5 cm", "3.5", 0.0),
        ("The answer is: Left Lung.", "left lung", 1.0),
        ("Left lung\nThe right lung is clear", "left lung", 1.0),
        ("an MRI", "MRI", 1.0),  # article dropped
        ("yes", "liver", 0.0),
        # --- empty predictions score 0, whatever the gold
        ("", "no", 0.0),
        ("", "liver", 0.0),
        (None, "yes", 0.0),
        ("   \n", "yes", 0.0),
        ("The answer is:", "no", 0.0),
        ("...", "liver", 0.0),
        # an answer that normalises to nothing scores 0 even when the gold normalises to nothing as well
        ("an", "the", 0.0),
        ("", "", 0.0),
        # --- non-string predictions are coerced
        (2, "two", 1.0),
        (["left", "lung"], "left lung", 1.0),
        (["yes"], "yes", 1.0),
    ],
)
def test_strict_score(prediction: Any, gold: str, expected: float) -> None:
    score = strict_score(prediction, gold)
    assert isinstance(score, float)
    assert score == expected


def test_strict_gold_with_period_after_number() -> None:
    # gold "2." -> the final period is not between two digits, so it goes -> "2"; prediction "2" -> "2".
    # (Found as a bug in an earlier version, which normalised the gold to "2.".)
    assert strict_score("2", "2.") == 1.0
