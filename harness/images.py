"""Reading images lazily and safely: path-traversal checks, zip members, parquet cells, RGB + resize."""

from __future__ import annotations

import io
import os
import re
import threading
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medbench.errors import SampleError
from medbench.schema import ImageRef

if TYPE_CHECKING:
    from PIL import Image

_lock = threading.Lock()
# Images are read in dataset order, so keeping the last couple of parquet row groups (image column only) and
# open zip archives avoids re-reading a whole row group for every image.
_row_groups: OrderedDict[tuple[str, int, str], list[Any]] = OrderedDict()
_zips: OrderedDict[str, zipfile.ZipFile] = OrderedDict()
_MAX_ROW_GROUPS = 2
_ADDRESS = re.compile(r" (?:object )?at 0x[0-9a-fA-F]+>")  # "<_io.BytesIO object at 0x7f...>" in PIL messages
_MAX_ZIPS = 4


def safe_join(root: Path, relative: str, *, where: str) -> Path:
    """Join ``relative`` (a path read from an annotation file) onto ``root``, refusing escapes.

    The check is lexical: ``../`` components, absolute paths and drive letters are refused, while folders the
    user symlinked into the data directory (common on clusters) keep working. ``where`` names the annotation
    file and row that supplied ``relative``, for the error message.
    """
    if not relative or "\x00" in relative:
        raise SampleError(f"{where}: empty or invalid image path {relative!r}", where=where)
    normal = os.path.normpath(relative.replace("\\", "/"))
    if os.path.isabs(normal) or normal == ".." or normal.startswith("../") or re.match(r"^[A-Za-z]:", normal):
        raise SampleError(
            f"{where}: image path {relative!r} escapes the data folder {root}; "
            "fix the annotation file (image paths must stay inside the dataset folder)",
            where=where,
        )
    return root / normal


def safe_member(name: str, *, where: str) -> str:
    """Check a zip member name for traversal the same way :func:`safe_join` checks paths."""
    parts = Path(name).parts
    if not name or name.startswith(("/", "\\")) or ".." in parts:
        raise SampleError(f"{where}: image path {name!r} escapes the archive; fix the annotation file", where=where)
    return name


def _zip(path: str) -> zipfile.ZipFile:
    zf = _zips.get(path)
    if zf is None:
        zf = zipfile.ZipFile(path)
        _zips[path] = zf
        while len(_zips) > _MAX_ZIPS:
            _zips.popitem(last=False)[1].close()
    else:
        _zips.move_to_end(path)
    return zf


def _parquet_cell(ref: ImageRef) -> bytes:
    import pyarrow.parquet as pq
    from pyarrow import ArrowException as ArrowError

    column = ref.member or "image"
    key = (ref.path, ref.row_group, column)
    cells = _row_groups.get(key)
    if cells is None:
        try:
            table = pq.ParquetFile(ref.path).read_row_group(ref.row_group, columns=[column])
        except (OSError, ValueError, ArrowError) as exc:  # corrupt pages: pyarrow raises ArrowInvalid/OSError
            raise SampleError(
                f"{ref.describe()}: the parquet file is corrupt ({exc.__class__.__name__}: {exc}); re-download it"
            ) from exc
        cells = table.column(0).to_pylist()
        _row_groups[key] = cells
        while len(_row_groups) > _MAX_ROW_GROUPS:
            _row_groups.popitem(last=False)
    else:
        _row_groups.move_to_end(key)
    try:
        cell = cells[ref.row]
    except IndexError:
        raise SampleError(f"{ref.describe()}: the parquet file has no such row; re-download the dataset") from None
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if not data:
        raise SampleError(f"{ref.describe()}: the image cell holds no bytes")
    return bytes(data)


def read_image_bytes(ref: ImageRef) -> bytes:
    """Return the encoded bytes behind ``ref``; a missing file or member becomes a :class:`SampleError`."""
    try:
        with _lock:
            if ref.kind == "file":
                return Path(ref.path).read_bytes()
            if ref.kind == "zip":
                return _zip(ref.path).read(ref.member or "")
            return _parquet_cell(ref)
    except SampleError:
        raise
    except (OSError, KeyError, IndexError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise SampleError(
            f"{ref.describe()}: image cannot be read ({exc.__class__.__name__}: {exc}); "
            "check that the dataset was downloaded completely"
        ) from exc


def decode_image(data: bytes, *, where: str, size: int | None) -> Image.Image:
    """Decode image bytes to RGB, resized to ``size`` x ``size`` when ``size`` is truthy."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im.convert("RGB")
    except Image.DecompressionBombError as exc:
        # PIL refuses images over 2 x MAX_IMAGE_PIXELS (a decompression bomb); it is not an OSError.
        raise SampleError(
            f"{where}: image refused as a possible decompression bomb ({exc}); remove this sample or check the file"
        ) from exc
    except UnidentifiedImageError as exc:
        # PIL's own message names the in-memory buffer by its address, which would make two identical runs'
        # skip reasons differ.
        raise SampleError(
            f"{where}: image is corrupt or not an image (no format PIL reads); re-download or remove this sample"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise SampleError(
            f"{where}: image is corrupt or not an image ({_ADDRESS.sub('>', str(exc))}); re-download or remove "
            "this sample"
        ) from exc
    if size:
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return rgb


def open_image(ref: ImageRef, size: int | None) -> Image.Image:
    """Open ``ref`` as an RGB PIL image, resized to ``size`` x ``size`` unless ``size`` is falsy."""
    return decode_image(read_image_bytes(ref), where=ref.describe(), size=size)
