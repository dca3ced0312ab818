"""The judge cache: a SQLite file (WAL) of judge replies, so a rerun makes zero judge calls.

Keyed by sha256 over the judge model, the backend's *scope* (for an endpoint its normalised base URL
``scheme://host:port/path``, see :func:`medbench.endpoint.endpoint_scope`; for a local judge
``local:<weights digest>``), the prompt template's hash and the rendered prompt (which holds the inputs). Only
successful judgements are stored: a request that failed, or a reply whose score could not be parsed, is not cached
and is asked again on the next run. The table can live in the prediction cache's file
(``medbench.cache.default_cache_path()``): it has its own table name.

The ``host`` column holds the scope. Its name is kept from the first schema, which keyed endpoint judgements by
host name alone (so two judges on two ports of one host shared scores): a cache file written then opens unchanged,
and its endpoint rows simply never match a key again (their keys were built from a bare host name, a scope always
has ``://`` in it), so they are asked afresh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from medbench.cache import SqliteTable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY,
    judge_model TEXT NOT NULL,
    host TEXT NOT NULL, -- the backend's cache scope (see the module docstring)
    template_sha256 TEXT NOT NULL,
    raw_text TEXT NOT NULL,
    server_model TEXT,
    created REAL NOT NULL
)
"""


def judgement_key(*, judge_model: str, scope: str, template_sha256: str, prompt: str) -> str:
    """The cache key of one judge request. ``scope`` is the backend's ``cache_scope``, already normalised (it is
    used as given: an endpoint's path may be case-sensitive)."""
    parts = [judge_model, scope, template_sha256, prompt]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class CachedReply(NamedTuple):
    raw_text: str
    server_model: str | None


class JudgeCache(SqliteTable):
    """Judge replies by key. ``JudgeCache(None)`` keeps them in memory only."""

    table = "judgements"
    schema = _SCHEMA
    columns = ("key", "judge_model", "host", "template_sha256", "raw_text", "server_model")

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedReply]:
        """Cached replies for the keys that have one."""
        rows = self._select("raw_text, server_model", keys)
        return {key: CachedReply(raw_text, server_model) for key, raw_text, server_model in rows}

    def put_many(self, rows: Iterable[tuple[str, str, str, str, str, str | None]]) -> None:
        """Store ``(key, judge_model, scope, template_sha256, raw_text, server_model)`` rows and commit (the scope
        goes into the ``host`` column)."""
        self._store(rows)
