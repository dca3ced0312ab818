"""Answer normalisation in the VQA-v2 style (punctuation, number words, articles, contractions).

This follows the behaviour of the official VQA-v2 evaluation (``processPunctuation`` + ``processDigitArticle``),
which the classic medical-VQA papers (M2I2, MEVF, PubMedCLIP) and LLaVA-Med's ``normalize_word`` descend from.
It is written here from the published description; protocol-specific quirks live in the protocol modules.
"""

from __future__ import annotations

import json
import re
from functools import cache, lru_cache
from importlib import resources

_PUNCT = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
_COMMA_IN_NUMBER = re.compile(r"(\d)(,)(\d)")
# strict: a period is deleted unless it sits between two digits ("3.5" stays, "5." and "U.S." lose theirs).
_PERIOD_NOT_IN_NUMBER = re.compile(r"(?<!\d)\.|\.(?!\d)")
# The legacy tools' regex is r"(?!<=\d)(\.)(?!\d)": the lookbehind was typed as a lookahead that always succeeds,
# so it deletes every period not followed by a digit; and re.UNICODE (= 32) lands in sub()'s count argument, so at
# most 32 periods go per call. The legacy normaliser reproduces both.
_LEGACY_PERIOD = re.compile(r"\.(?!\d)")
_LEGACY_PERIOD_COUNT = 32
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})


@cache
def contractions() -> dict[str, str]:
    """The VQA-v2 contraction table (``vqa_contractions.json``; its source note says where it comes from)."""
    raw = json.loads(resources.files(__package__).joinpath("vqa_contractions.json").read_text(encoding="utf-8"))
    return dict(raw["contractions"])


def _punctuation(text: str) -> str:
    """VQA-v2 punctuation rule, decided once per mark for the whole string: a mark that touches a space anywhere
    (or any mark, when the text has a comma between digits) is deleted everywhere, else replaced by a space."""
    out = text
    comma_in_number = _COMMA_IN_NUMBER.search(text) is not None
    for p in _PUNCT:
        spaced = comma_in_number or p + " " in text or " " + p in text
        out = out.replace(p, "" if spaced else " ")
    return out


def process_punctuation(text: str) -> str:
    """VQA-v2 punctuation rule, then periods removed unless between digits."""
    return _PERIOD_NOT_IN_NUMBER.sub("", _punctuation(text))


def process_digit_article(text: str) -> str:
    """Lowercase words, map number words to digits, drop articles, restore contractions."""
    table = contractions()
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(table.get(word, word))
    return " ".join(words)


@lru_cache(maxsize=1 << 16)
def normalize_answer(text: str) -> str:
    """Full VQA-v2 normalisation of one answer string (lowercased, whitespace collapsed)."""
    text = " ".join(str(text).replace("\n", " ").replace("\t", " ").split()).lower()
    return process_digit_article(process_punctuation(text))


@lru_cache(maxsize=1 << 16)
def legacy_normalize(text: str) -> str:
    """The VQA-v2 normaliser exactly as LLaVA-Med v1.0 (``normalize_word``) and MultiMedEval (``clean_str``,
    after its own lowercasing) run it, quirks included: punctuation decided per mark on the whole input, periods
    deleted when not followed by a digit and at most 32 per call, number words zero-ten mapped, articles dropped,
    contractions restored, commas removed. No whitespace is stripped first; ``str.split`` does it."""
    out = _LEGACY_PERIOD.sub("", _punctuation(text), count=_LEGACY_PERIOD_COUNT)
    return process_digit_article(out).replace(",", "")


_YES_NO = frozenset({"yes", "no"})


def is_yes_no(answer: str) -> bool:
    """True when the normalised answer is exactly "yes" or "no" (the paper's closed/open split)."""
    return normalize_answer(answer) in _YES_NO
