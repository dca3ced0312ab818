"""The retry loop and the adaptive in-flight limit both OpenAI-compatible clients share (medbench.endpoint; issue 10
items 4 and 8). Everything here is deterministic: attempts are plain functions or coroutines that count, retries wait
0 s, and asyncio runs the tasks in a fixed order. End-to-end behaviour against a real HTTP server is tested in
tests/models/test_openai_compat.py and tests/judges (test_adaptive_concurrency.py for the AIMD limit)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

pytest.importorskip("openai")  # the run classifies exceptions through medbench.endpoint.translate_openai_error

from medbench.endpoint import (
    AdaptiveLimit,
    AsyncGate,
    ErrorContext,
    Failure,
    Fatal,
    Retryable,
    RetryPolicy,
    RetryRun,
    Success,
    acall_with_retries,
    call_with_retries,
)

SECRET = "sk-test-secret-0123456789"
ERRORS = ErrorContext(timeout=1.0, secret=SECRET, key_env="MY_KEY", detail_chars=100)
log = logging.getLogger("medbench.tests.retry")


def run_of(max_retries: int = 3) -> RetryRun:
    # backoff_base 0 and Retry-After 0 make every retry wait exactly 0 s.
    return RetryRun(RetryPolicy(max_retries, 0.0, 0.0), ERRORS, log, "client x: sample s1")


def throttle() -> Retryable:
    return Retryable("HTTP 429: slow down", 0.0, 429)


# --- RetryRun: the state machine ----------------------------------------------------------------------------------
def test_a_run_retries_retryable_failures_then_reports_the_last(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=log.name)
    run = run_of(max_retries=2)
    assert run.policy.attempts == 3
    assert run.failed(Retryable("HTTP 500: oops")) == 0.0
    assert not run.throttled
    assert run.failed(throttle()) == 0.0
    assert run.throttled
    final = run.failed(Retryable("timed out after 1s"))
    assert final == Failure("exhausted", "timed out after 1s", 3)
    assert final.reason("http://h/v1/chat/completions") == (
        "http://h/v1/chat/completions failed after 3 attempt(s); last error: timed out after 1s"
    )
    # Each retry is logged on the client's logger with its label (the same text the clients logged before).
    assert "client x: sample s1: attempt 1/3 failed (HTTP 500: oops); retrying in 0.00s" in caplog.text
    assert "attempt 2/3 failed" in caplog.text and "attempt 3/3" not in caplog.text


def test_a_run_stops_at_a_fatal_answer_and_at_an_unexpected_exception() -> None:
    rejected = run_of().failed(Fatal("HTTP 400: bad request", 400))
    assert rejected == Failure("rejected", "HTTP 400: bad request", 1, 400)
    assert rejected.reason("E") == "E rejected the request: HTTP 400: bad request"
    unexpected = run_of().failed(ValueError(f"client broke near {SECRET}"))
    assert unexpected == Failure("unexpected", "ValueError: client broke near ***", 1)  # scrubbed
    assert unexpected.reason("E") == "E: unexpected ValueError: client broke near ***"


def test_a_run_counts_the_successful_attempt() -> None:
    run = run_of()
    run.failed(throttle())
    assert run.succeeded("text") == Success("text", 2)
    assert not run.throttled


# --- call_with_retries: the blocking loop (the openai: model adapter) ----------------------------------------------
def test_call_with_retries_returns_the_first_success() -> None:
    answers: list[Any] = [Retryable("HTTP 503: busy"), throttle(), "done"]

    def attempt() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    assert call_with_retries(attempt, run_of(), threading.Event()) == Success("done", 3)


def test_call_with_retries_halts_when_the_batch_is_aborted() -> None:
    calls = []
    abort = threading.Event()

    def attempt() -> str:
        calls.append(1)
        abort.set()  # another request of the batch failed meanwhile
        raise Retryable("HTTP 500: oops")

    # A 60 s backoff would block; the set abort ends the wait at once and no second attempt is made.
    run = RetryRun(RetryPolicy(5, 60.0, 60.0), ERRORS, log, "x")
    assert call_with_retries(attempt, run, abort) == Failure("halted", "", 1)
    assert calls == [1]
    assert call_with_retries(attempt, run_of(), abort) == Failure("halted", "", 0)  # never attempted
    assert calls == [1]


# --- AdaptiveLimit: AIMD ---------------------------------------------------------------------------------------------
def test_a_429_halves_the_limit_down_to_one() -> None:
    limit = AdaptiveLimit(32)
    seen = []
    for _ in range(7):
        limit.throttled(limit.epoch)
        seen.append(limit.limit)
    assert seen == [16, 8, 4, 2, 1, 1, 1]  # never below 1
    assert limit.record() == {
        "policy": "aimd",
        "maximum": 32,
        "min": 1,
        "max": 32,
        "final": 1,
        "decreases": 5,
        "increases": 0,
        "throttled": 7,
    }


def test_429s_of_attempts_sent_before_a_decrease_do_not_lower_it_again() -> None:
    # A burst of 429s from one window of requests is one signal: halve once, not once per reply.
    limit = AdaptiveLimit(32)
    sent_in = limit.epoch
    for _ in range(20):
        limit.throttled(sent_in)
    assert (limit.limit, limit.decreases, limit.throttles) == (16, 1, 20)
    limit.throttled(limit.epoch)  # an attempt sent under 16 that is refused too
    assert limit.limit == 8


def test_the_limit_grows_by_one_per_window_of_successes_while_requests_wait() -> None:
    limit = AdaptiveLimit(8)
    limit.throttled(limit.epoch)
    limit.throttled(limit.epoch)
    assert limit.limit == 2
    epoch = limit.epoch
    limit.succeeded(epoch, constrained=False)  # nothing waits: the limit is not the bottleneck
    limit.succeeded(epoch - 1, constrained=True)  # sent before the last decrease: no evidence about 2
    limit.succeeded(epoch, constrained=True)
    assert limit.limit == 2
    limit.succeeded(epoch, constrained=True)  # 2 successes at limit 2: one more
    assert limit.limit == 3
    for _ in range(3 + 4 + 5 + 6 + 7):
        limit.succeeded(epoch, constrained=True)
    assert limit.limit == 8  # never above the configured maximum
    assert (limit.increases, limit.lowest, limit.highest) == (6, 2, 8)


def test_a_fixed_limit_never_moves_but_counts_429s() -> None:
    limit = AdaptiveLimit(4, adaptive=False)
    for _ in range(3):
        limit.throttled(limit.epoch)
    limit.succeeded(limit.epoch, constrained=True)
    assert limit.record() | {} == {
        "policy": "fixed",
        "maximum": 4,
        "min": 4,
        "max": 4,
        "final": 4,
        "decreases": 0,
        "increases": 0,
        "throttled": 3,
    }
    with pytest.raises(ValueError, match="at least 1"):
        AdaptiveLimit(0)


# --- AsyncGate + acall_with_retries against an in-process rate-limited endpoint -------------------------------------
class RateLimited:
    """An endpoint as a coroutine: more than ``k`` attempts in flight (this one included) are answered HTTP 429.
    Each attempt takes a few event-loop turns, so attempts overlap exactly as asyncio schedules them. ``starts``
    holds, per attempt, the attempts in flight as it started and the client's limit at that moment."""

    def __init__(self, k: int, limit: AdaptiveLimit) -> None:
        self.k = k
        self.limit = limit
        self.in_flight = 0
        self.throttled = 0
        self.starts: list[tuple[int, int, int]] = []  # (in flight, client limit, decreases so far)

    async def attempt(self) -> str:
        self.in_flight += 1
        self.starts.append((self.in_flight, self.limit.limit, self.limit.decreases))
        over = self.in_flight > self.k
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            if over:
                self.throttled += 1
                raise throttle()
            return "ok"
        finally:
            self.in_flight -= 1


def drive(limit: AdaptiveLimit, server: RateLimited, n: int) -> list[Success[str] | Failure]:
    async def main() -> list[Success[str] | Failure]:
        gate = AsyncGate(limit)
        halt = asyncio.Event()
        runs = [acall_with_retries(server.attempt, run_of(max_retries=100), gate, halt) for _ in range(n)]
        return list(await asyncio.gather(*runs))

    return asyncio.run(main())


def test_aimd_settles_near_the_servers_limit_and_every_request_succeeds() -> None:
    # Guards issue 10.8: a server that refuses more than K concurrent requests makes the client lower its limit
    # to about K; after the first decrease no attempt starts with more in flight than the limit the client has.
    limit = AdaptiveLimit(32)
    server = RateLimited(4, limit)
    outcomes = drive(limit, server, 60)
    assert all(isinstance(o, Success) and o.value == "ok" for o in outcomes)
    assert limit.decreases >= 3 and limit.lowest <= 4  # 32 -> 16 -> 8 -> 4 (or lower)
    assert limit.limit <= 2 * 4
    after_decrease = [(in_flight, cap) for in_flight, cap, decreases in server.starts if decreases]
    assert after_decrease and all(in_flight <= cap for in_flight, cap in after_decrease)
    assert max(in_flight for in_flight, _ in after_decrease[-20:]) <= 4 + 1  # settled near K
    # A fixed limit keeps sending 32 at once: far more refusals for the same work.
    fixed = AdaptiveLimit(32, adaptive=False)
    flooded = RateLimited(4, fixed)
    assert all(isinstance(o, Success) for o in drive(fixed, flooded, 60))
    assert fixed.decreases == 0 and fixed.limit == 32
    assert flooded.throttled > 2 * server.throttled
    assert limit.throttles == server.throttled and fixed.throttles == flooded.throttled


def test_a_healthy_endpoint_never_lowers_the_limit() -> None:
    limit = AdaptiveLimit(8)
    server = RateLimited(10**6, limit)
    assert all(isinstance(o, Success) for o in drive(limit, server, 50))
    assert (limit.decreases, limit.throttles, limit.lowest, limit.limit) == (0, 0, 8, 8)
    assert max(in_flight for in_flight, _, _ in server.starts) == 8  # the full window was used


def test_a_credentials_refusal_halts_queued_attempts() -> None:
    # Guards the judge's 401/403 rule through the shared loop: the refused request sets the halt while it holds its
    # slot, so the queued request is never sent; a plain 400 stops only its own request.
    async def main(status: int) -> tuple[list[Success[str] | Failure], int]:
        calls = 0

        async def attempt() -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0)
            raise Fatal(f"HTTP {status}", status)

        gate = AsyncGate(AdaptiveLimit(1))
        halt = asyncio.Event()
        outcomes = await asyncio.gather(*(acall_with_retries(attempt, run_of(), gate, halt) for _ in range(3)))
        return list(outcomes), calls

    for status in (401, 403):
        outcomes, calls = asyncio.run(main(status))
        assert calls == 1
        assert outcomes == [
            Failure("rejected", f"HTTP {status}", 1, status),
            Failure("halted", "", 0),
            Failure("halted", "", 0),
        ]
    outcomes, calls = asyncio.run(main(400))
    assert calls == 3 and all(isinstance(o, Failure) and o.kind == "rejected" for o in outcomes)


def test_a_cancelled_waiter_does_not_keep_its_turn() -> None:
    # A batch that is cancelled while prompts queue (a refusal elsewhere) must not leave stale turns that block the
    # gate for the next caller.
    async def main() -> int:
        gate = AsyncGate(AdaptiveLimit(1))
        await gate.acquire()
        waiter = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        gate.release()
        await asyncio.wait_for(gate.acquire(), timeout=5)  # would hang with a stale turn in the queue
        return gate.active

    assert asyncio.run(main()) == 1
