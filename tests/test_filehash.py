"""medbench.filehash: content digests of files and folders, and the stat-keyed digest cache that spares re-reading
unchanged files. Reads are counted by wrapping ``filehash._hash_file`` (the one function that reads content),
never timed."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import blake3
import pytest

from medbench import filehash
from medbench.filehash import DigestCache, file_digest, tree_digest, tree_files

#: An mtime long ago (2020).
OLD_NS = 1_600_000_000 * 10**9


def write(path: Path, data: bytes, mtime_ns: int | None = OLD_NS) -> Path:
    """Write ``data`` in place (same inode when the file exists) and set its mtime (None: leave it fresh)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("r+b" if path.exists() else "wb") as handle:
        handle.truncate(0)
        handle.write(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


@pytest.fixture
def cache(tmp_path: Path) -> DigestCache:
    return DigestCache(tmp_path / "digests.sqlite")


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash as if an hour had passed since the files were written: their timestamps are trusted (a just-written
    file is never cached, see test_freshly_changed_file_is_not_cached)."""
    monkeypatch.setattr(filehash, "_clock_ns", lambda: time.time_ns() + 3600 * 10**9)


def test_digest_is_blake3_of_the_content_across_chunks(tmp_path: Path, cache: DigestCache) -> None:
    data = os.urandom(filehash._CHUNK * 2 + 12345)  # several reads, the last one short
    path = write(tmp_path / "w.bin", data)
    assert filehash.ALGORITHM == "blake3"
    assert file_digest(path, cache=cache) == blake3.blake3(data).hexdigest()
    assert file_digest(write(tmp_path / "empty", b""), cache=cache) == blake3.blake3(b"").hexdigest()


def test_same_size_rewrite_changes_the_digest(
    tmp_path: Path, cache: DigestCache, reads: list[str], later: None
) -> None:
    # Guards the bug: a checkpoint rebuilt in place with same-size weights must not keep its identity.
    path = write(tmp_path / "model.safetensors", b"a" * 4096)
    before = file_digest(path, cache=cache)
    write(path, b"b" * 4096, mtime_ns=OLD_NS + 10**9)
    assert file_digest(path, cache=cache) != before and len(reads) == 2


def test_unchanged_file_is_served_from_the_cache(
    tmp_path: Path, cache: DigestCache, reads: list[str], later: None
) -> None:
    path = write(tmp_path / "model.safetensors", os.urandom(10_000))
    first = file_digest(path, cache=cache)
    assert file_digest(path, cache=cache) == first
    # Also from a new connection to the same file: what a second run does.
    with DigestCache(cache.path) as reopened:
        assert file_digest(path, cache=reopened) == first
    assert reads == [os.path.realpath(path)]


def test_default_cache_lives_next_to_the_prediction_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: list[str], later: None
) -> None:
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "c" / "predictions.sqlite"))
    assert filehash.default_digest_cache_path() == tmp_path / "c" / "file-digests.sqlite"
    path = write(tmp_path / "w.bin", b"x" * 100)
    assert file_digest(path) == file_digest(path) and len(reads) == 1
    assert (tmp_path / "c" / "file-digests.sqlite").is_file()


def test_touching_the_mtime_rehashes(tmp_path: Path, cache: DigestCache, reads: list[str], later: None) -> None:
    path = write(tmp_path / "w.bin", b"x" * 100)
    first = file_digest(path, cache=cache)
    os.utime(path, ns=(OLD_NS + 5, OLD_NS + 5))
    assert file_digest(path, cache=cache) == first and len(reads) == 2


def test_stamp_covers_size_mtime_inode_and_ctime() -> None:
    base = {"st_size": 10, "st_mtime_ns": 1, "st_ino": 2**64 - 1, "st_ctime_ns": 3}
    stamps = {filehash.stamp(SimpleNamespace(**base))}  # type: ignore[arg-type]
    for field in base:
        stamps.add(filehash.stamp(SimpleNamespace(**{**base, field: 5})))  # type: ignore[arg-type]
    assert len(stamps) == 5  # each field alone makes another version (inode past int64 is fine: text)


def test_rewrite_that_restores_size_and_mtime_is_rehashed(tmp_path: Path, cache: DigestCache, reads: list[str]) -> None:
    """Size, mtime and inode as they were (a tool that preserves timestamps, rewriting in place), immediately
    after the first hash: even within one timestamp tick (same ctime) the old digest is not served."""
    path = write(tmp_path / "w.bin", b"a" * 100)
    first = file_digest(path, cache=cache)
    write(path, b"b" * 100)  # same size, same mtime (OLD_NS), same inode
    assert file_digest(path, cache=cache) != first and len(reads) == 2


def test_file_replaced_by_another_inode_is_rehashed(
    tmp_path: Path, cache: DigestCache, reads: list[str], later: None
) -> None:
    path = write(tmp_path / "w.bin", b"a" * 100)
    first = file_digest(path, cache=cache)
    os.replace(write(tmp_path / "new.bin", b"b" * 100), path)  # same size and mtime, new inode
    assert file_digest(path, cache=cache) != first and len(reads) == 2


@pytest.mark.parametrize("mtime_ns", [None, OLD_NS], ids=["fresh mtime", "old mtime, fresh ctime"])
def test_freshly_changed_file_is_not_cached(
    tmp_path: Path, cache: DigestCache, reads: list[str], mtime_ns: int | None
) -> None:
    """Its timestamps may not have ticked yet for a second write: hash it again next time (still correct now)."""
    path = write(tmp_path / "w.bin", b"a" * 100, mtime_ns=mtime_ns)
    assert file_digest(path, cache=cache) == file_digest(path, cache=cache) and len(reads) == 2


def test_links_are_hashed_as_their_target(tmp_path: Path, cache: DigestCache, reads: list[str], later: None) -> None:
    """A hub cache snapshot links each file to a blob: the blob is the content and the cache key."""
    blob = write(tmp_path / "blobs" / "abc123", os.urandom(1000))
    link = tmp_path / "snapshots" / "commit" / "model.safetensors"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    assert (
        file_digest(link, cache=cache) == file_digest(blob, cache=cache) == blake3.blake3(blob.read_bytes()).hexdigest()
    )
    assert reads == [os.path.realpath(blob)]


def test_unusable_cache_file_still_hashes(tmp_path: Path, reads: list[str], caplog: pytest.LogCaptureFixture) -> None:
    blocker = write(tmp_path / "not-a-folder", b"")
    path = write(tmp_path / "w.bin", b"a" * 100)
    with caplog.at_level(logging.WARNING, logger="medbench.filehash"):
        broken = DigestCache(blocker / "digests.sqlite")
        assert file_digest(path, cache=broken) == blake3.blake3(b"a" * 100).hexdigest()
    assert "cannot be used" in caplog.text and "hashing without it" in caplog.text
    assert file_digest(path, cache=DigestCache(None)) and len(reads) == 2  # no cache: always read


def checkpoint(root: Path) -> Path:
    write(root / "config.json", b'{"model_type": "llava"}')
    write(root / "model.safetensors", b"w" * 1000)
    write(root / "sub" / "extra.safetensors", b"s" * 100)
    write(root / "README.md", b"readme")
    write(root / "checkpoint-500" / "optimizer.pt", b"o" * 100)
    write(root / ".cache" / "huggingface" / "download.metadata", b"etag")
    return root


EXCLUDE = ("readme.md", ".*", "*/.*", "checkpoint-*")


def test_tree_lists_subfolders_and_skips_excluded(tmp_path: Path) -> None:
    root = checkpoint(tmp_path / "m")
    (root / "Sub2").mkdir()
    write(root / "Sub2" / "ReadMe.MD", b"nested readme is kept: patterns match the relative path")
    names = [name for name, _ in tree_files(root, exclude=EXCLUDE)]
    assert names == ["Sub2/ReadMe.MD", "config.json", "model.safetensors", "sub/extra.safetensors"]
    os.mkfifo(root / "pipe")  # never opened (it would block)
    assert [name for name, _ in tree_files(root, exclude=EXCLUDE)] == names


def test_tree_digest_follows_content_names_and_subfolders(tmp_path: Path, cache: DigestCache, later: None) -> None:
    root = checkpoint(tmp_path / "m")
    first = tree_digest(root, exclude=EXCLUDE, cache=cache)
    assert tree_digest(shutil.copytree(root, tmp_path / "copy"), exclude=EXCLUDE, cache=cache) == first
    write(root / "README.md", b"edited")  # excluded: no change
    write(root / "checkpoint-500" / "optimizer.pt", b"p" * 100)
    assert tree_digest(root, exclude=EXCLUDE, cache=cache) == first
    write(root / "sub" / "extra.safetensors", b"t" * 100, mtime_ns=OLD_NS + 1)  # subfolder, same size
    second = tree_digest(root, exclude=EXCLUDE, cache=cache)
    assert second != first
    (root / "sub" / "extra.safetensors").rename(root / "sub" / "renamed.safetensors")
    assert tree_digest(root, exclude=EXCLUDE, cache=cache) not in (first, second)


def test_tree_digest_serves_unchanged_files_from_the_cache(
    tmp_path: Path, cache: DigestCache, reads: list[str], later: None
) -> None:
    root = checkpoint(tmp_path / "m")
    first = tree_digest(root, exclude=EXCLUDE, cache=cache)
    assert len(reads) == 3
    assert tree_digest(root, exclude=EXCLUDE, cache=cache) == first and len(reads) == 3
    write(root / "model.safetensors", b"v" * 1000, mtime_ns=OLD_NS + 1)
    assert tree_digest(root, exclude=EXCLUDE, cache=cache) != first
    assert reads[3:] == [os.path.realpath(root / "model.safetensors")]  # only the rewritten file is read


def test_tree_with_a_link_loop_and_a_broken_link(tmp_path: Path, cache: DigestCache) -> None:
    root = checkpoint(tmp_path / "m")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    names = [name for name, _ in tree_files(root, exclude=EXCLUDE)]
    assert len(names) == len(set(names))  # terminates; each real folder walked once
    (root / "shard.safetensors").symlink_to(tmp_path / "blobs" / "missing")
    with pytest.raises(FileNotFoundError):  # an incomplete hub download is not silently left out
        tree_digest(root, exclude=EXCLUDE, cache=cache)
