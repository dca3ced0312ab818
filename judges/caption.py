"""The paper's DeepSeek caption judge (Appendix D): ground truth + generated description → "Reasoning: … Score: X".

:func:`render_prompt` fills ``templates/caption_appendix_d.jinja`` (the Appendix D prompt, verbatim);
:func:`parse_score` reads the 1–5 score back (anything else is a parse failure, ``None``);
:func:`judge_captions` asks the judge for a batch of pairs through the judge cache. A failed request or an
unparseable reply is a :class:`Judgement` with ``value=None`` and a ``failure_reason`` — never a zero — and is not
cached, so the next run asks again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from medbench.judges.cache import JudgeCache
from medbench.judges.core import JudgeBackend, Judgement, ask, compiled_template, template_text
from medbench.judges.core import template_sha256 as _template_sha256

TEMPLATE_NAME = "caption_appendix_d.jinja"
SCORE_MIN, SCORE_MAX = 1, 5


def template_source() -> str:
    return template_text(TEMPLATE_NAME)


def template_sha256() -> str:
    """Hash of the template source; part of every judge-cache key, so an edited prompt is judged afresh."""
    return _template_sha256(TEMPLATE_NAME)


def render_prompt(ground_truth: str, generated_text: str) -> str:
    """The Appendix D prompt for one pair (inputs stripped of surrounding whitespace). The template has no block
    tags and its final newline is dropped, so the prompt ends with "Score: X" exactly as in the paper."""
    template = compiled_template(TEMPLATE_NAME)
    return str(template.render(ground_truth=str(ground_truth).strip(), generated_text=str(generated_text).strip()))


# "Score: 4", "**Score:** 4/5", "Final score = 4.0", "SCORE: [4]"; the value may start on the next line.
_LABEL = re.compile(r"\bscore\b[ \t*_#]*[:=：][ \t*_]*\n?[ \t*_]*(?P<value>[^\n]*)", re.IGNORECASE)
_NUMBER = re.compile(r"^[\[(\s*_\"']*(?P<num>[-+]?\d+(?:\.\d+)?)(?P<rest>.*)$")
_DENOMINATOR = re.compile(r"^[\s\])*_\"']*(?:/|out of)\s*(?P<den>\d+(?:\.\d+)?)", re.IGNORECASE)
_RANGE = re.compile(r"^\s*(?:-|–|to\b|or\b)\s*\d")


def parse_score_detail(text: str) -> tuple[int | None, str | None]:
    """``(score, None)`` for an integer 1–5 on the last ``Score:`` line that carries a number, else
    ``(None, reason)``."""
    labels = list(_LABEL.finditer(text or ""))
    if not labels:
        return None, "parse failure: no 'Score:' line in the reply"
    numeric = [(m, n) for m in labels if (n := _NUMBER.match(m.group("value"))) is not None]
    if not numeric:
        value = labels[-1].group("value").strip()[:40]
        return None, f"parse failure: score {value!r} is not a number"
    _, number = numeric[-1]
    raw, rest = number.group("num"), number.group("rest")
    if _RANGE.match(rest):
        return None, f"parse failure: score '{raw}{rest.strip()[:20]}' is a range, not one score"
    den = _DENOMINATOR.match(rest)
    if den is not None and float(den.group("den")) != SCORE_MAX:
        return None, f"parse failure: score {raw}/{den.group('den')} is not on the 1-5 scale"
    value_f = float(raw)
    if not value_f.is_integer():
        return None, f"parse failure: score {raw} is not an integer"
    score = int(value_f)
    if not SCORE_MIN <= score <= SCORE_MAX:
        return None, f"parse failure: score {raw} is outside 1-5"
    return score, None


def parse_score(text: str) -> int | None:
    """The judge's 1–5 score, or None when the reply has no valid one (see :func:`parse_score_detail`)."""
    return parse_score_detail(text)[0]


def judge_captions(
    backend: JudgeBackend,
    cache: JudgeCache | None,
    pairs: Sequence[tuple[str, str]],
    advance: Callable[[int], Any] | None = None,
) -> list[Judgement]:
    """Judge ``(ground_truth, generated_text)`` pairs, in order; ``Judgement.value`` is the 1–5 score. Cached
    replies are reused (no call); identical prompts are asked once; only replies with a valid score are cached."""
    prompts = [render_prompt(gt, gen) for gt, gen in pairs]
    return ask(backend, cache, prompts, template_sha256(), parse_score_detail, advance)


def summarize(judgements: Sequence[Judgement]) -> dict[str, Any]:
    """``judge_score`` (mean over valid scores only), ``judge_n``, ``judge_failures`` and ``judge_failure_rate``."""
    scores = [j.value for j in judgements if j.value is not None]
    failures = len(judgements) - len(scores)
    return {
        "judge_score": sum(scores) / len(scores) if scores else None,
        "judge_n": len(scores),
        "judge_failures": failures,
        "judge_failure_rate": failures / len(judgements) if judgements else 0.0,
    }
