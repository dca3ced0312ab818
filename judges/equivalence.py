"""The open-answer equivalence judge: question + reference + extracted answer → a JSON verdict.

String matching misses clinically equivalent open answers ("cardiomegaly" vs "enlarged heart"), the limitation the
paper names. This judge asks an LLM, without the image, whether the model's extracted answer means the same as the
reference for that question; the reply must be a JSON object ``{"equivalent": true|false, "reason": "..."}``.
:func:`parse_verdict` accepts it bare, in a ```json fence, or after prose; anything else (no object, no boolean
``equivalent``) is a parse failure, recorded and never read as "not equivalent".

How verdicts enter the ``clinical`` protocol, and how the judge's agreement with ``strict`` is reported, lives in
:mod:`medbench.scoring.judged`; which rows are judged is decided in :mod:`medbench.judges.runs`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from medbench.judges.cache import JudgeCache
from medbench.judges.core import JudgeBackend, Judgement, ask, compiled_template
from medbench.judges.core import template_sha256 as _template_sha256

TEMPLATE_NAME = "open_equivalence.jinja"
_TRUE = {"true", "yes", "equivalent"}
_FALSE = {"false", "no", "not equivalent"}


def template_sha256() -> str:
    return _template_sha256(TEMPLATE_NAME)


def render_prompt(question: str, reference: str, answer: str) -> str:
    """The equivalence prompt for one open question (inputs stripped of surrounding whitespace)."""
    return str(
        compiled_template(TEMPLATE_NAME).render(
            question=str(question).strip(), reference=str(reference).strip(), answer=str(answer).strip()
        )
    )


def _objects(text: str) -> list[Any]:
    """JSON objects found in ``text``, in order: every ``{`` that starts a decodable object (so a ```json fence
    or prose around the object does not matter)."""
    found: list[Any] = []
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        found.append(value)
    return [v for v in found if isinstance(v, dict)]


def parse_verdict_detail(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """``({"equivalent": bool, "reason": str | None}, None)`` from the first JSON object carrying a boolean
    ``equivalent`` (the strings "true"/"false"/"yes"/"no" are accepted too), else ``(None, reason)``."""
    objects = _objects(text or "")
    if not objects:
        return None, "parse failure: no JSON object in the reply"
    for obj in objects:
        flag = obj.get("equivalent")
        if isinstance(flag, str):
            lowered = flag.strip().lower()
            flag = True if lowered in _TRUE else False if lowered in _FALSE else None
        if isinstance(flag, bool):
            reason = obj.get("reason")
            return {"equivalent": flag, "reason": reason if isinstance(reason, str) else None}, None
    return None, "parse failure: the JSON reply has no true/false 'equivalent' field"


def judge_equivalence(
    backend: JudgeBackend,
    cache: JudgeCache | None,
    items: Sequence[tuple[str, str, str]],
    advance: Callable[[int], Any] | None = None,
) -> list[Judgement]:
    """Judge ``(question, reference, answer)`` triples, in order; ``Judgement.value`` is the parsed verdict dict.
    Caching and failure handling as in :func:`medbench.judges.core.ask`."""
    prompts = [render_prompt(q, ref, ans) for q, ref, ans in items]
    return ask(backend, cache, prompts, template_sha256(), parse_verdict_detail, advance)
