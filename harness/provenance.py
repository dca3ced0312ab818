"""What makes a result reproducible: package versions, git commit, hashes of config and inputs."""

from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_PACKAGES = (
    "medbench",
    "numpy",
    "pillow",
    "pyarrow",
    "sacrebleu",
    "jinja2",
    "rich",
    "huggingface_hub",
    "torch",
    "transformers",
    "peft",
    "accelerate",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change a number (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout holding medbench's source, if it runs from one."""
    where = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "note": "not running from a git checkout"}
    return {"commit": commit, "dirty": bool(dirty)}


def redact_url(url: str) -> str:
    """``url`` without user info and query string (either could carry a credential)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<unparseable url>"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


def redact_urls(obj: Any) -> Any:
    """``obj`` (JSON-like: dicts, lists, strings) with every URL inside a string passed through
    :func:`redact_url` — for run records that echo the command line or the config."""
    if isinstance(obj, str):
        return _URL.sub(lambda m: redact_url(m.group(0)), obj) if "://" in obj else obj
    if isinstance(obj, dict):
        return {k: redact_urls(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_urls(v) for v in obj]
    return obj


def stable_hash(obj: Any) -> str:
    """sha256 of a canonical JSON rendering."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def environment() -> dict[str, Any]:
    """Versions, git state and platform in one block for run.json."""
    return {
        "versions": package_versions(),
        "git": git_state(),
        "platform": platform.platform(),
        "executable": sys.executable,
    }
