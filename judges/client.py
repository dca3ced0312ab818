"""An OpenAI-compatible judge client: bounded concurrency, temperature 0, retries with backoff — and failures that
stay failures.

``JudgeConfig("deepseek")`` targets DeepSeek's OpenAI-compatible endpoint (``https://api.deepseek.com``, model
``deepseek-chat``, key from ``$DEEPSEEK_API_KEY``); ``base_url``/``model``/``api_key_env`` override it, so a local
vLLM/SGLang server or any other provider works (``JudgeConfig("local", base_url=..., model=...)``).

:meth:`JudgeClient.complete_many` sends every prompt as one user message with ``temperature=0``; at most
``concurrency`` requests are in flight. Retried (exponential backoff with jitter, ``Retry-After`` honoured, at most
``max_retries`` retries): HTTP 429, 408 and 5xx, timeouts, connection errors, and blank or malformed bodies. Any
other 4xx (401/403 included) is not retried. A request that still fails comes back as
``JudgeReply(ok=False, error=<reason>)`` — never an exception, never a score: callers count and report failures
and leave them out of means.

Keys are read from the environment only. They never appear in ``repr``, :meth:`JudgeClient.describe`, error texts
or log lines (error bodies are scrubbed, since a proxy may echo the ``Authorization`` header).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from medbench.endpoint import PLACEHOLDER_KEY, ErrorContext, Fatal, Retryable, backoff_delay, parse_chat_body
from medbench.errors import UsageError
from medbench.judges.core import JudgeReply
from medbench.provenance import redact_url

log = logging.getLogger(__name__)

_ERROR_DETAIL_CHARS = 300

#: ``--judge <name>`` presets: base_url, model, key variable.
PRESETS: dict[str, dict[str, str]] = {
    "deepseek": {
        "base_url": "https://api.deepseek.com",
        "model": "deepseek-chat",
        "api_key_env": "DEEPSEEK_API_KEY",
    },
}


@dataclass(frozen=True)
class JudgeConfig:
    """Where and how to ask the judge. Holds the *name* of the key variable, never the key."""

    name: str = "deepseek"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    concurrency: int = 16
    timeout: float = 600.0
    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_tokens: int = 1024
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
        resolved = {
            "base_url": base_url.rstrip("/"),
            "model": model,
            "api_key_env": self.api_key_env or preset.get("api_key_env") or "",
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
        return self.resolved["api_key_env"]

    @property
    def host(self) -> str:
        """The base URL's host name (lower case), part of every judge-cache key."""
        try:
            return (urlsplit(self.resolved_base_url).hostname or "").lower()
        except ValueError:
            return ""

    @property
    def uses_preset_endpoint(self) -> bool:
        preset = PRESETS.get(self.name)
        return preset is not None and self.resolved_base_url == preset["base_url"].rstrip("/")


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
        if not key:
            if config.uses_preset_endpoint:
                raise UsageError(
                    f"judge {config.name}: the environment variable {self.api_key_env} is not set or empty "
                    f"(the key for {redact_url(self.base_url)} is read from the environment only)"
                )
            if config.api_key_env:
                raise UsageError(f"judge {config.name}: api_key_env={config.api_key_env} is not set or empty")
            key = PLACEHOLDER_KEY  # a local server (vLLM/SGLang without --api-key) accepts anything
        # Kept only to build the HTTP client and to scrub it out of any text that could reach an error or a log.
        self._key = key
        self._errors = ErrorContext(
            config.timeout, None if key == PLACEHOLDER_KEY else key, self.api_key_env, _ERROR_DETAIL_CHARS
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.config.name!r}, model={self.model!r}, base_url={self.endpoint!r})"

    @property
    def cache_scope(self) -> str:
        """The endpoint's host: part of every judge-cache key."""
        return self.config.host

    def describe(self) -> dict[str, Any]:
        """What a run record may say about the judge (never the key; the key variable's name only)."""
        return {
            "backend": "openai-compatible",
            "name": self.config.name,
            "model": self.model,
            "base_url": redact_url(self.base_url),
            "api_key_env": self.api_key_env or None,
            "temperature": self.temperature,
            "concurrency": self.config.concurrency,
            "timeout": self.config.timeout,
            "max_retries": self.config.max_retries,
            "max_tokens": self.config.max_tokens,
        }

    # --- batch API ------------------------------------------------------------------------------------------
    def complete_many(self, prompts: list[str]) -> list[JudgeReply]:
        """One reply per prompt, in order. Never raises for a failed request (see :class:`JudgeReply`)."""
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
        if not prompts:
            return []
        client = self._make_client()
        semaphore = asyncio.Semaphore(self.config.concurrency)
        try:

            async def one(prompt: str) -> JudgeReply:
                async with semaphore:
                    return await self._complete(client, prompt)

            return list(await asyncio.gather(*(one(p) for p in prompts)))
        finally:
            await client.close()

    # --- one request ----------------------------------------------------------------------------------------
    def _make_client(self) -> Any:
        import openai

        # The library's own retries are off: this client retries (with Retry-After and jitter) itself.
        return openai.AsyncOpenAI(api_key=self._key, base_url=self.base_url, timeout=self.config.timeout, max_retries=0)

    async def _complete(self, client: Any, prompt: str) -> JudgeReply:
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": self.config.max_tokens,
        }
        attempts = self.config.max_retries + 1
        last = "no attempt made"
        for attempt in range(attempts):
            try:
                text, served = await self._attempt(client, payload)
                return JudgeReply(ok=True, text=text, server_model=served, attempts=attempt + 1)
            except Fatal as exc:
                reason = f"{self.endpoint} rejected the request: {exc}"
                log.warning("judge %s: %s", self.config.name, reason)
                return JudgeReply(ok=False, error=reason, attempts=attempt + 1)
            except Retryable as exc:
                last = str(exc)
                if attempt + 1 >= attempts:
                    break
                delay = backoff_delay(attempt, exc.retry_after, self.config.backoff_base, self.config.backoff_max)
                log.debug(
                    "judge %s: attempt %d/%d failed (%s); retrying in %.2fs",
                    self.config.name,
                    attempt + 1,
                    attempts,
                    last,
                    delay,
                )
                await asyncio.sleep(delay)
            except Exception as exc:  # anything else from the client library: not retried, still named
                reason = f"{self.endpoint}: unexpected {type(exc).__name__}: {self._errors.scrub(str(exc))}"
                log.warning("judge %s: %s", self.config.name, reason)
                return JudgeReply(ok=False, error=reason, attempts=attempt + 1)
        reason = f"{self.endpoint} failed after {attempts} attempt(s); last error: {last}"
        log.warning("judge %s: %s", self.config.name, reason)
        return JudgeReply(ok=False, error=reason, attempts=attempts)

    async def _attempt(self, client: Any, payload: dict[str, Any]) -> tuple[str, str | None]:
        """One HTTP call: ``(text, server-reported model)``, or :class:`~medbench.endpoint.Retryable` /
        :class:`~medbench.endpoint.Fatal`."""
        try:
            raw = await client.chat.completions.with_raw_response.create(**payload)
        except Exception as exc:
            raise self._errors.translate(exc) from None
        return parse_chat_body(raw.text, self._errors.scrub, allow_blank=False)
