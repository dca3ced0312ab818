"""Content digests of files and folders (BLAKE3), with a stat-keyed cache so unchanged big files are not re-read.

``file_digest(path)`` hashes a file's bytes; ``tree_digest(folder)`` combines the digests of every file under a
folder with their relative names. Both look a file up first in a small SQLite cache next to the prediction cache
(``file-digests.sqlite`` beside :func:`medbench.cache.default_cache_path`), keyed by the file's resolved path and
its (size, mtime_ns, inode, ctime_ns): a rerun on an unchanged 20 GB checkpoint reads none of it, while a file that
was rewritten in any way (same size or not, in place or replaced) no longer matches and is hashed again.

Why BLAKE3 and not sha256: it is a cryptographic hash too, and on the 2-core development machine it hashes 2.8x
faster from the page cache (4.3 vs 1.5 GiB/s; from a slow disk both run at the disk's speed; see
benchmarks/RESULTS.md, "Weights hashing"). Files are read with plain ``readinto`` rather than memory-mapped: a
file truncated while mapped (a training job overwriting the checkpoint being hashed) kills the process with
SIGBUS, while a read merely returns short.

The cache is only an optimisation: if its file cannot be opened or written, hashing goes on without it.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import blake3

from medbench.cache import default_cache_path, open_sqlite

log = logging.getLogger(__name__)

#: The hash every digest here is made with (recorded next to digests, so a reader knows what they are).
ALGORITHM = "blake3"
#: File name of the digest cache, in the prediction cache's folder.
CACHE_NAME = "file-digests.sqlite"
#: Read size: large enough for few system calls, small enough to stay in the CPU cache (fastest when measured).
_CHUNK = 1 << 20
#: A file changed (mtime or ctime) this close to, or after, the moment it was hashed is not cached: timestamps
#: tick coarsely (a few ms on Linux; 1-2 s on HFS+, FAT, some NFS), so a same-size rewrite within the tick of the
#: last change leaves the whole stamp as it was and would still match a digest of the old bytes. Such a file is
#: simply hashed again next time; a checkpoint is seconds old at least by then.
RACY_WINDOW_NS = 2_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_digests (
    path TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    stamp TEXT NOT NULL,
    digest TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def default_digest_cache_path() -> Path:
    """``file-digests.sqlite`` in the folder of the prediction cache (``$MEDBENCH_CACHE`` or ``~/.cache/medbench``)."""
    return default_cache_path().parent / CACHE_NAME


def stamp(info: os.stat_result) -> str:
    """What identifies one version of a file without reading it: size, mtime_ns, inode and ctime_ns.

    Kept as text because inode numbers can exceed SQLite's signed 64-bit integers."""
    return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}:{info.st_ctime_ns}"


class DigestCache:
    """Digests by resolved path and :func:`stamp`, in a SQLite file (WAL), or nowhere for ``path=None``.

    A cache file that cannot be opened or written is logged once and then ignored: digests are still computed,
    just not remembered."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        if path is not None:
            try:
                self._db = open_sqlite(path, _SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                log.warning("file digest cache %s cannot be used (%s); hashing without it", path, exc)

    def get(self, path: str, file_stamp: str) -> str | None:
        """The digest stored for ``path`` if it was made from the file version ``file_stamp``."""
        if self._db is None:
            return None
        try:
            row = self._db.execute(
                "SELECT digest FROM file_digests WHERE path = ? AND algorithm = ? AND stamp = ?",
                (path, ALGORITHM, file_stamp),
            ).fetchone()
        except sqlite3.Error as exc:
            self._give_up(exc)
            return None
        return str(row[0]) if row else None

    def put(self, path: str, file_stamp: str, digest: str) -> None:
        """Remember ``digest`` for this version of ``path`` (replacing what an older version left)."""
        if self._db is None:
            return
        try:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO file_digests (path, algorithm, stamp, digest, created) VALUES (?,?,?,?,?)",
                    (path, ALGORITHM, file_stamp, digest, time.time()),
                )
        except sqlite3.Error as exc:
            self._give_up(exc)

    def _give_up(self, exc: sqlite3.Error) -> None:
        log.warning("file digest cache %s cannot be used (%s); hashing without it", self.path, exc)
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> DigestCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _clock_ns() -> int:
    """Now, on the clock file timestamps are set by (a function, so tests can move it)."""
    return time.time_ns()


def _hash_file(path: str) -> str:
    """BLAKE3 of the file's bytes, read in chunks into one reused buffer (the only place file content is read)."""
    hasher = blake3.blake3()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            hasher.update(view[:count])
    return hasher.hexdigest()


def _cached_digest(path: str | os.PathLike[str], cache: DigestCache) -> str:
    resolved = os.path.realpath(path)  # a hub snapshot's entries are links: the blob is the content
    before = os.stat(resolved)
    file_stamp = stamp(before)
    found = cache.get(resolved, file_stamp)
    if found is not None:
        return found
    started = _clock_ns()
    digest = _hash_file(resolved)
    after = os.stat(resolved)
    # Changed while being read, or changed too recently to trust its timestamps: correct now, not remembered.
    fresh = max(after.st_mtime_ns, after.st_ctime_ns) >= started - RACY_WINDOW_NS
    if stamp(after) == file_stamp and not fresh:
        cache.put(resolved, file_stamp, digest)
    return digest


def file_digest(path: str | os.PathLike[str], *, cache: DigestCache | None = None) -> str:
    """BLAKE3 (hex) of the file's content, served from the digest cache when the file is unchanged.

    ``cache``: an open :class:`DigestCache` (``DigestCache(None)`` to cache nothing); by default the one at
    :func:`default_digest_cache_path`. Raises :class:`OSError` if the file cannot be read (e.g. a broken link)."""
    if cache is not None:
        return _cached_digest(path, cache)
    with DigestCache(default_digest_cache_path()) as opened:
        return _cached_digest(path, opened)


def _excluded(relative: str, patterns: Iterable[str]) -> bool:
    lowered = relative.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in patterns)


def tree_files(folder: str | os.PathLike[str], *, exclude: Iterable[str] = ()) -> list[tuple[str, Path]]:
    """``(relative posix path, path)`` of every regular file under ``folder``, sorted by relative path.

    Links are followed (to files and folders; a folder reached twice is walked once). ``exclude``: shell
    patterns matched case-insensitively against each relative path (``*`` also matches ``/``); a matching folder
    is skipped whole. A broken link is listed (so hashing it fails loudly rather than leaving it out)."""
    root = Path(folder)
    patterns = tuple(exclude)
    seen: set[str] = set()
    found: list[tuple[str, Path]] = []
    for current, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:  # a link loop, or two links to one folder
            dirs[:] = []
            continue
        seen.add(real)
        base = Path(current).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = sorted(d for d in dirs if not _excluded(prefix + d, patterns))
        for name in files:
            relative = prefix + name
            if _excluded(relative, patterns):
                continue
            path = Path(current) / name
            try:
                mode = path.stat().st_mode
            except OSError:  # broken link: keep it, so that hashing names it
                found.append((relative, path))
                continue
            if stat.S_ISREG(mode):  # not sockets or FIFOs (opening a FIFO would block)
                found.append((relative, path))
    return sorted(found)


def tree_digest(
    folder: str | os.PathLike[str], *, exclude: Iterable[str] = (), cache: DigestCache | None = None
) -> str:
    """BLAKE3 (hex) over ``relative path NUL file digest`` of every file :func:`tree_files` lists: it changes when
    any file's content changes, or a file is added, removed or renamed. ``cache`` as in :func:`file_digest`."""
    if cache is None:
        with DigestCache(default_digest_cache_path()) as opened:
            return tree_digest(folder, exclude=exclude, cache=opened)
    hasher = blake3.blake3()
    for relative, path in tree_files(folder, exclude=exclude):
        hasher.update(f"{relative}\0{_cached_digest(path, cache)}\n".encode())
    return hasher.hexdigest()
