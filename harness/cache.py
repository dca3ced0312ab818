"""The prediction cache: a SQLite file (WAL) of model outputs, committed batch by batch.

Keyed by everything that decides an output — the model fingerprint (a content hash of the weights and adapter,
revision, dtype, generation config), the exact prompt text and its template hash, the sha256 of the sample's image
bytes, the image size, max_new_tokens, the task, the checksum of the split's annotation files and the sample id — so
another model's outputs are never reused (the bug of lm-eval #4063), and a changed image (even one swapped for
another of the same size), dataset or prompt is regenerated. Each finished batch is committed before the next
starts; with WAL and synchronous=NORMAL a killed process (even SIGKILL) loses at most the batch in flight.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TypeVar

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    task TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    output TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def default_cache_path() -> Path:
    """``$MEDBENCH_CACHE``, else ``$XDG_CACHE_HOME/medbench/predictions.sqlite`` (``~/.cache`` by default)."""
    env = os.environ.get("MEDBENCH_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "medbench" / "predictions.sqlite"


def prediction_key(
    *,
    fingerprint: str,
    task: str,
    data_checksum: str,
    sample_id: str,
    prompt: str,
    prompt_sha256: str,
    image_sha256: str,
    image_size: int | None,
    max_new_tokens: int,
) -> str:
    """The cache key of one request (sha256 over every input that can change the output)."""
    parts = [
        fingerprint,
        task,
        data_checksum,
        sample_id,
        prompt_sha256,
        prompt,
        image_sha256,
        str(image_size),
        str(max_new_tokens),
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def open_sqlite(path: Path | None, schema: str) -> sqlite3.Connection:
    """A connection to the SQLite file at ``path`` (WAL, synchronous=NORMAL), or in memory for ``None``, with
    ``schema`` applied. Shared by the prediction and judgement caches."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path) if path is not None else ":memory:", timeout=_BUSY_TIMEOUT_S)
    if path is not None:
        _retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
        db.execute("PRAGMA synchronous=NORMAL")
    _retry_locked(lambda: db.execute(schema))
    db.commit()
    return db


_BUSY_TIMEOUT_S = 60.0


def _retry_locked(statement: Callable[[], Any]) -> None:
    """Run ``statement``, retrying while the file is locked. Switching a new file to WAL needs an exclusive lock
    and SQLite reports "database is locked" at once instead of waiting for it, so several processes opening the
    same new cache together (the ranks of a torchrun job) would fail without this."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def rows_for_keys(db: sqlite3.Connection, select: str, keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """Rows of ``select`` (a ``SELECT ... FROM table`` without WHERE) whose ``key`` is in ``keys``, queried in
    chunks that stay under SQLite's parameter limit."""
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        rows.extend(db.execute(f"{select} WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall())
    return rows


_Store = TypeVar("_Store", bound="SqliteTable")


class SqliteTable:
    """One keyed table in a cache file (SQLite, WAL), or in memory for ``path=None``. Subclasses name the table,
    its schema and the columns they store (``key`` first); each store call is one committed transaction. Shared by
    the prediction cache and the judgement cache, which can live in the same file."""

    table: ClassVar[str]
    schema: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db = open_sqlite(path, self.schema)

    def _select(self, columns: str, keys: Sequence[str]) -> list[tuple[Any, ...]]:
        """``(key, *columns)`` rows for the keys that have one."""
        return rows_for_keys(self._db, f"SELECT key, {columns} FROM {self.table}", keys)

    def _store(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Insert or replace rows of :attr:`columns` (plus a ``created`` time) and commit."""
        now = time.time()
        names = ", ".join((*self.columns, "created"))
        marks = ", ".join("?" * (len(self.columns) + 1))
        with self._db:
            self._db.executemany(
                f"INSERT OR REPLACE INTO {self.table} ({names}) VALUES ({marks})", [(*row, now) for row in rows]
            )

    def count(self) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class PredictionCache(SqliteTable):
    """Outputs by key. ``PredictionCache(None)`` keeps them in memory only (``--no-cache``)."""

    table = "predictions"
    schema = _SCHEMA
    columns = ("key", "model", "fingerprint", "task", "sample_id", "output")

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        """Cached outputs for the keys that have one."""
        return {key: output for key, output in self._select("output", keys)}

    def put_many(self, rows: Iterable[tuple[str, str, str, str, str, str]]) -> None:
        """Store ``(key, model, fingerprint, task, sample_id, output)`` rows and commit (one batch)."""
        self._store(rows)
