"""Fixtures of the real-browser report tests (see browser.py) and their ``browser`` marker.

pytest imports every folder's ``conftest.py`` under the one module name ``conftest``, so once this file is loaded,
``from conftest import build_slake`` in a test module collected later (tests/tasks/, tests/test_cli.py, ...) finds
this module, not tests/conftest.py. :func:`__getattr__` forwards every name this module lacks to tests/conftest.py,
so those imports keep working whatever order pytest collects folders in.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from browser import chromium, demo_site, open_page

__all__ = ["chromium", "demo_site", "open_page"]

_ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
_root: ModuleType | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _root
    config.addinivalue_line(
        "markers", "browser: drives Debian's Chromium through Playwright (skips without it, fails when CI is set)"
    )
    # The module object pytest loaded from tests/conftest.py (already registered: it is the parent folder's).
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if isinstance(plugin, ModuleType) and path and Path(path).resolve() == _ROOT_CONFTEST:
            _root = plugin


def __getattr__(name: str) -> Any:
    """Names of tests/conftest.py (``from conftest import build_slake`` after this module took the name)."""
    if _root is None or name.startswith(("__", "pytest_")):  # pytest's own hooks and plugins stay this module's
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(_root, name)
