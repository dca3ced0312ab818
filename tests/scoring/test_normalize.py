"""VQA-v2 answer normalisation (medbench.scoring.normalize).

Every expected value below is worked out by hand from the VQA-v2 rules the module documents:

* punctuation (``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``): a mark is *deleted* when the text contains it
  next to a space ("x " or " x") or when the text contains a comma between two digits anywhere; otherwise it
  is *replaced by a space*. Periods are removed unless they sit inside a number. Apostrophes and colons are not
  in the list and are kept.
* then, word by word (after lowercasing): number words "none"/"zero".."ten" become digits, the articles
  "a", "an", "the" are dropped, apostrophe-less contractions ("dont") get their apostrophe back.
"""

from __future__ import annotations

import pytest

from medbench.scoring.normalize import is_yes_no, normalize_answer, process_digit_article, process_punctuation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # No mark next to a space, no digit-comma-digit: "/" becomes a space.
        ("left/right", "left right"),
        # "/ " occurs in the text, so every "/" is deleted (both sides keep their own space).
        ("left / right", "left  right"),
        # The spaced occurrence decides for the whole string: the unspaced "/" is deleted too.
        ("left/right / up", "leftright  up"),
        # Same rule for commas: ", " occurs, so the comma is deleted.
        ("yes, it is", "yes it is"),
        # A comma glued to letters only: replaced by a space.
        ("hello,world", "hello world"),
        # Comma between digits: deleted, so the number is kept whole.
        ("1,000", "1000"),
        # A digit-comma-digit anywhere makes *every* mark deleted, the hyphen included.
        ("x-ray 1,5", "xray 15"),
        # Without the number the hyphen is replaced by a space.
        ("x-ray 1 5", "x ray 1 5"),
        ("x-ray", "x ray"),
        # "?" glued to the word: replaced by a space (trailing space stays at this stage).
        ("what?", "what "),
        # Brackets glued to words: spaces.
        ("(left)", " left "),
        # Periods inside a number are kept ...
        ("3.5", "3.5"),
        ("0.5 cm", "0.5 cm"),
        # ... others are removed (no space put in their place).
        ("e.g.", "eg"),
        ("end.", "end"),
        ("0.5 cm.", "0.5 cm"),
        # Apostrophes and colons are not VQA-v2 punctuation.
        ("don't", "don't"),
        ("a:b", "a:b"),
    ],
)
def test_process_punctuation(text: str, expected: str) -> None:
    assert process_punctuation(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two Kidneys", "2 kidneys"),
        ("zero", "0"),
        ("none", "0"),  # VQA-v2 maps "none" to "0" as well
        ("ten", "10"),
        ("eleven", "eleven"),  # only zero..ten are mapped
        ("one two three four five six seven eight nine", "1 2 3 4 5 6 7 8 9"),
        ("the liver", "liver"),
        ("an apple a day", "apple day"),
        ("theory", "theory"),  # whole words only
        ("a one", "1"),  # "one" -> "1", then the article goes
        ("dont", "don't"),
        ("isnt", "isn't"),
        ("youre", "you're"),
        ("whats this", "what's this"),
        ("  spaced   out  ", "spaced out"),
    ],
)
def test_process_digit_article(text: str, expected: str) -> None:
    assert process_digit_article(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  The   LIVER.\n", "liver"),
        ("Two\tkidneys", "2 kidneys"),
        # comma between digits -> deleted; final period after a letter -> removed
        ("There are 1,000 cells.", "there are 1000 cells"),
        ("3.5 cm", "3.5 cm"),
        ("X-Ray", "x ray"),
        # "?" glued -> space; "isnt" -> "isn't"
        ("Isnt it?", "isn't it"),
        ("Yes.", "yes"),
        ("No!", "no"),
        ("the", ""),
        ("", ""),
        ("Left lung", "left lung"),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_normalize_answer_accepts_non_strings() -> None:
    assert normalize_answer(5) == "5"  # type: ignore[arg-type]
    assert normalize_answer(2.5) == "2.5"  # type: ignore[arg-type]


# A period right after a number but not between two digits is sentence punctuation, not part of the number.
# (Found as a bug in an earlier version, which kept the period in "2.".)
@pytest.mark.parametrize(
    ("text", "expected"),
    [("2.", "2"), ("there are 2. yes", "there are 2 yes"), ("3.5.", "3.5"), ("1.5 and 2.5.", "1.5 and 2.5")],
)
def test_period_after_number_is_not_inside_a_number(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes", True),
        ("Yes.", True),
        ("NO", True),
        (" no \n", True),
        ("yes, it is", False),
        ("none", False),  # normalises to "0"
        ("not", False),
        ("", False),
    ],
)
def test_is_yes_no(text: str, expected: bool) -> None:
    assert is_yes_no(text) is expected
