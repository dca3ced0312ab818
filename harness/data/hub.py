"""Hugging Face mirror snapshots at pinned revisions.

A pinned commit never changes, so the local cache is tried first and the network only when the files are not
cached. Offline (``HF_HUB_OFFLINE=1``, or the hub's host does not resolve) nothing is downloaded, and the
caller gets a one-line reason instead of minutes of retries.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse


def hub_offline_reason() -> str | None:
    """None if the hub's host resolves, else why not (checked once, in well under a second offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        return f"cannot resolve {host} ({exc.strerror or exc})"
    return None


def _has_data(root: Path) -> bool:
    return any(p.is_file() for p in root.rglob("*") if p.name != "README.md")


def snapshot(repo_id: str, revision: str, patterns: list[str]) -> tuple[Path | None, str]:
    """Return ``(path, "")`` for a snapshot of the dataset repo at ``revision``, or ``(None, why)``."""
    from huggingface_hub import snapshot_download

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    # Read at call time (huggingface_hub reads it once at import), so a cache set later is honoured.
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    try:
        cached = Path(
            snapshot_download(
                repo_id,
                repo_type="dataset",
                revision=revision,
                allow_patterns=patterns,
                local_files_only=True,
                cache_dir=cache_dir,
            )
        )
        if _has_data(cached):
            return cached, ""
    except Exception:  # not in the cache (huggingface_hub raises several types for this)
        pass
    offline = hub_offline_reason()
    if offline:
        return None, f"not in the local Hugging Face cache, and the hub is unreachable: {offline}"
    try:
        path = Path(
            snapshot_download(
                repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns, cache_dir=cache_dir
            )
        )
    except Exception as exc:  # network, auth or missing-revision errors: all mean "not available here"
        return None, f"download failed: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"
    if not _has_data(path):
        return None, "the snapshot holds no data files"
    return path, ""
