"""The ``clinical`` protocol: ``strict`` plus a curated table of clinically equivalent answers.

The paper notes that lexical matching marks "cardiomegaly" vs "enlarged heart" wrong. This protocol maps every
term of an equivalence group (``clinical_synonyms.json``: each group has a source note) to one canonical form,
after the same VQA-v2 normalisation as ``strict``, then compares canonical forms (group ids):

* multi-word terms and terms of 3+ characters are replaced wherever they occur as whole words in the answer
  (longest match first), so "left pleural fluid" can match "left pleural effusion" when the two terms are grouped;
* 1-2 character abbreviations (e.g. "us", "pa") count only when they are the whole answer, so they never fire
  inside ordinary phrases.

Laterality and other opposites are never grouped, so "left" and "right" stay distinct. Yes/no golds are scored
exactly as in ``strict``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from medbench.scoring.normalize import normalize_answer
from medbench.scoring.vqa import strict_score

TABLE = "clinical_synonyms.json"
_SHORT = 2


@lru_cache(maxsize=1)
def synonym_table() -> tuple[dict[str, str], dict[tuple[str, ...], str], int]:
    """(whole-answer map, phrase map keyed by token tuples, longest phrase length) from the bundled table.

    Every term is normalised like an answer; the canonical form of a group is its first term. A term listed in
    two groups is an error in the table.
    """
    raw = json.loads(resources.files(__package__).joinpath(TABLE).read_text(encoding="utf-8"))
    whole: dict[str, str] = {}
    phrases: dict[tuple[str, ...], str] = {}
    for index, group in enumerate(raw["groups"]):
        terms = [normalize_answer(t) for t in group["terms"]]
        canonical = f"<group{index}>"  # an id, not a term, so a short term can never equal it inside a phrase
        for term in terms:
            if not term:
                continue
            if whole.get(term, canonical) != canonical:
                raise ValueError(f"{TABLE}: group {index} repeats term {term!r} from another group")
            whole[term] = canonical
            if " " in term or len(term) > _SHORT:
                phrases[tuple(term.split())] = canonical
    longest = max((len(p) for p in phrases), default=1)
    return whole, phrases, longest


def canonical(normalized: str) -> str:
    """Canonical form of an already normalised answer under the synonym table."""
    whole, phrases, longest = synonym_table()
    if normalized in whole:
        return whole[normalized]
    tokens = normalized.split()
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for size in range(min(longest, len(tokens) - i), 0, -1):
            hit = phrases.get(tuple(tokens[i : i + size]))
            if hit is not None:
                out.append(hit)
                i += size
                break
        else:
            out.append(tokens[i])
            i += 1
    return " ".join(out)


def _same_canonical(answer: str, gold: str) -> bool:
    return canonical(answer) == canonical(gold)


def clinical_score(prediction: Any, reference: str) -> float:
    """1.0 if the prediction is the gold answer or a clinically equivalent one, else 0.0."""
    return strict_score(prediction, reference, equivalent=_same_canonical)
