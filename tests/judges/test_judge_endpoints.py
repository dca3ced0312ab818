"""Which judge a cached judgement belongs to, which key goes where, and a judge that refuses the credentials
(medbench issue 9): the judge cache is keyed by the full endpoint, a preset's key goes only to the preset's own
host, and HTTP 401/403 stops the run with exit 2 instead of finishing with every judgement failed."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_judge import FakeJudgeServer, Reply

pytest.importorskip("openai")

from medbench.cli import main
from medbench.endpoint import PLACEHOLDER_KEY
from medbench.errors import MedbenchError, UsageError
from medbench.judges.cache import JudgeCache
from medbench.judges.caption import judge_captions, render_prompt, template_sha256
from medbench.judges.client import JudgeClient, JudgeConfig, choose_key_env
from medbench.judges.core import JudgeCredentialsError
from medbench.judges.runs import JudgeSpec, build_judge, judge_rows
from medbench.registry import _MODELS, register_model

MARKER = "sk-deepseek-MARKER-5f3a9c0d1e2b"  # stands for a real DeepSeek key: must never reach a non-DeepSeek host
MY_KEY = "sk-local-MYVAR-77aa01"
PAIRS = [("gt one", "gen one"), ("gt two", "gen two"), ("gt three", "gen three")]
FAST: dict[str, Any] = {"timeout": 5.0, "max_retries": 1, "backoff_base": 0.001, "backoff_max": 0.01}


@pytest.fixture(autouse=True)
def _setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("DEEPSEEK_API_KEY", "MYVAR", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    register_model("scripted", "scripted_model:ScriptedModel", "test model with scripted answers")
    yield
    _MODELS.pop("scripted", None)


def scoring(score: int) -> FakeJudgeServer:
    """A fake judge whose every reply is ``Score: <score>``."""
    server = FakeJudgeServer()
    server.default_answer = f"Reasoning: fixed.\nScore: {score}"
    return server


def judge_at(server: FakeJudgeServer, name: str = "deepseek", **overrides: Any) -> JudgeClient:
    return JudgeClient(JudgeConfig(name, base_url=server.base_url, **{**FAST, **overrides}))


# --- 1. the cache is keyed by the endpoint, not the host ---------------------------------------------------------
def test_a_judge_on_another_port_of_the_same_host_is_asked_not_served_from_the_cache(tmp_path: Path) -> None:
    # Guards issue 9 item 1: keyed by host only, the second judge (127.0.0.1, another port) got the first one's
    # cached 4s instead of its own 2s.
    path = tmp_path / "cache.sqlite"
    with scoring(4) as first, scoring(2) as second:
        assert first.base_url != second.base_url and "127.0.0.1" in first.base_url and "127.0.0.1" in second.base_url
        with JudgeCache(path) as cache:
            assert [j.value for j in judge_captions(judge_at(first), cache, PAIRS)] == [4, 4, 4]
        with JudgeCache(path) as cache:  # a second run: the cache file reopened
            again = judge_captions(judge_at(second), cache, PAIRS)
        assert second.calls == len(PAIRS)
        assert [j.value for j in again] == [2, 2, 2] and not any(j.cached for j in again)
        # Each endpoint keeps its own judgements: the first one is still answered from the cache.
        with JudgeCache(path) as cache:
            assert all(j.cached and j.value == 4 for j in judge_captions(judge_at(first), cache, PAIRS))
            assert cache.count() == 2 * len(PAIRS)
        assert first.calls == len(PAIRS)
    rows = sqlite3.connect(str(path)).execute("SELECT DISTINCT host FROM judgements ORDER BY host").fetchall()
    assert sorted(r[0] for r in rows) == sorted([judge_at(first).cache_scope, judge_at(second).cache_scope])


def test_equivalent_spellings_of_one_endpoint_share_the_cache(tmp_path: Path) -> None:
    with scoring(4) as server, JudgeCache(tmp_path / "c.sqlite") as cache:
        judge_captions(judge_at(server), cache, PAIRS)
        port = server.base_url.split(":")[-1].split("/")[0]
        spelled = JudgeConfig("deepseek", base_url=f"HTTP://127.0.0.1:{port}/v1//", **FAST)
        assert all(j.cached for j in judge_captions(JudgeClient(spelled), cache, PAIRS))
        assert server.calls == len(PAIRS)


def test_a_cache_file_with_old_host_keyed_rows_opens_and_its_rows_are_not_served(tmp_path: Path) -> None:
    # A cache written before the fix: the same table (columns as they were), rows keyed by host name alone.
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(str(path))
    db.execute(
        "CREATE TABLE judgements (key TEXT PRIMARY KEY, judge_model TEXT NOT NULL, host TEXT NOT NULL, "
        "template_sha256 TEXT NOT NULL, raw_text TEXT NOT NULL, server_model TEXT, created REAL NOT NULL)"
    )
    for gt, gen in PAIRS:
        parts = ["deepseek-chat", "127.0.0.1", template_sha256(), render_prompt(gt, gen)]
        old_key = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
        db.execute(
            "INSERT INTO judgements VALUES (?, ?, ?, ?, ?, ?, 0)",
            (old_key, "deepseek-chat", "127.0.0.1", template_sha256(), "Reasoning: stale.\nScore: 4", "old"),
        )
    db.commit()
    db.close()
    with scoring(2) as server, JudgeCache(path) as cache:
        judged = judge_captions(judge_at(server), cache, PAIRS)
        assert [j.value for j in judged] == [2, 2, 2] and server.calls == len(PAIRS)
        assert cache.count() == 2 * len(PAIRS)  # the old rows are left alone, just never matched


def test_the_run_records_the_endpoint_scope(tmp_path: Path) -> None:
    with scoring(4) as server:
        out = tmp_path / "run"
        argv = ["run", "--demo", "--models", "scripted", "--tasks", "rocov2", "--output", str(out)]
        argv += ["--cache", str(tmp_path / "cache.sqlite"), "--judge", "deepseek", "--judge-base-url", server.base_url]
        assert main(argv) == 0
    judge = json.loads((out / "run.json").read_text())["judge"]
    assert judge["cache_scope"] == server.base_url  # http://127.0.0.1:<port>/v1, already in normal form
    assert judge["cache_scope"].startswith("http://127.0.0.1:")


def test_a_second_judged_run_against_another_port_reports_that_judges_score(tmp_path: Path) -> None:
    # Issue 9 item 1 end to end: the same command, the same cache file, another judge server on 127.0.0.1.
    def run(name: str, server: FakeJudgeServer) -> float:
        out = tmp_path / name
        argv = ["run", "--demo", "--models", "scripted", "--tasks", "rocov2", "--output", str(out)]
        argv += ["--cache", str(tmp_path / "cache.sqlite"), "--judge", "deepseek"]
        assert main([*argv, "--judge-base-url", server.base_url]) == 0
        results = json.loads((out / "results.json").read_text())
        return float(results["metrics"]["scripted"]["rocov2"]["caption"]["judge_score"]["value"])

    with scoring(4) as first, scoring(2) as second:
        assert run("a", first) == 4.0
        assert run("b", second) == 2.0
        assert second.calls == first.calls == 6


# --- 2. keys go only where they belong ---------------------------------------------------------------------------
def test_the_deepseek_key_is_not_sent_to_a_local_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # Guards issue 9 item 2: `--judge deepseek --judge-base-url http://127.0.0.1:.../v1` sent $DEEPSEEK_API_KEY to
    # the local server.
    monkeypatch.setenv("DEEPSEEK_API_KEY", MARKER)
    with scoring(3) as server:
        judge = judge_at(server)
        assert [r.ok for r in judge.complete_many(["<a>", "<b>"])] == [True, True]
        assert server.auth_headers == [f"Bearer {PLACEHOLDER_KEY}"] * 2
        described = judge.describe()
    assert described["api_key_env"] is None
    assert "DEEPSEEK_API_KEY" in described["api_key_source"] and "placeholder" in described["api_key_source"]
    assert MARKER not in json.dumps(described)


def test_a_key_variable_named_by_the_user_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", MARKER)
    monkeypatch.setenv("MYVAR", MY_KEY)
    with scoring(3) as server:
        judge = judge_at(server, api_key_env="MYVAR")
        assert judge.complete_many(["<a>"])[0].ok
        assert server.auth_headers == [f"Bearer {MY_KEY}"]
    described = judge.describe()
    assert (described["api_key_env"], described["api_key_source"]) == ("MYVAR", "named with --judge-api-key-env")


@pytest.mark.parametrize(
    ("base_url", "preset_key"),
    [
        (None, True),
        ("https://api.deepseek.com", True),
        ("https://API.DeepSeek.com:443/v1/", True),  # same scheme, host and port: another path is fine
        ("http://api.deepseek.com", False),  # another scheme (and port): the key must not go out in clear text
        ("https://api.deepseek.com:8443", False),
        ("https://api.deepseek.com.evil.example", False),
        ("https://deepseek.com", False),
        ("http://127.0.0.1:8000/v1", False),
    ],
)
def test_the_preset_key_goes_only_to_the_preset_host(
    monkeypatch: pytest.MonkeyPatch, base_url: str | None, preset_key: bool
) -> None:
    # Unit level, no network: the key the client would send for each base URL.
    monkeypatch.setenv("DEEPSEEK_API_KEY", MARKER)
    config = JudgeConfig("deepseek", base_url=base_url)
    assert config.resolved_key_env == ("DEEPSEEK_API_KEY" if preset_key else "")
    assert JudgeClient(config)._key == (MARKER if preset_key else PLACEHOLDER_KEY)
    # A variable named by the user wins everywhere.
    monkeypatch.setenv("MYVAR", MY_KEY)
    assert JudgeClient(JudgeConfig("deepseek", base_url=base_url, api_key_env="MYVAR"))._key == MY_KEY


def test_choose_key_env_reasons() -> None:
    own = choose_key_env("deepseek", "https://api.deepseek.com", None)
    assert own.env == "DEEPSEEK_API_KEY" and "https://api.deepseek.com" in own.reason
    local = choose_key_env("deepseek", "http://127.0.0.1:8000/v1", None)
    assert local.env is None and "only to the deepseek preset's own host" in local.reason
    other = choose_key_env("myjudge", "http://127.0.0.1:8000/v1", None)
    assert other.env is None and "placeholder" in other.reason
    assert choose_key_env("myjudge", "http://127.0.0.1:8000/v1", "MYVAR").env == "MYVAR"


def test_the_readme_local_judge_example_needs_no_key(tmp_path: Path) -> None:
    # `medbench run --tasks rocov2 --judge deepseek --judge-base-url http://127.0.0.1:8000/v1` with no key set.
    with scoring(4) as server:
        out = tmp_path / "run"
        argv = ["run", "--demo", "--models", "yes", "--tasks", "rocov2", "--output", str(out)]
        argv += ["--cache", str(tmp_path / "cache.sqlite"), "--judge", "deepseek", "--judge-base-url", server.base_url]
        assert main(argv) == 0
        assert server.calls > 0 and set(server.auth_headers) == {f"Bearer {PLACEHOLDER_KEY}"}
    judge = json.loads((out / "run.json").read_text())["judge"]
    assert judge["api_key_env"] is None and "placeholder" in judge["api_key_source"]


def test_an_unusable_base_url_is_a_usage_error_that_does_not_echo_it() -> None:
    with pytest.raises(UsageError, match="http or https") as info:
        JudgeConfig("myjudge", base_url="localhost:8000/v1?token=s3cr3t-q", model="m")
    assert "s3cr3t-q" not in str(info.value)


# --- 3. a judge that refuses the credentials stops the run ---------------------------------------------------------
def test_http_401_raises_at_once_and_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # Guards issue 9 item 3: a 401 on every request used to end as 100% judge failures and exit 0.
    monkeypatch.setenv("MYVAR", MY_KEY)
    with FakeJudgeServer(require_key="the-right-key") as server:
        judge = judge_at(server, "myjudge", model="m", api_key_env="MYVAR", concurrency=1)
        with pytest.raises(JudgeCredentialsError) as info:
            judge.complete_many([f"<p{i}>" for i in range(10)])
        # One request in flight at a time: the refusal is seen before any other prompt is sent.
        assert server.calls == 1
    message = str(info.value)
    assert isinstance(info.value, MedbenchError) and info.value.exit_code == 2
    assert message.startswith(f"judge myjudge at {server.base_url} refused the credentials (HTTP 401): set MYVAR")
    assert MY_KEY not in message and MY_KEY not in repr(info.value)


def test_http_403_with_no_key_sent_says_to_name_a_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", MARKER)
    with FakeJudgeServer() as server:
        server.default = Reply.error(403)
        with pytest.raises(JudgeCredentialsError) as info:
            judge_at(server, concurrency=4).complete_many([f"<p{i}>" for i in range(20)])
        # Only what was already in flight was sent: queued prompts never go out after the refusal.
        assert server.calls <= 4
    message = str(info.value)
    assert "(HTTP 403)" in message and "--judge-api-key-env" in message and "no key was sent" in message
    assert MARKER not in message


def test_a_refusal_propagates_out_of_judge_rows(tmp_path: Path) -> None:
    rows = [{"reference": f"gt {i}", "prediction": f"gen {i}", "scores": {}} for i in range(3)]
    with FakeJudgeServer(require_key="needed") as server, JudgeCache(tmp_path / "c.sqlite") as cache:
        backend = build_judge(JudgeSpec("myjudge", base_url=server.base_url, model="m", max_retries=0))
        with pytest.raises(JudgeCredentialsError):
            judge_rows("caption", rows, backend, cache)
        assert cache.count() == 0


def test_the_cli_exits_2_with_the_message_and_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", MARKER)
    with FakeJudgeServer(require_key="needed") as server:
        argv = ["run", "--demo", "--tasks", "rocov2", "--models", "yes", "--judge", "myjudge"]
        argv += ["--judge-base-url", server.base_url, "--judge-model", "m"]
        argv += ["--cache", str(tmp_path / "cache.sqlite"), "--output", str(tmp_path / "run")]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"judge myjudge at {server.base_url} refused the credentials (HTTP 401)" in err
    assert "--judge-api-key-env" in err
    assert "Traceback" not in err and MARKER not in err
