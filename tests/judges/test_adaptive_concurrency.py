"""The judge client's adaptive (AIMD) in-flight limit against the fake HTTP judge server (issue 10.8): a server that
answers HTTP 429 while more than K requests are in flight makes the client settle near K with every prompt judged,
and says so in ``describe()``; a healthy server never makes it back off.

Nothing here is timed: the assertions count requests, refusals and limits. The server counts a request as in
flight from its arrival until just before its reply is written, so the server never sees more requests in flight
than the client has outstanding.
"""

from __future__ import annotations

import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_judge import FakeJudgeServer, Reply, _JudgeHandler

pytest.importorskip("openai")

from medbench.endpoint import AsyncGate
from medbench.judges.client import JudgeClient, JudgeConfig
from medbench.judges.runs import DEFAULT_CONCURRENCY


class _EarlyLeaveHandler(_JudgeHandler):
    fake: RateLimitedJudge

    def _send(self, status: int, body: bytes, content_type: str = "application/json", headers: Any = ()) -> None:
        self.fake.leave_now()  # before the reply goes out: the client still counts this request in flight
        super()._send(status, body, content_type, headers)


class RateLimitedJudge(FakeJudgeServer):
    """:class:`FakeJudgeServer` that answers HTTP 429 (no Retry-After) to a request arriving while more than
    ``k`` requests (itself included) are in flight. ``throttled`` counts those answers."""

    def __init__(self, k: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k = k
        self.throttled = 0
        self._over = threading.local()  # one handler thread per request: the decision made at its arrival

    def handler_base(self) -> type[_JudgeHandler]:
        return _EarlyLeaveHandler

    def _enter(self, payload: dict[str, Any], auth: str | None, path: str) -> None:
        super()._enter(payload, auth, path)
        with self._lock:
            self._over.value = self.in_flight > self.k
            self.throttled += self._over.value

    def _choose(self, prompt: str) -> Reply:
        return Reply.error(429) if self._over.value else super()._choose(prompt)

    def _leave(self) -> None:
        pass  # counted in leave_now, which every reply passes through

    def leave_now(self) -> None:
        with self._lock:
            self.in_flight -= 1


def judge(server: FakeJudgeServer, **overrides: Any) -> JudgeClient:
    settings: dict[str, Any] = {"timeout": 10.0, "max_retries": 30, "backoff_base": 0.001, "backoff_max": 0.005}
    settings.update(overrides)
    return JudgeClient(JudgeConfig("deepseek", base_url=server.base_url, **settings))


@pytest.fixture(autouse=True)
def _deep_listen_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    # socketserver listens with a backlog of 5: a window of 32 connects would see SYNs dropped and retried a second
    # later, so requests the client counts in flight would sit in the kernel instead of reaching the server.
    monkeypatch.setattr(ThreadingHTTPServer, "request_queue_size", 128)


@pytest.fixture
def admissions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Per attempt the client sent: (its attempts in flight, this one included; its limit; decreases so far)."""
    seen: list[tuple[int, int, int]] = []
    acquire = AsyncGate.acquire

    async def recording(self: AsyncGate) -> int:
        epoch = await acquire(self)
        seen.append((self.active, self.limit.limit, self.limit.decreases))
        return epoch

    monkeypatch.setattr(AsyncGate, "acquire", recording)
    return seen


def test_the_default_concurrency_is_32() -> None:
    # Issue 10.8: 16 could not reach 1,000 judgements in 10 s at 200 ms a request (floor 12.5 s).
    assert DEFAULT_CONCURRENCY == 32 == JudgeConfig("deepseek").concurrency


def test_a_rate_limited_judge_settles_near_its_limit_and_every_prompt_succeeds(
    admissions: list[tuple[int, int, int]],
) -> None:
    # Guards issue 10.8: with a fixed 32 in flight, a server that takes 4 keeps refusing most of every window.
    k = 4
    with RateLimitedJudge(k, latency=0.2) as server:
        client = judge(server)
        replies = client.complete_many([f"<p{i}>" for i in range(40)])
        assert all(r.ok for r in replies), [r.error for r in replies if not r.ok]
        record = client.describe()["adaptive_concurrency"]
        # The first window of 32 met the limit: the client backed off, and says so.
        assert server.throttled >= 1 and record["throttled"] == server.throttled
        assert record["policy"] == "aimd" and record["maximum"] == record["max"] == 32
        assert record["decreases"] >= 3 and record["min"] <= k  # 32 -> 16 -> 8 -> 4 (or lower)
        assert record["final"] <= 2 * k
        # After the first decrease no attempt was sent with more in flight than the limit the client had then.
        after = [(active, limit) for active, limit, decreases in admissions if decreases]
        assert after and all(active <= limit for active, limit in after)
        assert server.calls == 40 + server.throttled  # every refusal was retried, nothing else was


def test_a_healthy_judge_never_lowers_the_limit(admissions: list[tuple[int, int, int]]) -> None:
    with FakeJudgeServer(latency=0.05) as server:
        client = judge(server)
        assert all(r.ok for r in client.complete_many([f"<h{i}>" for i in range(48)]))
        record = client.describe()["adaptive_concurrency"]
        assert (record["decreases"], record["throttled"], record["min"], record["final"]) == (0, 0, 32, 32)
        assert server.calls == 48
        assert max(active for active, _, _ in admissions) == 32  # the full window was open


def test_a_fixed_limit_stays_fixed_against_a_rate_limited_judge() -> None:
    with RateLimitedJudge(4, latency=0.05) as server:
        client = judge(server, concurrency=8, adaptive=False, max_retries=3)
        client.complete_many([f"<f{i}>" for i in range(16)])  # some may run out of retries: 8 keep going out
        record = client.describe()["adaptive_concurrency"]
        assert (record["policy"], record["decreases"], record["final"]) == ("fixed", 0, 8)
        assert record["throttled"] == server.throttled


def test_the_learnt_limit_carries_over_to_the_next_batch() -> None:
    # Prompts are sent in rounds (medbench.judges.core.CHUNK): a later round starts at the limit the last one
    # reached, not back at 32.
    with RateLimitedJudge(2, latency=0.05) as server:
        client = judge(server, concurrency=16)
        assert all(r.ok for r in client.complete_many([f"<a{i}>" for i in range(24)]))
        learnt = client.describe()["adaptive_concurrency"]["final"]
        assert learnt < 16
        before = server.throttled
        assert all(r.ok for r in client.complete_many([f"<b{i}>" for i in range(learnt)]))
        assert server.throttled - before <= learnt  # not a fresh window of 16 against a server that takes 2
        assert server.max_in_flight <= 16
