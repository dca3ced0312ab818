"""Weights hashing benchmark: what fingerprinting a multi-GB checkpoint by content costs, first run and rerun.

Writes one file of random bytes (4 GiB by default) to a temporary folder, then times:

* naive sha256 of the whole file (``hashlib.file_digest``), and medbench's BLAKE3 (``medbench.filehash``), each
  from disk (the file evicted from the page cache first, with ``posix_fadvise(DONTNEED)``) and from the page cache;
* BLAKE3 memory-mapped on all cores, for reference (not what medbench uses: a mapped file truncated by a writer
  kills the reader with SIGBUS);
* the rerun: ``file_digest`` through the digest cache on the unchanged file (a new cache connection, as a new
  process opens it, and the file evicted again so a stray read would show).

Run: python benchmarks/weights_hash.py [--size-gib 4] [--dir /tmp]. The file is deleted at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import blake3

from medbench import filehash

GIB = 1 << 30
_BLOCK = 64 << 20


def make_file(path: Path, size: int) -> None:
    """``size`` bytes of random data: one random block, each copy stamped with its index so no block repeats."""
    block = bytearray(os.urandom(_BLOCK))
    with path.open("wb") as handle:
        for index in range(0, size, _BLOCK):
            block[:8] = index.to_bytes(8, "little")
            handle.write(block[: min(_BLOCK, size - index)])
        handle.flush()
        os.fsync(handle.fileno())


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache, so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def blake3_mmap_all_cores(path: Path) -> str:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    hasher.update_mmap(str(path))
    return hasher.hexdigest()


def timed(work: Callable[[], str]) -> tuple[float, str]:
    start = time.perf_counter()
    digest = work()
    return time.perf_counter() - start, digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=4.0)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    size = int(args.size_gib * GIB)
    free = shutil.disk_usage(args.dir).free
    if free < size + GIB:
        raise SystemExit(f"{args.dir}: {free / GIB:.1f} GiB free, need {size / GIB + 1:.1f}; pass --size-gib or --dir")

    work = Path(tempfile.mkdtemp(prefix="medbench-hash-", dir=args.dir))
    try:
        path = work / "model.safetensors"
        start = time.perf_counter()
        make_file(path, size)
        written = time.perf_counter() - start
        # The digest cache does not remember a file changed in the last RACY_WINDOW_NS: let it age past that.
        time.sleep(max(0.0, filehash.RACY_WINDOW_NS / 1e9 - (time.time() - path.stat().st_ctime) + 0.1))

        rows: list[tuple[str, str, float]] = []
        evict(path)
        seconds, sha = timed(lambda: sha256_file(path))
        rows.append(("naive sha256 (hashlib.file_digest)", "disk", seconds))
        evict(path)
        with filehash.DigestCache(work / "digests.sqlite") as cache:
            seconds, digest = timed(lambda: filehash.file_digest(path, cache=cache))
        rows.append(("medbench blake3, first run (hash + store)", "disk", seconds))
        seconds, _ = timed(lambda: sha256_file(path))
        rows.append(("naive sha256", "page cache", seconds))
        seconds, again = timed(lambda: filehash._hash_file(str(path)))
        rows.append(("medbench blake3 (1 thread, read 1 MiB chunks)", "page cache", seconds))
        seconds, mapped = timed(lambda: blake3_mmap_all_cores(path))
        rows.append(("blake3 mmap, all cores (reference only)", "page cache", seconds))
        assert digest == again == mapped, "blake3 digests disagree"
        evict(path)
        with filehash.DigestCache(work / "digests.sqlite") as cache:
            seconds, cached = timed(lambda: filehash.file_digest(path, cache=cache))
        assert cached == digest, "the digest cache served another digest"
        rows.append(("medbench blake3, rerun (digest cache hit)", "-", seconds))

        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
            f"blake3 {blake3.__version__}; file: {size / GIB:.1f} GiB random (written in {written:.1f} s)"
        )
        print(f"{'method':50} {'read from':>10} {'seconds':>9} {'GiB/s':>8}")
        for name, source, seconds in rows:
            rate = f"{size / GIB / seconds:8.2f}" if source != "-" else f"{'-':>8}"
            print(f"{name:50} {source:>10} {seconds:9.4f} {rate}")
        print(f"sha256 {sha[:16]}..., blake3 {digest[:16]}...")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
