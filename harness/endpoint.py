"""What the OpenAI-compatible clients share: error classification, retry delays and response-body parsing.

Two clients talk to OpenAI-compatible chat-completions endpoints — :class:`medbench.models.openai_compat.
OpenAICompatModel` (threads; a request that fails for good raises) and :class:`medbench.judges.client.JudgeClient`
(asyncio; a request that fails for good becomes a failure record). Each keeps its own retry loop; this module holds
the pieces of one attempt that they have in common:

* :class:`Retryable` / :class:`Fatal` — how one failed attempt is classified;
* :func:`translate_openai_error` / :func:`status_error` — an ``openai`` exception turned into one of those
  (401/403 fatal with a hint about which key was sent; 408, 429 and 5xx retryable with the server's
  ``Retry-After``; any other 4xx fatal; timeouts and connection errors retryable);
* :func:`backoff_delay` — exponential backoff with jitter, or the server's ``Retry-After`` plus a little jitter;
* :func:`parse_chat_body` — the completion text and server-reported model from a raw response body;
* :func:`endpoint_origin` / :func:`endpoint_scope` — a base URL normalised, to decide where a key may be sent
  (scheme, host, port) and what identifies an endpoint in a cache key (plus the path).

Every text that could reach an error message or a log line passes through the caller's ``scrub`` function, which
removes the API key (a proxy may echo the ``Authorization`` header). The ``openai`` package is imported lazily.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
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
    """One failed attempt that is worth retrying; ``retry_after`` is the server's requested wait, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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
        return Retryable(f"HTTP {status}: {detail}", parse_retry_after(headers))
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
