"""Thumbnails for the sample browser: small JPEG copies of the evaluated images, never hot-linked originals.

A prediction row's ``image`` record says where its image lives relative to the task's data root (a file, a zip
member or a parquet cell) and the sha256 of its bytes. Each distinct image becomes ``thumbs/<sha256[:32]>-<size>.jpg``:
named by the source's content, so a rebuild reuses a thumbnail that already exists (even after the data folder has
moved), and two runs on the same image share one file. An image that cannot be read — the data root is not on this
machine, or its bytes no longer match the run's sha256 — gets no thumbnail and a reason the page shows instead.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medbench.errors import SampleError
from medbench.results import image_ref

#: Longest side of a thumbnail in pixels (the browser shows them at 96 px). 128 lets JPEG decode at 1/4 scale for a
#: typical 512-700 px image, 25% faster than 160 (benchmarks/report_build.py: 11k thumbnails make most of a cold build).
THUMB_SIZE = 128
#: Below this many images to make, threads cost more than they save.
_PARALLEL_FROM = 64


@dataclass(frozen=True)
class Thumb:
    """Where a sample's thumbnail is (``src``, relative to the site root) or why there is none (``why``)."""

    src: str | None
    why: str | None = None


def thumb_name(sha256: str, size: int = THUMB_SIZE) -> str:
    """The site-relative path of the thumbnail of the image with this sha256."""
    return f"thumbs/{sha256[:32]}-{size}.jpg"


def _make(record: Mapping[str, Any], root: Path | None, target: Path, size: int) -> Thumb:
    """Read, check and downscale one image into ``target``."""
    from PIL import Image, UnidentifiedImageError

    sha = str(record.get("sha256", ""))
    try:
        data = image_ref(record, root).read_bytes()
    except SampleError as exc:
        return Thumb(None, f"image not reachable here ({exc})")
    if hashlib.sha256(data).hexdigest() != sha:
        # Showing a different picture next to a model's answer would be worse than showing none.
        return Thumb(None, "the image file changed since the run (its sha256 differs); not shown")
    import io

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, several times faster
            im.thumbnail((size, size))
            small = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return Thumb(None, f"image cannot be decoded ({exc.__class__.__name__})")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    small.save(partial, "JPEG", quality=78, optimize=True)
    os.replace(partial, target)  # a killed build never leaves a half-written thumbnail under the final name
    return Thumb(target.name)


def make_thumbnails(
    images: Iterable[tuple[Mapping[str, Any], Path | None]], out: Path, *, size: int = THUMB_SIZE
) -> dict[str, Thumb]:
    """``{sha256: Thumb}`` for every distinct image in ``images`` (pairs of a row's image record and its task's data
    root), writing missing thumbnails under ``out/thumbs/``; existing ones are reused by name."""
    todo: dict[str, tuple[Mapping[str, Any], Path | None]] = {}
    done: dict[str, Thumb] = {}
    for record, root in images:
        sha = str(record.get("sha256") or "")
        if not sha:
            continue
        if sha in done or sha in todo:
            continue
        name = thumb_name(sha, size)
        if (out / name).is_file():
            done[sha] = Thumb(name)
        else:
            todo[sha] = (record, root)

    def one(item: tuple[str, tuple[Mapping[str, Any], Path | None]]) -> tuple[str, Thumb]:
        sha, (record, root) = item
        name = thumb_name(sha, size)
        made = _make(record, root, out / name, size)
        return sha, Thumb(name) if made.src else made

    if len(todo) >= _PARALLEL_FROM and (os.cpu_count() or 1) > 1:
        # Pillow releases the GIL while decoding and resampling, so threads use every core.
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            done.update(pool.map(one, todo.items()))
    else:
        done.update(map(one, todo.items()))
    return done
