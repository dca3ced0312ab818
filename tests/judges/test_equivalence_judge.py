"""The open-answer equivalence judge: its prompt and its verdict parser."""

from __future__ import annotations

import pytest

from medbench.judges.equivalence import parse_verdict_detail, render_prompt, template_sha256


def test_prompt_carries_question_reference_and_answer_and_asks_for_json() -> None:
    prompt = render_prompt("  What is enlarged?\n", "cardiomegaly", " enlarged heart ")
    assert "Question: What is enlarged?\n" in prompt
    assert "Reference answer: cardiomegaly\n" in prompt and "Model answer: enlarged heart\n" in prompt
    assert prompt.endswith('{"equivalent": true or false, "reason": "one short sentence"}')
    assert "do not see the image" in prompt and "JSON" in prompt
    assert len(template_sha256()) == 64


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ('{"equivalent": true, "reason": "same organ"}', {"equivalent": True, "reason": "same organ"}),
        ('```json\n{"equivalent": false, "reason": "other side"}\n```', {"equivalent": False, "reason": "other side"}),
        ('Thinking... {"note": 1} then {"equivalent": "yes"}', {"equivalent": True, "reason": None}),
        ('{"equivalent": "False", "reason": 3}', {"equivalent": False, "reason": None}),
        ('{"reason": "x", "equivalent": true} trailing words', {"equivalent": True, "reason": "x"}),
    ],
)
def test_parse_verdict(text: str, verdict: dict[str, object]) -> None:
    assert parse_verdict_detail(text) == (verdict, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no JSON object"),
        ("They are equivalent.", "no JSON object"),
        ('{"equivalent": maybe}', "no JSON object"),
        ('{"equivalent": "perhaps"}', "no true/false 'equivalent'"),
        ('{"equivalent": 1}', "no true/false 'equivalent'"),
        ('{"correct": true}', "no true/false 'equivalent'"),
        ("[true]", "no JSON object"),
    ],
)
def test_unparseable_verdicts_are_failures_not_false(text: str, reason: str) -> None:
    verdict, failure = parse_verdict_detail(text)
    assert verdict is None and failure is not None and reason in failure
