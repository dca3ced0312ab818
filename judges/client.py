"""An OpenAI-compatible judge client: bounded concurrency, temperature 0, retries with backoff — and failures that
stay failures.

``JudgeConfig("deepseek")`` targets DeepSeek's OpenAI-compatible endpoint (``https://api.deepseek.com``, model
``deepseek-chat``, key from ``$DEEPSEEK_API_KEY``); ``base_url``/``model``/``api_key_env`` override it, so a local
vLLM/SGLang server or any other provider works (``JudgeConfig("local", base_url=..., model=...)``).

Which key is sent (:func:`choose_key_env`): the variable named with ``api_key_env`` (``--judge-api-key-env``) when
one is named; else a preset's own variable, but only when the base URL points at the preset's own host (same
scheme, host and port), so ``--judge deepseek --judge-base-url http://127.0.0.1:8000/v1`` never sends
``$DEEPSEEK_API_KEY`` to the local server; else no key at all (a fixed placeholder, which vLLM/SGLang without
``--api-key`` accept). The run record says which variable was used, or none, and why.

:meth:`JudgeClient.complete_many` sends every prompt as one user message with ``temperature=0``. At most
``concurrency`` attempts are in flight, fewer while the server rate-limits: the in-flight limit is adaptive (AIMD,
:class:`~medbench.endpoint.AdaptiveLimit`): an HTTP 429 halves it (never below 1), and after a full window of
successes while prompts wait it grows by one again (never above ``concurrency``); ``adaptive=False`` keeps it fixed.
What it did (lowest / highest / final limit, decreases) is in :meth:`JudgeClient.describe`. A request waiting to
retry gives its slot to another. Retried (the loop shared with the ``openai:`` model adapter,
:func:`medbench.endpoint.acall_with_retries`: exponential backoff with jitter, ``Retry-After`` honoured, at most
``max_retries`` retries): HTTP 429, 408 and 5xx, timeouts, connection errors, and blank or malformed bodies. Any
other 4xx is not retried. A request that still fails comes back as ``JudgeReply(ok=False, error=<reason>)`` —
never a score: callers count and report failures and leave them out of means. The exception is HTTP 401/403: the
endpoint refused the credentials, every other request would be refused too, so the first one stops the whole
batch (requests in flight are cancelled, queued ones and retries never sent) with :class:`~medbench.judges.core.
JudgeCredentialsError`.

Keys are read from the environment only. They never appear in ``repr``, :meth:`JudgeClient.describe`, error texts
or log lines (error bodies are scrubbed, since a proxy may echo the ``Authorization`` header).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from medbench.endpoint import (
    CREDENTIAL_STATUSES,
    DEFAULT_PORTS,
    PLACEHOLDER_KEY,
    AdaptiveLimit,
    AsyncGate,
    ErrorContext,
    Origin,
    RetryPolicy,
    RetryRun,
    Success,
    acall_with_retries,
    endpoint_origin,
    endpoint_scope,
    parse_chat_body,
)
from medbench.errors import UsageError
from medbench.judges.core import JudgeCredentialsError, JudgeReply
from medbench.provenance import redact_url

log = logging.getLogger(__name__)

_ERROR_DETAIL_CHARS = 300

#: Requests in flight at most (``--judge-concurrency``); the adaptive limit starts here and never exceeds it.
DEFAULT_CONCURRENCY = 32

#: ``--judge <name>`` presets: base_url, model, key variable.
PRESETS: dict[str, dict[str, str]] = {
    "deepseek": {
        "base_url": "https://api.deepseek.com",
        "model": "deepseek-chat",
        "api_key_env": "DEEPSEEK_API_KEY",
    },
}


class KeyChoice(NamedTuple):
    """Which environment variable's value is sent as the key (``env``; None: the placeholder) and why."""

    env: str | None
    reason: str


def choose_key_env(name: str, base_url: str, api_key_env: str | None) -> KeyChoice:
    """The key rule (see the module docstring): a variable named by the user is always used; a preset's variable
    only for the preset's own origin (scheme, host, port: a key is bound to a server, not to a path); otherwise
    none. ``base_url`` must be a valid http(s) URL (:func:`~medbench.endpoint.endpoint_origin`)."""
    if api_key_env:
        return KeyChoice(api_key_env, "named with --judge-api-key-env")
    preset = PRESETS.get(name)
    if preset is None:
        return KeyChoice(None, "no --judge-api-key-env was given; a placeholder key is sent")
    own = endpoint_origin(preset["base_url"])
    if endpoint_origin(base_url) == own:
        return KeyChoice(preset["api_key_env"], f"the {name} preset's key, for its own host {_origin_text(own)}")
    return KeyChoice(
        None,
        f"${preset['api_key_env']} goes only to the {name} preset's own host {_origin_text(own)} and no "
        "--judge-api-key-env was given; a placeholder key is sent",
    )


def _origin_text(origin: Origin) -> str:
    """An origin as a user would write it: the scheme's default port left out."""
    return str(origin).removesuffix(f":{DEFAULT_PORTS[origin.scheme]}")


@dataclass(frozen=True)
class JudgeConfig:
    """Where and how to ask the judge. Holds the *name* of the key variable, never the key."""

    name: str = "deepseek"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = 600.0
    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_tokens: int = 1024
    #: AIMD: lower the in-flight limit on HTTP 429 and raise it again slowly (False: always ``concurrency``).
    adaptive: bool = True
    #: Filled from the preset (or the overrides) in ``__post_init__``.
    resolved: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        preset = PRESETS.get(self.name, {})
        base_url = self.base_url or preset.get("base_url")
        model = self.model or preset.get("model")
        if not base_url or not model:
            known = ", ".join(sorted(PRESETS))
            raise UsageError(
                f"judge {self.name!r}: not a preset ({known}); give both a base URL (--judge-base-url) and a "
                "model (--judge-model)"
            )
        if self.concurrency < 1:
            raise UsageError(f"judge concurrency must be at least 1 (got {self.concurrency})")
        if not self.timeout > 0:
            raise UsageError(f"judge timeout must be positive (got {self.timeout})")
        if self.max_retries < 0:
            raise UsageError(f"judge max_retries must be at least 0 (got {self.max_retries})")
        if not (self.backoff_base >= 0 and self.backoff_max >= 0):
            raise UsageError("judge backoff_base and backoff_max must be non-negative")
        if self.max_tokens < 1:
            raise UsageError(f"judge max_tokens must be at least 1 (got {self.max_tokens})")
        base_url = base_url.strip().rstrip("/")
        try:
            scope = endpoint_scope(base_url)
        except ValueError as exc:  # the message never echoes the URL: it may hold a credential
            raise UsageError(
                f"judge {self.name}: the base URL (--judge-base-url) is not usable: {exc}; expected "
                "http(s)://host[:port]/path, e.g. http://127.0.0.1:8000/v1"
            ) from None
        key = choose_key_env(self.name, base_url, self.api_key_env)
        resolved = {
            "base_url": base_url,
            "model": model,
            "scope": scope,
            "api_key_env": key.env or "",
            "api_key_source": key.reason,
        }
        object.__setattr__(self, "resolved", resolved)

    @property
    def resolved_base_url(self) -> str:
        return self.resolved["base_url"]

    @property
    def resolved_model(self) -> str:
        return self.resolved["model"]

    @property
    def resolved_key_env(self) -> str:
        """The variable whose value is sent as the key; ``""`` when none is (see :func:`choose_key_env`)."""
        return self.resolved["api_key_env"]

    @property
    def key_source(self) -> str:
        """Why :attr:`resolved_key_env` is that variable, or none, in words (for the run record and errors)."""
        return self.resolved["api_key_source"]

    @property
    def scope(self) -> str:
        """The normalised base URL (``scheme://host:port/path``), part of every judge-cache key."""
        return self.resolved["scope"]

    @property
    def host(self) -> str:
        """The base URL's host name (lower case)."""
        return (urlsplit(self.resolved_base_url).hostname or "").lower()

    @property
    def uses_preset_key(self) -> bool:
        """Whether the preset's own key variable is sent (the base URL is the preset's own host)."""
        preset = PRESETS.get(self.name)
        return preset is not None and not self.api_key_env and self.resolved_key_env == preset["api_key_env"]


class JudgeClient:
    """Sends judge prompts to an OpenAI-compatible endpoint; see the module docstring."""

    temperature = 0.0

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config
        self.base_url = config.resolved_base_url
        self.model = config.resolved_model
        self.api_key_env = config.resolved_key_env
        self.endpoint = redact_url(self.base_url) + "/chat/completions"
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if self.api_key_env and not key:
            if config.uses_preset_key:
                raise UsageError(
                    f"judge {config.name}: the environment variable {self.api_key_env} is not set or empty "
                    f"(the key for {redact_url(self.base_url)} is read from the environment only)"
                )
            raise UsageError(
                f"judge {config.name}: --judge-api-key-env {self.api_key_env} names an environment variable that "
                "is not set or empty"
            )
        key = key or PLACEHOLDER_KEY  # no key for this endpoint: a local server (vLLM/SGLang) accepts anything
        # Kept only to build the HTTP client and to scrub it out of any text that could reach an error or a log.
        self._key = key
        self._errors = ErrorContext(
            config.timeout, None if key == PLACEHOLDER_KEY else key, self.api_key_env, _ERROR_DETAIL_CHARS
        )
        self._policy = RetryPolicy(config.max_retries, config.backoff_base, config.backoff_max)
        # Outlives each batch: what one round of prompts learnt about the server's rate limit holds for the next.
        self._limit = AdaptiveLimit(config.concurrency, adaptive=config.adaptive)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.config.name!r}, model={self.model!r}, base_url={self.endpoint!r})"

    @property
    def cache_scope(self) -> str:
        """The normalised endpoint (``scheme://host:port/path``): part of every judge-cache key, so two judges on
        two ports of one host never share judgements."""
        return self.config.scope

    def describe(self) -> dict[str, Any]:
        """What a run record may say about the judge (never the key; the key variable's name only).
        ``adaptive_concurrency`` is what the in-flight limit did up to now (:meth:`AdaptiveLimit.record`)."""
        return {
            "backend": "openai-compatible",
            "name": self.config.name,
            "model": self.model,
            "base_url": redact_url(self.base_url),
            "api_key_env": self.api_key_env or None,
            "api_key_source": self.config.key_source,
            "temperature": self.temperature,
            "concurrency": self.config.concurrency,
            "adaptive_concurrency": self._limit.record(),
            "timeout": self.config.timeout,
            "max_retries": self.config.max_retries,
            "max_tokens": self.config.max_tokens,
        }

    # --- batch API ------------------------------------------------------------------------------------------
    def complete_many(self, prompts: list[str]) -> list[JudgeReply]:
        """One reply per prompt, in order. Never raises for a failed request (see :class:`JudgeReply`), except
        :class:`~medbench.judges.core.JudgeCredentialsError` on HTTP 401/403, which ends the batch."""
        if not prompts:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.acomplete_many(prompts))
        # Called from inside an event loop: run ours on a helper thread.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge") as pool:
            return pool.submit(asyncio.run, self.acomplete_many(prompts)).result()

    async def acomplete_many(self, prompts: list[str]) -> list[JudgeReply]:
        """:meth:`complete_many` inside an event loop. On the first credentials refusal the rest of the batch is
        dropped: requests in flight are cancelled, queued ones are never sent, and the error is raised."""
        if not prompts:
            return []
        client = self._make_client()
        gate = AsyncGate(self._limit)
        refused = asyncio.Event()  # set by the first 401/403 while it still holds its slot
        tasks = [asyncio.ensure_future(self._complete(client, p, gate, refused)) for p in prompts]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()  # a no-op for finished ones; the rest of a refused batch stops here
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()

    # --- one request ----------------------------------------------------------------------------------------
    def _make_client(self) -> Any:
        import openai

        # The library's own retries are off: this client retries (with Retry-After and jitter) itself.
        return openai.AsyncOpenAI(api_key=self._key, base_url=self.base_url, timeout=self.config.timeout, max_retries=0)

    async def _complete(self, client: Any, prompt: str, gate: AsyncGate, refused: asyncio.Event) -> JudgeReply:
        """One prompt's reply: the retry loop's outcome as a :class:`JudgeReply`; a credentials refusal raises."""
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": self.config.max_tokens,
        }
        run = RetryRun(self._policy, self._errors, log, f"judge {self.config.name}")
        outcome = await acall_with_retries(lambda: self._attempt(client, payload), run, gate, refused)
        if isinstance(outcome, Success):
            text, served = outcome.value
            return JudgeReply(ok=True, text=text, server_model=served, attempts=outcome.attempts)
        if outcome.kind == "halted":
            return JudgeReply(ok=False, error="not sent: the judge refused the credentials", attempts=outcome.attempts)
        if outcome.kind == "rejected" and outcome.status in CREDENTIAL_STATUSES:
            raise self._refusal(outcome.status)
        reason = outcome.reason(self.endpoint)
        log.warning("judge %s: %s", self.config.name, reason)
        return JudgeReply(ok=False, error=reason, attempts=outcome.attempts)

    def _refusal(self, status: int) -> JudgeCredentialsError:
        """The error for an HTTP 401/403: which variable's key was sent (or that none was) and what to set."""
        where = f"judge {self.config.name} at {redact_url(self.base_url)} refused the credentials (HTTP {status})"
        env, source = self.api_key_env, self.config.key_source
        if env and self.config.api_key_env:
            advice = f"set {env} to a key this endpoint accepts (the key in ${env} was sent, {source})"
        elif env:
            advice = f"set {env} to a valid key (the key in ${env} was sent: {source})"
        else:
            advice = (
                "set an environment variable to this endpoint's key and name it with --judge-api-key-env VAR "
                f"(no key was sent: {source})"
            )
        return JudgeCredentialsError(f"{where}: {advice}")

    async def _attempt(self, client: Any, payload: dict[str, Any]) -> tuple[str, str | None]:
        """One HTTP call: ``(text, server-reported model)``. Errors propagate as the client raised them (the retry
        loop classifies them) or as :class:`~medbench.endpoint.Retryable` for a blank or malformed body."""
        raw = await client.chat.completions.with_raw_response.create(**payload)
        return parse_chat_body(raw.text, self._errors.scrub, allow_blank=False)
