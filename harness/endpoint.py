"""What the OpenAI-compatible clients share: error classification, the retry loop, an adaptive in-flight limit and
response-body parsing.

Two clients talk to OpenAI-compatible chat-completions endpoints — :class:`medbench.models.openai_compat.
OpenAICompatModel` (threads; a request that fails for good raises) and :class:`medbench.judges.client.JudgeClient`
(asyncio; a request that fails for good becomes a failure record). Both retry through this module:

* :class:`Retryable` / :class:`Fatal` — how one failed attempt is classified;
* :func:`translate_openai_error` / :func:`status_error` — an ``openai`` exception turned into one of those
  (401/403 fatal with a hint about which key was sent; 408, 429 and 5xx retryable with the server's
  ``Retry-After``; any other 4xx fatal; timeouts and connection errors retryable);
* :func:`backoff_delay` — exponential backoff with jitter, or the server's ``Retry-After`` plus a little jitter;
* :class:`RetryPolicy`, :class:`RetryRun`, :func:`call_with_retries` (blocking) and :func:`acall_with_retries`
  (asyncio) — the one retry loop: attempt counting, classification of each outcome (success / retry after a delay /
  fail for good), backoff, and the :class:`Failure` record each client turns into its own error;
* :class:`AdaptiveLimit` / :class:`AsyncGate` — how many attempts may be in flight: AIMD (halved on HTTP 429, one
  more after a full window of successes while requests queue), or fixed;
* :func:`parse_chat_body` — the completion text and server-reported model from a raw response body;
* :func:`endpoint_origin` / :func:`endpoint_scope` — a base URL normalised, to decide where a key may be sent
  (scheme, host, port) and what identifies an endpoint in a cache key (plus the path).

Every text that could reach an error message or a log line passes through the caller's ``scrub`` function, which
removes the API key (a proxy may echo the ``Authorization`` header). The ``openai`` package is imported lazily.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, NamedTuple, TypeVar
from urllib.parse import urlsplit

#: Sent when no key is configured: vLLM/SGLang without ``--api-key`` accept anything.
PLACEHOLDER_KEY = "EMPTY"
#: Upper bound on a server-requested ``Retry-After`` wait, so a bad header cannot stall a run for hours.
MAX_RETRY_AFTER_S = 300.0

Scrub = Callable[[str], str]

#: The port a scheme implies when a URL names none: ``https://h`` and ``https://h:443`` are one endpoint.
DEFAULT_PORTS = {"http": 80, "https": 443}


class Origin(NamedTuple):
    """Where requests go: lower-case scheme and host, and the port (the scheme's default made explicit)."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal keeps its brackets
        return f"{self.scheme}://{host}:{self.port}"


def endpoint_origin(url: str) -> Origin:
    """The :class:`Origin` of an ``http(s)`` base URL; user info, path, query and fragment play no part.

    Raises ``ValueError`` (saying why, never echoing the URL, which may hold a credential) for another scheme, a
    missing host or a bad port."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"the scheme must be http or https, not {scheme or 'missing'!r}")
    host = (parts.hostname or "").lower()  # urlsplit drops user info and IPv6 brackets here
    if not host:
        raise ValueError("the URL has no host")
    port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    return Origin(scheme, host, DEFAULT_PORTS[scheme] if port is None else port)


def endpoint_scope(url: str) -> str:
    """``scheme://host:port/path`` of a base URL: :func:`endpoint_origin` plus the path without trailing slashes;
    no user info, query or fragment. Two base URLs with the same scope reach the same server and API, so this
    (not the host alone: two servers on one host differ by port) identifies an endpoint in a cache key."""
    return str(endpoint_origin(url)) + urlsplit(url.strip()).path.rstrip("/")


class Retryable(Exception):
    """One failed attempt that is worth retrying; ``retry_after`` is the server's requested wait, if any, and
    ``status`` the HTTP status, if there was one (429 tells an adaptive limit to back off)."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class Fatal(Exception):
    """One failed attempt that must not be retried; ``status`` is the HTTP status, if there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def error_detail(exc: Any, limit: int) -> str:
    """The server's error message from an openai ``APIStatusError`` (else its body text), whitespace-collapsed and
    cut to ``limit`` characters. Callers scrub secrets from it."""
    body = getattr(exc, "body", None)
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
    if message is None:
        try:
            message = exc.response.text
        except Exception:
            message = body
    text = " ".join(str(message or "(empty body)").split())
    return text[:limit] + "..." if len(text) > limit else text


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or HTTP date), else None.

    Negative waits become 0 and long ones :data:`MAX_RETRY_AFTER_S`."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return min(max(float(raw_ms) / 1000.0, 0.0), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def backoff_delay(attempt: int, retry_after: float | None, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (0-based).

    With a server-requested ``retry_after``: that plus up to ``min(base, 1)`` s of jitter. Otherwise
    ``min(cap, base * 2**attempt)`` scaled by a random factor in [0.5, 1]."""
    if retry_after is not None:
        return retry_after + random.uniform(0.0, min(base, 1.0))
    return min(cap, base * (2**attempt)) * random.uniform(0.5, 1.0)


def status_error(
    exc: Any, *, key_is_placeholder: bool, key_env: str, scrub: Scrub, detail_chars: int
) -> Retryable | Fatal:
    """Classify an HTTP error response (an openai ``APIStatusError``, or anything with ``status_code`` and
    optionally ``body`` / ``response``).

    401/403 are fatal and say which key was sent (never the key itself); 408, 429 and 5xx are retryable and carry
    the server's ``Retry-After``; any other status is fatal. The server's message is scrubbed and cut to
    ``detail_chars`` characters."""
    status = int(exc.status_code)
    if status in (401, 403):
        source = "no key (placeholder sent)" if key_is_placeholder else f"the key in ${key_env}"
        return Fatal(f"HTTP {status} (authentication/permission denied; sent {source})", status)
    detail = scrub(error_detail(exc, detail_chars))
    if status in (408, 429) or status >= 500:
        headers = getattr(getattr(exc, "response", None), "headers", None)
        return Retryable(f"HTTP {status}: {detail}", parse_retry_after(headers), status)
    return Fatal(f"HTTP {status}: {detail}", status)


def translate_openai_error(
    exc: BaseException,
    *,
    timeout: float,
    scrub: Scrub,
    key_is_placeholder: bool,
    key_env: str,
    detail_chars: int,
) -> Retryable | Fatal | None:
    """The :class:`Retryable` / :class:`Fatal` for an exception raised by an ``openai`` client call, or None when
    ``exc`` is none of ``APITimeoutError``, ``APIConnectionError`` and ``APIStatusError`` (the caller decides)."""
    import openai

    if isinstance(exc, openai.APITimeoutError):  # a subclass of APIConnectionError: test it first
        return Retryable(f"timed out after {timeout:g}s")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        return Retryable(scrub(f"connection error ({detail})"))
    if isinstance(exc, openai.APIStatusError):
        return status_error(
            exc, key_is_placeholder=key_is_placeholder, key_env=key_env, scrub=scrub, detail_chars=detail_chars
        )
    return None


@dataclass(frozen=True)
class ErrorContext:
    """What classifying a client's failed calls needs: its timeout, its key (kept only to scrub it out of any
    text that could reach an error or a log; ``None`` when the placeholder was sent; never in ``repr``), the key
    variable's name and how much of a server's error message to keep."""

    timeout: float
    secret: str | None = field(repr=False)
    key_env: str
    detail_chars: int

    def scrub(self, text: str) -> str:
        """``text`` with the key replaced by ``***``."""
        return text.replace(self.secret, "***") if self.secret else text

    def translate(self, exc: BaseException) -> BaseException:
        """:func:`translate_openai_error` for this client; ``exc`` itself when it is not an ``openai`` error."""
        translated = translate_openai_error(
            exc,
            timeout=self.timeout,
            scrub=self.scrub,
            key_is_placeholder=self.secret is None,
            key_env=self.key_env,
            detail_chars=self.detail_chars,
        )
        return exc if translated is None else translated


def parse_chat_body(text: str, scrub: Scrub, *, allow_blank: bool) -> tuple[str, str | None]:
    """``(content, server-reported model or None)`` from a raw chat-completions response body.

    Raises :class:`Retryable` when the body is not JSON, not an object, has no choices, or its
    ``choices[0].message.content`` is not a string. With ``allow_blank=False`` a blank body and blank content are
    retryable too."""
    if not allow_blank and not text.strip():
        raise Retryable("blank response body")
    try:
        body = json.loads(text)
    except ValueError:
        snippet = " ".join(text.split())[:120]
        raise Retryable(scrub(f"malformed response: not JSON ({snippet!r})")) from None
    if not isinstance(body, dict):
        raise Retryable("malformed response: body is not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise Retryable("malformed response: no choices")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise Retryable(f"malformed response: choices[0].message.content is {type(content).__name__}")
    if not allow_blank and not content.strip():
        raise Retryable("blank completion (empty message content)")
    served = body.get("model")
    return content, served if isinstance(served, str) and served else None


# --- the retry loop both clients use ----------------------------------------------------------------------------
T = TypeVar("T")

#: HTTP statuses that say the endpoint refused the credentials: every other request would be refused too.
CREDENTIAL_STATUSES = frozenset({401, 403})


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries: at most ``max_retries`` retries after the first attempt, waiting
    :func:`backoff_delay` with ``backoff_base`` / ``backoff_max`` (or the server's ``Retry-After``) between them."""

    max_retries: int
    backoff_base: float
    backoff_max: float

    @property
    def attempts(self) -> int:
        """The most attempts one request gets."""
        return self.max_retries + 1


@dataclass(frozen=True)
class Success(Generic[T]):
    """A request that succeeded: the attempt's result and how many attempts it took."""

    value: T
    attempts: int


FailureKind = Literal["rejected", "exhausted", "unexpected", "halted"]


@dataclass(frozen=True)
class Failure:
    """A request that failed for good, for the client to raise or record.

    ``kind``: ``rejected`` (a :class:`Fatal` answer; ``status`` is its HTTP status), ``exhausted`` (every attempt
    failed retryably; ``detail`` is the last error), ``unexpected`` (an exception that is neither, from the client
    library; not retried) or ``halted`` (the batch was stopped before the next attempt). ``detail`` is scrubbed."""

    kind: FailureKind
    detail: str
    attempts: int
    status: int | None = None

    def reason(self, endpoint: str) -> str:
        """The failure in words, naming ``endpoint`` (both clients' error texts are built from this)."""
        if self.kind == "rejected":
            return f"{endpoint} rejected the request: {self.detail}"
        if self.kind == "exhausted":
            return f"{endpoint} failed after {self.attempts} attempt(s); last error: {self.detail}"
        if self.kind == "unexpected":
            return f"{endpoint}: unexpected {self.detail}"
        return f"{endpoint}: not sent: the batch was stopped"


class RetryRun:
    """The attempts of one request: the state machine both retry loops drive. After each attempt the loop calls
    :meth:`succeeded` or :meth:`failed`; :meth:`failed` classifies the exception (through the client's
    :class:`ErrorContext`) and answers with the seconds to wait before the next attempt, or the :class:`Failure`.
    Retries are logged at debug level on the client's ``log``, prefixed with ``label``."""

    def __init__(self, policy: RetryPolicy, errors: ErrorContext, log: logging.Logger, label: str) -> None:
        self.policy = policy
        self.errors = errors
        self.log = log
        self.label = label
        self.attempts = 0
        #: Whether the last failed attempt was an HTTP 429 (the server asks for less load).
        self.throttled = False

    def succeeded(self, value: T) -> Success[T]:
        """Count the attempt that returned ``value``."""
        self.attempts += 1
        self.throttled = False
        return Success(value, self.attempts)

    def failed(self, exc: BaseException) -> float | Failure:
        """Count the attempt that raised ``exc``: the delay before the next attempt, or the request's failure."""
        self.attempts += 1
        error = self.errors.translate(exc)
        self.throttled = isinstance(error, Retryable) and error.status == 429
        if isinstance(error, Fatal):
            return Failure("rejected", str(error), self.attempts, error.status)
        if not isinstance(error, Retryable):
            detail = f"{type(error).__name__}: {self.errors.scrub(str(error))}"
            return Failure("unexpected", detail, self.attempts)
        if self.attempts >= self.policy.attempts:
            return Failure("exhausted", str(error), self.attempts)
        delay = backoff_delay(self.attempts - 1, error.retry_after, self.policy.backoff_base, self.policy.backoff_max)
        self.log.debug(
            "%s: attempt %d/%d failed (%s); retrying in %.2fs",
            self.label,
            self.attempts,
            self.policy.attempts,
            error,
            delay,
        )
        return delay

    def halted(self) -> Failure:
        """The request stops because its batch was stopped (another request failed for good)."""
        return Failure("halted", "", self.attempts)


def call_with_retries(fn: Callable[[], T], run: RetryRun, abort: threading.Event) -> Success[T] | Failure:
    """Attempt ``fn()`` (blocking) until it succeeds or ``run`` says the request failed for good. ``abort`` (set by
    the batch when another request fails) is checked before every attempt and ends a retry wait at once: the
    request is then ``halted``."""
    while not abort.is_set():
        try:
            return run.succeeded(fn())
        except Exception as exc:  # classified by the run: retryable, fatal or unexpected
            step = run.failed(exc)
        if isinstance(step, Failure):
            return step
        if abort.wait(step):
            break
    return run.halted()


async def acall_with_retries(
    fn: Callable[[], Awaitable[T]],
    run: RetryRun,
    gate: AsyncGate,
    halt: asyncio.Event,
    halt_statuses: frozenset[int] = CREDENTIAL_STATUSES,
) -> Success[T] | Failure:
    """:func:`call_with_retries` in asyncio, each attempt holding a slot of ``gate`` (not the waits between
    attempts: a request backing off leaves its slot to another). The attempt's outcome adjusts the gate's
    :class:`AdaptiveLimit` (an HTTP 429 lowers it). A request rejected with a status in ``halt_statuses`` sets
    ``halt`` while it still holds its slot, so no attempt starts after it; attempts that find ``halt`` set are not
    sent (``halted``)."""
    while True:
        ticket = await gate.acquire()
        try:
            if halt.is_set():
                return run.halted()
            try:
                value = await fn()
            except Exception as exc:  # classified by the run: retryable, fatal or unexpected
                step = run.failed(exc)
            else:
                gate.succeeded(ticket)
                return run.succeeded(value)
            if run.throttled:
                gate.throttled(ticket)
            if isinstance(step, Failure) and step.status in halt_statuses:
                halt.set()
        finally:
            gate.release()
        if isinstance(step, Failure):
            return step
        await asyncio.sleep(step)


# --- how many attempts may be in flight ---------------------------------------------------------------------------
class AdaptiveLimit:
    """A limit on attempts in flight, at most ``maximum`` (and where it starts). With ``adaptive`` it follows AIMD:

    * multiplicative decrease — an HTTP 429 halves it (never below 1), once per *epoch*: the 429s of attempts sent
      before the last decrease answer load that decrease already shed, so a burst of them halves it once, not once
      each;
    * additive increase — after ``limit`` successes of attempts sent under the current limit (about one round trip
      of a full window), while requests wait for a slot, it grows by one (never above ``maximum``); when nothing
      waits the limit is not what holds requests back, so it does not grow.

    Without ``adaptive`` the limit stays at ``maximum`` (429s are still counted). What it did is :meth:`record`.
    Plain counters: one event loop (or one thread) drives it at a time; it outlives batches, so what one batch
    learnt about the server holds for the next."""

    def __init__(self, maximum: int, *, adaptive: bool = True) -> None:
        if maximum < 1:
            raise ValueError(f"the in-flight limit must be at least 1 (got {maximum})")
        self.maximum = maximum
        self.adaptive = adaptive
        self.limit = maximum
        #: Bumped by every decrease; an attempt is tagged with the epoch it was sent in.
        self.epoch = 0
        self.lowest = maximum
        self.highest = maximum
        self.decreases = 0
        self.increases = 0
        self.throttles = 0
        self._credit = 0  # successes towards the next increase

    def throttled(self, epoch: int) -> None:
        """An attempt sent in ``epoch`` was answered HTTP 429."""
        self.throttles += 1
        if not self.adaptive or epoch != self.epoch:
            return
        self.epoch += 1
        self._credit = 0
        lowered = max(1, self.limit // 2)
        if lowered < self.limit:
            self.limit = lowered
            self.decreases += 1
            self.lowest = min(self.lowest, lowered)

    def succeeded(self, epoch: int, *, constrained: bool) -> None:
        """An attempt sent in ``epoch`` succeeded; ``constrained``: requests were waiting for a slot."""
        if not self.adaptive or not constrained or epoch != self.epoch or self.limit >= self.maximum:
            return
        self._credit += 1
        if self._credit >= self.limit:
            self._credit = 0
            self.limit += 1
            self.increases += 1
            self.highest = max(self.highest, self.limit)

    def record(self) -> dict[str, Any]:
        """What the limit did so far, for the run record: policy, configured maximum, lowest / highest / current
        limit, decreases, increases and the HTTP 429 answers seen."""
        return {
            "policy": "aimd" if self.adaptive else "fixed",
            "maximum": self.maximum,
            "min": self.lowest,
            "max": self.highest,
            "final": self.limit,
            "decreases": self.decreases,
            "increases": self.increases,
            "throttled": self.throttles,
        }


class AsyncGate:
    """Admits asyncio attempts while fewer than ``limit.limit`` are in flight, in arrival order. The limit is read at
    every admission, so after a decrease no attempt starts until enough of those in flight have finished. One gate
    per event loop (one batch); the :class:`AdaptiveLimit` it reads may outlive it."""

    def __init__(self, limit: AdaptiveLimit) -> None:
        self.limit = limit
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._woken = 0  # waiters told to go whose tasks have not run yet: their slots are spoken for

    def _has_room(self) -> bool:
        return self.active + self._woken < self.limit.limit

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch the attempt is sent in (for :meth:`succeeded` / :meth:`throttled`)."""
        if self._waiters or not self._has_room():
            await self._wait_turn()
        self.active += 1
        return self.limit.epoch

    async def _wait_turn(self) -> None:
        loop = asyncio.get_running_loop()
        first = False
        while True:
            turn: asyncio.Future[None] = loop.create_future()
            if first:
                self._waiters.appendleft(turn)
            else:
                self._waiters.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():  # woken, then cancelled before it ran: pass the slot on
                    self._woken -= 1
                    self._wake()
                elif turn in self._waiters:  # not yet skipped by a wake-up
                    self._waiters.remove(turn)
                raise
            self._woken -= 1
            if self.active < self.limit.limit:
                return
            first = True  # the limit fell between the wake-up and now: wait again, at the front

    def _wake(self) -> None:
        while self._waiters and self._has_room():
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                self._woken += 1

    def release(self) -> None:
        """An attempt finished (whatever its outcome): its slot goes to the next waiter."""
        self.active -= 1
        self._wake()

    def succeeded(self, epoch: int) -> None:
        """An attempt sent in ``epoch`` succeeded (the limit may grow: wake whoever now fits)."""
        self.limit.succeeded(epoch, constrained=bool(self._waiters))
        self._wake()

    def throttled(self, epoch: int) -> None:
        """An attempt sent in ``epoch`` was answered HTTP 429."""
        self.limit.throttled(epoch)
