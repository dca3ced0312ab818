"""What every judge shares: the backend contract, one judged prompt's record, and cached asking.

A *backend* turns prompts into replies: :class:`medbench.judges.client.JudgeClient` (any OpenAI-compatible
endpoint) or :class:`medbench.judges.local.LocalJudge` (a transformers model on this machine). A *judge* (the
caption judge, the equivalence judge) renders prompts from a template, asks a backend through
:func:`ask`, and parses each reply into a value. :func:`ask` is where the judge cache and the failure rules live:

* a prompt whose reply is cached is not sent again (a rerun makes zero calls);
* identical prompts within one call are sent once;
* a failed request, or a reply the parser rejects, becomes a :class:`Judgement` with ``value=None`` and a
  ``failure_reason`` — never a zero — and is not cached, so the next run asks again;
* an endpoint that refuses the credentials raises :class:`JudgeCredentialsError` instead: every other request
  would be refused too, so the judge pass stops (what earlier rounds judged stays cached).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any, NamedTuple, Protocol

from medbench.errors import MedbenchError
from medbench.judges.cache import JudgeCache, judgement_key

#: A parser: reply text -> (value, None) or (None, "parse failure: ...").
Parser = Callable[[str], tuple[Any, str | None]]


class JudgeReply(NamedTuple):
    """One prompt's outcome from a backend. ``ok=False``: ``error`` says why and ``text`` is None."""

    ok: bool
    text: str | None = None
    server_model: str | None = None
    error: str | None = None
    attempts: int = 0


class JudgeCredentialsError(MedbenchError):
    """The judge endpoint refused the credentials (HTTP 401/403). Raised by a backend's ``complete_many`` on the
    first refusal, so the run stops (exit 2) instead of finishing with every judgement failed. The message says
    which key variable was sent (its name, never the key) and what to set."""

    exit_code = 2


class JudgeBackend(Protocol):
    """Where prompts are answered. ``model`` and ``cache_scope`` (the endpoint's normalised base URL
    ``scheme://host:port/path``, or ``local:<weights digest>``) are part of every cache key, so two judges never
    share judgements."""

    model: str

    @property
    def cache_scope(self) -> str: ...

    def complete_many(self, prompts: list[str]) -> list[JudgeReply]:
        """One reply per prompt, in order; never raises for a failed prompt, except
        :class:`JudgeCredentialsError` when the endpoint refuses the credentials."""
        ...

    def describe(self) -> dict[str, Any]:
        """What a run record may say about the judge (never a key)."""
        ...


class Judgement(NamedTuple):
    """One judged prompt. ``value`` is None exactly when ``failure_reason`` is set."""

    value: Any
    failure_reason: str | None
    raw_text: str
    server_model: str | None
    cached: bool

    def record(self, judge_model: str) -> dict[str, Any]:
        """The JSON shape stored in a prediction row (``raw`` is the judge's full reply, for audit)."""
        return {
            "judge_model": judge_model,
            "server_model": self.server_model,
            "failure": self.failure_reason,
            "cached": self.cached,
            "raw": self.raw_text,
        }


@lru_cache(maxsize=8)
def template_text(name: str) -> str:
    """The source of ``templates/<name>`` shipped with the package."""
    return resources.files("medbench.judges").joinpath("templates", name).read_text(encoding="utf-8")


def template_sha256(name: str) -> str:
    """Hash of a template's source; part of every cache key, so an edited prompt is judged afresh."""
    return hashlib.sha256(template_text(name).encode()).hexdigest()


@lru_cache(maxsize=8)
def compiled_template(name: str) -> Any:
    """A Jinja template that fails on a missing variable and keeps the text as written (no autoescape; the
    file's single final newline is dropped, so a prompt ends exactly where the template's text does)."""
    from jinja2 import Environment, StrictUndefined

    env = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    return env.from_string(template_text(name))


#: Prompts sent per round trip to the backend; each round's judgements are committed to the cache before the next
#: starts, so a killed run loses at most one round (and the concurrency stays full within a round).
CHUNK = 256


def ask(
    backend: JudgeBackend,
    cache: JudgeCache | None,
    prompts: Sequence[str],
    template_hash: str,
    parse: Parser,
    advance: Callable[[int], Any] | None = None,
) -> list[Judgement]:
    """Judge ``prompts`` (rendered from the template hashed as ``template_hash``), in order; see the module
    docstring for caching and failures. ``advance(n)`` is called as prompts are answered (cached ones first)."""
    scope = backend.cache_scope
    keys = [
        judgement_key(judge_model=backend.model, scope=scope, template_sha256=template_hash, prompt=p) for p in prompts
    ]
    hits = cache.get_many(keys) if cache is not None else {}

    results: list[Judgement | None] = [None] * len(prompts)
    todo: dict[str, list[int]] = {}  # key -> indices of the prompts that share it
    for i, key in enumerate(keys):
        hit = hits.get(key)
        if hit is not None:
            value, reason = parse(hit.raw_text)
            results[i] = Judgement(value, reason, hit.raw_text, hit.server_model, True)
        else:
            todo.setdefault(key, []).append(i)

    if advance is not None:
        advance(len(prompts) - sum(len(v) for v in todo.values()))
    order = list(todo)
    for start in range(0, len(order), CHUNK):
        chunk = order[start : start + CHUNK]
        replies = backend.complete_many([prompts[todo[k][0]] for k in chunk])
        to_store: list[tuple[str, str, str, str, str, str | None]] = []
        for key, reply in zip(chunk, replies, strict=True):
            if reply.ok and reply.text is not None:
                value, reason = parse(reply.text)
                judgement = Judgement(value, reason, reply.text, reply.server_model, False)
                if reason is None:
                    to_store.append((key, backend.model, scope, template_hash, reply.text, reply.server_model))
            else:
                judgement = Judgement(None, f"request failed: {reply.error}", "", reply.server_model, False)
            for i in todo[key]:
                results[i] = judgement
        if cache is not None and to_store:
            cache.put_many(to_store)
        if advance is not None:
            advance(sum(len(todo[k]) for k in chunk))
    return [r for r in results if r is not None]
