"""Answer normalisation in the VQA-v2 style (punctuation, number words, articles, contractions).

This follows the behaviour of the official VQA-v2 evaluation (``processPunctuation`` + ``processDigitArticle``),
which the classic medical-VQA papers (M2I2, MEVF, PubMedCLIP) and LLaVA-Med's ``normalize_word`` descend from.
It is written here from the published description; protocol-specific quirks live in the protocol modules.
"""

from __future__ import annotations

import re

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
_PERIOD_NOT_IN_NUMBER = re.compile(r"(?<!\d)\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})
# The VQA-v2 contraction table restores apostrophes dropped by annotators ("dont" -> "don't").
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's",
    "Im": "I'm", "im": "i'm", "isnt": "isn't", "itd": "it'd", "itll": "it'll", "ive": "i've", "lets": "let's",
    "mightnt": "mightn't", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't",
    "notve": "not've", "shant": "shan't", "shed": "she'd", "shes": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "thats": "that's", "thered": "there'd", "theres": "there's", "theyd": "they'd",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "wasnt": "wasn't", "wed": "we'd",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "yall": "y'all",
    "youd": "you'd", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip


def process_punctuation(text: str) -> str:
    """VQA-v2 punctuation rule: drop a mark when spaced or in a number, else replace it by a space."""
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_IN_NUMBER.search(text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_IN_NUMBER.sub("", out)


def process_digit_article(text: str) -> str:
    """Lowercase words, map number words to digits, drop articles, restore contractions."""
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_answer(text: str) -> str:
    """Full VQA-v2 normalisation of one answer string (lowercased, whitespace collapsed)."""
    text = " ".join(str(text).replace("\n", " ").replace("\t", " ").split()).lower()
    return process_digit_article(process_punctuation(text))


_YES_NO = frozenset({"yes", "no"})


def is_yes_no(answer: str) -> bool:
    """True when the normalised answer is exactly "yes" or "no" (the paper's closed/open split)."""
    return normalize_answer(answer) in _YES_NO
