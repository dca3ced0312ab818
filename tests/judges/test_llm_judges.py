"""The LLM judge client, the Appendix D caption judge and the judge cache, against a local fake OpenAI server."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_judge import GOOD, FakeJudgeServer, FakeOpenAIServer, Reply

pytest.importorskip("openai")

from medbench.errors import UsageError
from medbench.judges.cache import JudgeCache, judgement_key
from medbench.judges.caption import (
    Judgement,
    judge_captions,
    parse_score,
    parse_score_detail,
    render_prompt,
    summarize,
    template_sha256,
)
from medbench.judges.client import JudgeClient, JudgeConfig, JudgeReply
from medbench.judges.core import JudgeCredentialsError

SECRET = "sk-judge-SECRET-0123456789abcdef"
KEY_ENV = "MEDBENCH_TEST_JUDGE_KEY"
SEED = Path("/work/shared/seed/LLaMA32-Med.txt")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DEEPSEEK_API_KEY", KEY_ENV, "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server() -> Iterator[FakeJudgeServer]:
    with FakeJudgeServer() as fake:
        yield fake


def client(server: FakeOpenAIServer, **overrides: Any) -> JudgeClient:
    settings: dict[str, Any] = {"timeout": 5.0, "max_retries": 3, "backoff_base": 0.001, "backoff_max": 0.01}
    settings.update(overrides)
    return JudgeClient(JudgeConfig("deepseek", base_url=server.base_url, **settings))


# --- configuration -----------------------------------------------------------------------------------------------
def test_deepseek_preset_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    config = JudgeConfig("deepseek")
    assert config.resolved_base_url == "https://api.deepseek.com"
    assert config.resolved_model == "deepseek-chat"
    assert config.resolved_key_env == "DEEPSEEK_API_KEY"
    # Issue 10.8: the default concurrency went from 16 to 32 (adaptive: it falls on HTTP 429).
    assert (config.concurrency, config.adaptive, config.timeout) == (32, True, 600.0)
    assert config.host == "api.deepseek.com"
    # The hosted endpoint needs its key.
    with pytest.raises(UsageError, match="DEEPSEEK_API_KEY"):
        JudgeClient(config)
    monkeypatch.setenv("DEEPSEEK_API_KEY", SECRET)
    judge = JudgeClient(config)
    assert judge.describe()["model"] == "deepseek-chat"
    assert judge.describe()["temperature"] == 0.0
    # Overrides: a local server and another model; no key needed there (a placeholder is sent).
    monkeypatch.delenv("DEEPSEEK_API_KEY")
    local = JudgeClient(JudgeConfig("deepseek", base_url="http://127.0.0.1:9/v1/", model="qwen-judge"))
    assert (local.model, local.base_url) == ("qwen-judge", "http://127.0.0.1:9/v1")
    # A key variable named explicitly must be set.
    with pytest.raises(UsageError, match=KEY_ENV):
        JudgeClient(JudgeConfig("deepseek", base_url="http://127.0.0.1:9/v1", api_key_env=KEY_ENV))
    with pytest.raises(UsageError, match="not a preset"):
        JudgeConfig("mystery")
    custom = JudgeConfig("mystery", base_url="http://127.0.0.1:9/v1", model="m")
    assert custom.resolved_model == "m"
    for bad in ({"concurrency": 0}, {"timeout": 0.0}, {"max_retries": -1}, {"backoff_base": -1.0}):
        with pytest.raises(UsageError):
            JudgeConfig("deepseek", **bad)


# --- the client ----------------------------------------------------------------------------------------------------
def test_good_answers_in_order_with_server_model(server: FakeJudgeServer) -> None:
    for i in range(5):
        server.answer(f"<p{i}>", f"Reasoning: r{i}\nScore: {i + 1}")
        server.on_prompt(f"<p{i}>", Reply.hang(0.04 * (5 - i)))  # early prompts answer last
    replies = client(server, concurrency=5).complete_many([f"<p{i}>" for i in range(5)])
    assert [r.text for r in replies] == [f"Reasoning: r{i}\nScore: {i + 1}" for i in range(5)]
    assert all(r.ok and r.server_model == "fake-served-model-v1" and r.attempts == 1 for r in replies)
    payload = server.payloads[0]
    assert payload["model"] == "deepseek-chat"
    assert payload["temperature"] == 0
    assert payload["messages"][0]["role"] == "user"
    assert client(server).complete_many([]) == []


def test_429_then_success(server: FakeJudgeServer) -> None:
    server.script(Reply.error(429, retry_after="0"), Reply.error(429))
    (reply,) = client(server).complete_many(["<only>"])
    assert reply.ok and reply.text == GOOD
    assert reply.attempts == 3
    assert server.calls == 3


def test_persistent_500_is_a_failure_not_an_exception(server: FakeJudgeServer) -> None:
    server.on_prompt("<bad>", Reply.error(500))
    replies = client(server, max_retries=2).complete_many(["<good>", "<bad>"])
    assert replies[0].ok
    bad = replies[1]
    assert not bad.ok and bad.text is None
    assert "HTTP 500" in (bad.error or "") and "3 attempt(s)" in (bad.error or "")
    assert server.calls == 1 + 3


def test_non_retryable_4xx_fails_at_once(server: FakeJudgeServer) -> None:
    server.on_prompt("<bad>", Reply.error(400))
    (reply,) = client(server).complete_many(["<bad>"])
    assert not reply.ok and "HTTP 400" in (reply.error or "")
    assert server.calls == 1


def test_hang_past_timeout_is_retried_then_fails(server: FakeJudgeServer) -> None:
    server.on_prompt("<slow-once>", Reply.hang(3.0, times=1))
    server.on_prompt("<slow-always>", Reply.hang(3.0))
    start = time.monotonic()
    once, always = client(server, timeout=0.3, max_retries=1).complete_many(["<slow-once>", "<slow-always>"])
    assert time.monotonic() - start < 2.5  # two attempts of 0.3 s, not the 3 s hangs
    assert once.ok and once.attempts == 2
    assert not always.ok and "timed out" in (always.error or "")
    assert always.attempts == 2


@pytest.mark.parametrize("variant", ["not_json", "truncated", "no_choices", "null_content"])
def test_malformed_bodies_are_retried(server: FakeJudgeServer, variant: str) -> None:
    server.script(Reply.malformed(variant))
    (reply,) = client(server).complete_many(["<x>"])
    assert reply.ok and reply.attempts == 2


def test_blank_completion_is_retried_then_fails(server: FakeJudgeServer) -> None:
    server.answer("<blank>", "   \n")
    (reply,) = client(server, max_retries=2).complete_many(["<blank>"])
    assert not reply.ok and "blank" in (reply.error or "")
    assert server.calls == 3


def test_connection_refused_is_a_failure() -> None:
    with FakeJudgeServer() as fake:
        base_url = fake.base_url
    judge = JudgeClient(JudgeConfig("deepseek", base_url=base_url, max_retries=1, backoff_base=0.001, timeout=2))
    (reply,) = judge.complete_many(["<x>"])
    assert not reply.ok and "connection error" in (reply.error or "")


def test_concurrency_is_bounded() -> None:
    with FakeJudgeServer(latency=0.1) as fake:
        client(fake, concurrency=3).complete_many([f"<c{i}>" for i in range(12)])
        assert fake.max_in_flight == 3
    with FakeJudgeServer(latency=0.2) as fake:
        start = time.monotonic()
        replies = client(fake).complete_many([f"<d{i}>" for i in range(48)])  # default concurrency 32
        assert all(r.ok for r in replies)
        assert 3 < fake.max_in_flight <= 32
        assert time.monotonic() - start < 48 * 0.2 / 2


def test_complete_many_inside_a_running_event_loop(server: FakeJudgeServer) -> None:
    async def main() -> list[JudgeReply]:
        return client(server).complete_many(["<a>"])

    (reply,) = asyncio.run(main())
    assert reply.ok


def test_key_never_leaks(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    # The fake's error bodies echo the Authorization header, as a careless proxy might.
    with FakeJudgeServer(require_key=SECRET) as fake:
        fake.script(Reply.error(429, retry_after="0"))
        fake.on_prompt("<e500>", Reply.error(500))
        fake.on_prompt("<e400>", Reply.error(400))
        config = JudgeConfig(
            "deepseek", base_url=fake.base_url, api_key_env=KEY_ENV, max_retries=1, backoff_base=0.001, timeout=5
        )
        judge = JudgeClient(config)
        replies = judge.complete_many(["<ok>", "<e500>", "<e400>"])
        assert fake.auth_headers[0] == f"Bearer {SECRET}"  # it was sent...
        assert replies[0].ok and not replies[1].ok and not replies[2].ok
        with JudgeCache(tmp_path / "j.sqlite") as cache:
            judgements = judge_captions(judge, cache, [("gt <e500>", "gen"), ("gt", "gen")])
        texts += [repr(config), str(config), repr(judge), json.dumps(judge.describe()), repr(replies), repr(judgements)]
    # ...a wrong key: 401, whose body quotes the header sent; it stops the batch (JudgeCredentialsError)
    with FakeJudgeServer(require_key="another-key") as fake:
        judge = JudgeClient(JudgeConfig("deepseek", base_url=fake.base_url, api_key_env=KEY_ENV, timeout=5))
        with pytest.raises(JudgeCredentialsError) as denied:
            judge.complete_many(["<x>"])
        assert "401" in str(denied.value) and fake.calls == 1
        texts += [str(denied.value), repr(denied.value)]
    # ...and the hosted preset's missing-key error
    monkeypatch.setenv("DEEPSEEK_API_KEY", SECRET)
    texts.append(repr(JudgeClient(JudgeConfig("deepseek"))))
    texts += [r.getMessage() for r in caplog.records]
    texts.append(caplog.text)
    texts += [p.read_bytes().decode("latin-1") for p in tmp_path.iterdir()]
    assert any("HTTP 500" in t for t in texts)  # the error text is there, scrubbed
    for text in texts:
        assert SECRET not in text


# --- the caption judge: prompt and parser ---------------------------------------------------------------------------
EXPECTED_PROMPT = (
    "You are an expert radiologist, assess the following generated radiology report description by comparing it to "
    "the provided ground truth caption.\n\n"
    "Evaluate both the semantic similarity and clinical accuracy between the two. Assign a score on a scale from 1 "
    "to 5, where 1 indicates no similarity or accuracy, and 5 signifies high similarity and accuracy.\n\n"
    "Ensure that higher scores are given when the generated description closely matches the ground truth in both "
    "meaning and clinical correctness.\n\n"
    "Ground truth caption: {ground_truth}\n\n"
    "Model generated description: {generated_text}\n\n"
    "Format your response as:\n\n"
    "Reasoning: [Your reasoning]\n\n"
    "Score: X"
)


def test_prompt_is_appendix_d_verbatim() -> None:
    gt, gen = "Fracture of the right femur.", "X-ray showing a femoral fracture {{ not jinja }} <b>&"
    assert render_prompt(gt, gen) == EXPECTED_PROMPT.format(ground_truth=gt, generated_text=gen)
    assert render_prompt("  a\n", "\tb ") == EXPECTED_PROMPT.format(ground_truth="a", generated_text="b")
    assert len(template_sha256()) == 64


@pytest.mark.skipif(not SEED.exists(), reason="the paper text is not available here")
def test_prompt_matches_the_paper_text() -> None:
    text = SEED.read_text(encoding="utf-8")
    start = text.index("You are an expert radiologist, assess", text.index("Appendix D. DeepSeek Prompt Template"))
    end = text.index("Score: X", start) + len("Score: X")
    assert text[start:end] == EXPECTED_PROMPT


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("Reasoning: close.\nScore: 4", 4),
        ("**Score:** 4/5", 4),
        ("**Score**: 3", 3),
        ("Score: 4.0", 4),
        ("Reasoning: fine\nScore: 5 - near identical findings.", 5),
        ("Score: 2\nOn reflection the laterality matches.\nScore: 3", 3),
        ("Reasoning: format says Score: X\nFinal score: 1", 1),
        ("SCORE = [2]", 2),
        ("Score:\n5", 5),
        ("Score: 4 out of 5", 4),
        ("Score: 7", None),
        ("Score: 0", None),
        ("Score: -1", None),
        ("Score: three", None),
        ("Score: X", None),
        ("Score: 4.5", None),
        ("Score: 8/10", None),
        ("Score: 3-4", None),
        ("I would rate this a 4.", None),
        ("", None),
    ],
)
def test_parse_score(text: str, score: int | None) -> None:
    assert parse_score(text) == score
    value, reason = parse_score_detail(text)
    assert value == score
    assert (reason is None) == (score is not None)


# --- the caption judge end to end, and the cache ---------------------------------------------------------------
PAIRS = [("gt <good>", "gen a"), ("gt <seven>", "gen b"), ("gt <three>", "gen c"), ("gt <e500>", "gen d")]


def _script_caption_server(fake: FakeJudgeServer) -> None:
    fake.answer("<good>", "Reasoning: ok\n**Score:** 5/5")
    fake.answer("<seven>", "Reasoning: great\nScore: 7")
    fake.answer("<three>", "Reasoning: meh\nScore: three")
    fake.on_prompt("<e500>", Reply.error(500))


def test_judge_captions_records_failures_not_zeros(server: FakeJudgeServer) -> None:
    _script_caption_server(server)
    judgements = judge_captions(client(server, max_retries=1), None, PAIRS)
    good, seven, three, failed = judgements
    assert good == Judgement(5, None, "Reasoning: ok\n**Score:** 5/5", "fake-served-model-v1", False)
    assert seven.value is None and "outside 1-5" in (seven.failure_reason or "")
    assert three.value is None and "not a number" in (three.failure_reason or "")
    assert failed.value is None and (failed.failure_reason or "").startswith("request failed: ")
    assert "HTTP 500" in (failed.failure_reason or "")
    summary = summarize(judgements)
    assert summary == {"judge_score": 5.0, "judge_n": 1, "judge_failures": 3, "judge_failure_rate": 0.75}
    assert summarize([])["judge_score"] is None


def test_rerun_makes_zero_calls_and_failures_are_retried(server: FakeJudgeServer, tmp_path: Path) -> None:
    _script_caption_server(server)
    path = tmp_path / "cache.sqlite"
    with JudgeCache(path) as cache:
        first = judge_captions(client(server, max_retries=1), cache, PAIRS)
        assert cache.count() == 1  # only the valid score is stored
    calls_after_first = server.calls
    # Now everything answers well: the failures are asked again, the cached one is not.
    server.answers.clear()
    server._rules.clear()
    with JudgeCache(path) as cache:
        second = judge_captions(client(server), cache, PAIRS)
        assert server.calls == calls_after_first + 3
        assert [j.cached for j in second] == [True, False, False, False]
        assert second[0] == first[0]._replace(cached=True)
        assert [j.value for j in second] == [5, 4, 4, 4]
        assert cache.count() == 4
    # A rerun (new process: a reopened cache, the same endpoint) makes zero calls. (Another port of the same host
    # is another judge and a cache miss: tests/judges/test_judge_endpoints.py.)
    calls_after_second = server.calls
    with JudgeCache(path) as cache:
        third = judge_captions(client(server), cache, PAIRS)
        assert server.calls == calls_after_second
        assert all(j.cached for j in third)
        assert [j.value for j in third] == [5, 4, 4, 4]
        assert [j.server_model for j in third] == ["fake-served-model-v1"] * 4
        # Another judge model is a cache miss.
        judge_captions(client(server, model="another-judge"), cache, PAIRS[:1])
        assert server.calls == calls_after_second + 1
    assert sqlite3.connect(str(path)).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_identical_prompts_are_asked_once(server: FakeJudgeServer) -> None:
    judgements = judge_captions(client(server), JudgeCache(None), [("gt", "same")] * 5 + [("gt", "other")])
    assert server.calls == 2
    assert [j.value for j in judgements] == [4] * 6


def test_judgement_key_covers_model_scope_template_and_prompt() -> None:
    # The scope is the normalised endpoint (its case rules live in medbench.endpoint.endpoint_scope, tested in
    # tests/test_endpoint.py); the key uses it as given.
    scope = "https://api.deepseek.com:443"
    base = {"judge_model": "deepseek-chat", "scope": scope, "template_sha256": "t1", "prompt": "p"}
    key = judgement_key(**base)
    assert judgement_key(**base) == key
    changes = (
        ("judge_model", "m2"),
        ("scope", "http://127.0.0.1:8000/v1"),
        ("scope", "http://127.0.0.1:8001/v1"),
        ("template_sha256", "t2"),
        ("prompt", "q"),
    )
    for field, value in changes:
        assert judgement_key(**{**base, field: value}) != key
