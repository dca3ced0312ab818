"""Helpers and fixtures for in-process run tests (a test module imports the fixtures it uses from here).

``ImageEcho``: a cacheable test model whose answer depends on the image bytes, so a test can tell which image it
was shown.

Registered in-process as ``imgecho`` by the fixture of that name. It decodes each
image as a real adapter does (a corrupt image raises :class:`~medbench.errors.SampleError` here, at generation
time) and records the size of every batch it is given.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from medbench.cli import main
from medbench.models.base import Model
from medbench.registry import _MODELS, register_model
from medbench.schema import Request
from medbench.tasks.base import DEMO_ROOT


class ImageEcho(Model):
    """Answers ``img-<first 8 hex of sha256(image bytes)>``; ``batches`` lists the size of every forward pass."""

    batch_size = 2
    batches: ClassVar[list[int]] = []

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name, **options)

    def generate(self, requests: Sequence[Request]) -> list[str]:
        out = []
        # Like the HF adapter, it splits what it is given into forward passes of ``self.batch_size``.
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            ImageEcho.batches.append(len(chunk))
            for request in chunk:
                request.image.open(request.image_size)  # decode, as a real adapter does
                out.append("img-" + hashlib.sha256(request.image.read_bytes()).hexdigest()[:8])
        return out


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def rows(run_dir: Path, model: str, task: str) -> list[dict[str, Any]]:
    path = run_dir / "predictions" / model / f"{task}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def imgecho() -> Iterator[type]:
    register_model("imgecho", "runkit:ImageEcho", "test model answering with its image's hash")
    ImageEcho.batches.clear()
    yield ImageEcho
    _MODELS.pop("imgecho", None)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A writable copy of the bundled demo set, laid out as a ``--data-dir``."""
    target = tmp_path / "data"
    shutil.copytree(DEMO_ROOT, target, ignore=shutil.ignore_patterns("*.md"))
    return target


@pytest.fixture
def medbench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    """``medbench(*argv)`` -> (exit code, stderr), in-process, with the cache in tmp_path unless argv names one."""

    def run(*argv: str) -> tuple[int, str]:
        args = list(argv)
        if argv and argv[0] == "run" and "--cache" not in args and "--no-cache" not in args:
            args += ["--cache", str(tmp_path / "cache.sqlite")]
        try:
            code = main(args)
        except SystemExit as exc:  # argparse rejects a malformed option value with exit 2
            code = int(exc.code or 0)
        return code, capsys.readouterr().err

    return run
