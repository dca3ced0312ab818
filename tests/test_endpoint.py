"""Direct tests of the pure helpers in :mod:`medbench.endpoint` (the clients' end-to-end behaviour is tested in
tests/models/test_openai_compat.py and tests/judges)."""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import pytest

from medbench.endpoint import (
    MAX_RETRY_AFTER_S,
    Fatal,
    Origin,
    Retryable,
    backoff_delay,
    endpoint_origin,
    endpoint_scope,
    error_detail,
    parse_chat_body,
    parse_retry_after,
    status_error,
    translate_openai_error,
)

SECRET = "sk-test-secret-0123456789"


def _scrub(text: str) -> str:
    return text.replace(SECRET, "***")


# --- backoff_delay -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attempt", range(8))
def test_backoff_delay_bounds(attempt: int) -> None:
    full = min(10.0, 0.5 * 2**attempt)
    for _ in range(50):
        delay = backoff_delay(attempt, None, 0.5, 10.0)
        assert full * 0.5 <= delay <= full


def test_backoff_delay_retry_after_takes_precedence() -> None:
    for _ in range(50):
        assert 7.0 <= backoff_delay(0, 7.0, 2.0, 1.0) <= 8.0  # jitter at most min(base, 1) s; cap ignored
        assert 7.0 <= backoff_delay(5, 7.0, 0.25, 60.0) <= 7.25
    assert backoff_delay(3, None, 0.0, 60.0) == 0.0
    assert backoff_delay(3, 2.0, 0.0, 60.0) == 2.0


# --- parse_retry_after ---------------------------------------------------------------------------------------
def test_parse_retry_after_forms() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after": "-4"}) == 0.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    # retry-after-ms wins over retry-after; a bad one falls back to retry-after.
    assert parse_retry_after({"retry-after-ms": "100", "retry-after": "9"}) == 0.1
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = parse_retry_after({"retry-after": when})
    assert seconds is not None and 25.0 <= seconds <= 31.0
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0


def test_parse_retry_after_capped_and_garbage() -> None:
    assert parse_retry_after({"retry-after": "86400"}) == MAX_RETRY_AFTER_S
    assert parse_retry_after({"retry-after-ms": "99999999"}) == MAX_RETRY_AFTER_S
    far = email.utils.formatdate(time.time() + 10 * 86400, usegmt=True)
    assert parse_retry_after({"retry-after": far}) == MAX_RETRY_AFTER_S
    assert parse_retry_after({"retry-after": "whenever"}) is None
    assert parse_retry_after({"retry-after": ""}) is None


# --- parse_chat_body -----------------------------------------------------------------------------------------
def _body(content: Any = "hello", **extra: Any) -> str:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}], **extra})


def test_parse_chat_body_ok() -> None:
    assert parse_chat_body(_body("hi", model="served-1"), _scrub, allow_blank=False) == ("hi", "served-1")
    assert parse_chat_body(_body("hi"), _scrub, allow_blank=True) == ("hi", None)
    assert parse_chat_body(_body("hi", model=""), _scrub, allow_blank=True) == ("hi", None)
    assert parse_chat_body(_body("hi", model=3), _scrub, allow_blank=True) == ("hi", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<html>bad gateway</html>", "malformed response: not JSON ('<html>bad gateway</html>')"),
        ("[1, 2]", "malformed response: body is not a JSON object"),
        ('{"choices": []}', "malformed response: no choices"),
        ('{"object": "chat.completion"}', "malformed response: no choices"),
        ('{"choices": ["x"]}', "malformed response: no choices"),
        (_body(None), "malformed response: choices[0].message.content is NoneType"),
        ('{"choices": [{"text": "legacy"}]}', "malformed response: choices[0].message.content is NoneType"),
        (_body(["part"]), "malformed response: choices[0].message.content is list"),
    ],
)
@pytest.mark.parametrize("allow_blank", [True, False])
def test_parse_chat_body_malformed(text: str, message: str, allow_blank: bool) -> None:
    with pytest.raises(Retryable) as info:
        parse_chat_body(text, _scrub, allow_blank=allow_blank)
    assert str(info.value) == message
    assert info.value.retry_after is None


def test_parse_chat_body_blank() -> None:
    # The model adapter accepts an empty completion; the judge retries it.
    assert parse_chat_body(_body(""), _scrub, allow_blank=True) == ("", None)
    assert parse_chat_body(_body("  \n"), _scrub, allow_blank=True) == ("  \n", None)
    with pytest.raises(Retryable, match=r"^blank completion \(empty message content\)$"):
        parse_chat_body(_body("  \n"), _scrub, allow_blank=False)
    with pytest.raises(Retryable, match=r"^blank response body$"):
        parse_chat_body(" \n", _scrub, allow_blank=False)
    with pytest.raises(Retryable, match=r"^malformed response: not JSON \(''\)$"):
        parse_chat_body(" \n", _scrub, allow_blank=True)


def test_parse_chat_body_scrubs_snippet() -> None:
    with pytest.raises(Retryable) as info:
        parse_chat_body(f"echo: Bearer {SECRET}", _scrub, allow_blank=True)
    assert SECRET not in str(info.value)
    assert "Bearer ***" in str(info.value)


# --- status_error / error_detail -----------------------------------------------------------------------------
class _Response:
    def __init__(self, text: str, headers: dict[str, str]) -> None:
        self.text = text
        self.headers = headers


class _StatusError(Exception):
    """Just the attributes of an openai ``APIStatusError`` that the helpers read."""

    def __init__(self, status: int, body: Any = None, text: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(f"status {status}")
        self.status_code = status
        self.body = body
        self.response = _Response(text, headers or {})


def _classify(exc: Any, *, placeholder: bool = False, detail_chars: int = 500) -> Retryable | Fatal:
    return status_error(exc, key_is_placeholder=placeholder, key_env="MY_KEY", scrub=_scrub, detail_chars=detail_chars)


@pytest.mark.parametrize("status", [401, 403])
def test_status_error_auth_is_fatal_and_names_the_key_variable(status: int) -> None:
    exc = _StatusError(status, body={"error": {"message": f"bad key {SECRET}"}})
    err = _classify(exc)
    assert isinstance(err, Fatal) and err.status == status
    assert str(err) == f"HTTP {status} (authentication/permission denied; sent the key in $MY_KEY)"
    err = _classify(exc, placeholder=True)
    assert str(err) == f"HTTP {status} (authentication/permission denied; sent no key (placeholder sent))"
    assert SECRET not in str(err)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 599])
def test_status_error_retryable_with_retry_after(status: int) -> None:
    exc = _StatusError(status, body={"error": {"message": "slow  down\n please"}}, headers={"retry-after": "4"})
    err = _classify(exc)
    assert isinstance(err, Retryable)
    assert str(err) == f"HTTP {status}: slow down please"
    assert err.retry_after == 4.0
    without = _classify(_StatusError(status))
    assert isinstance(without, Retryable) and without.retry_after is None


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422])
def test_status_error_other_4xx_fatal(status: int) -> None:
    err = _classify(_StatusError(status, body={"message": f"nope {SECRET}"}))
    assert isinstance(err, Fatal) and err.status == status
    assert str(err) == f"HTTP {status}: nope ***"


def test_status_error_detail_sources_and_cut() -> None:
    # A non-dict body (openai's raw text for a non-JSON error) is read from the response text.
    assert str(_classify(_StatusError(400, body="plain body", text="plain body"))) == "HTTP 400: plain body"
    assert str(_classify(_StatusError(400, body=None, text="from response"))) == "HTTP 400: from response"
    assert str(_classify(_StatusError(400, body=None, text=""))) == "HTTP 400: (empty body)"
    assert (
        str(_classify(_StatusError(400, body={"error": "x" * 50}), detail_chars=10)) == "HTTP 400: " + "x" * 10 + "..."
    )
    assert error_detail(_StatusError(400, body={"error": {"code": 1}}, text="raw text"), 100) == "raw text"


# --- translate_openai_error ----------------------------------------------------------------------------------
def test_translate_openai_error() -> None:
    openai = pytest.importorskip("openai")
    # The HTTP library openai builds its requests/responses with (httpx, or httpx2 in newer releases).
    httpx = getattr(openai._exceptions, "httpx2", None) or getattr(openai._exceptions, "httpx", None)
    if httpx is None:
        pytest.skip("cannot find the HTTP library of this openai version")
    kwargs: dict[str, Any] = {
        "timeout": 2.5,
        "scrub": _scrub,
        "key_is_placeholder": False,
        "key_env": "MY_KEY",
        "detail_chars": 100,
    }
    request = httpx.Request("POST", "http://localhost:1/v1/chat/completions")

    err = translate_openai_error(openai.APITimeoutError(request=request), **kwargs)
    assert isinstance(err, Retryable) and str(err) == "timed out after 2.5s"

    conn = openai.APIConnectionError(request=request)
    conn.__cause__ = OSError(f"refused {SECRET}")
    err = translate_openai_error(conn, **kwargs)
    assert isinstance(err, Retryable) and str(err) == "connection error (OSError: refused ***)"

    response = httpx.Response(429, request=request, headers={"retry-after": "2"}, text='{"error": "busy"}')
    status = openai.RateLimitError("busy", response=response, body={"error": {"message": "busy"}})
    err = translate_openai_error(status, **kwargs)
    assert isinstance(err, Retryable) and str(err) == "HTTP 429: busy" and err.retry_after == 2.0

    assert translate_openai_error(ValueError("other"), **kwargs) is None


# --- endpoint_origin / endpoint_scope ---------------------------------------------------------------------------
# These decide where a preset's key may go and which judge a cached judgement belongs to (medbench issue 9: the
# judge cache was keyed by host name alone, so a judge on another port of 127.0.0.1 got the first one's scores).
@pytest.mark.parametrize(
    ("url", "scope"),
    [
        ("https://api.deepseek.com", "https://api.deepseek.com:443"),
        ("HTTPS://API.DeepSeek.COM:443/", "https://api.deepseek.com:443"),
        ("https://user:pw@api.deepseek.com/v1/?token=t#frag", "https://api.deepseek.com:443/v1"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1//", "http://127.0.0.1:8000/v1"),
        ("http://localhost/V1", "http://localhost:80/V1"),  # the path keeps its case
        ("http://[::1]:8000/v1", "http://[::1]:8000/v1"),
        ("  http://127.0.0.1:80  ", "http://127.0.0.1:80"),
    ],
)
def test_endpoint_scope_normalises(url: str, scope: str) -> None:
    assert endpoint_scope(url) == scope


def test_endpoint_scope_tells_ports_and_paths_apart() -> None:
    scopes = {
        endpoint_scope(u)
        for u in (
            "http://127.0.0.1:8000/v1",
            "http://127.0.0.1:8001/v1",
            "http://127.0.0.1:8000/v2",
            "https://127.0.0.1:8000/v1",
        )
    }
    assert len(scopes) == 4


def test_endpoint_origin() -> None:
    assert endpoint_origin("https://api.deepseek.com/v1") == Origin("https", "api.deepseek.com", 443)
    assert endpoint_origin("https://API.deepseek.com:443") == endpoint_origin("https://api.deepseek.com")
    assert endpoint_origin("http://api.deepseek.com") == Origin("http", "api.deepseek.com", 80)
    assert str(Origin("http", "::1", 8000)) == "http://[::1]:8000"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("127.0.0.1:8000/v1", "scheme"),
        ("localhost:8000/v1", "scheme"),
        ("ftp://example.org", "scheme"),
        ("http:///v1", "no host"),
        ("http://user:s3cret@host:notaport/v1", "ort"),
    ],
)
def test_endpoint_origin_rejects_unusable_urls_without_echoing_them(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        endpoint_origin(url)
    assert "s3cret" not in str(info.value)
