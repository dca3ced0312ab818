"""Readers for the datasets' original files: JSON lists, CSV, restricted pickles, parquet mirrors, checksums.

Every reader names the file (and row) in its errors, so a user can find and fix the bad input.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medbench.errors import DataError


def mirror_text(value: Any) -> str:
    """The mirror's own clean-up of questions and answers (its scripts/processing.py): lowercase, collapse
    repeated spaces, drop the space before '?', strip."""
    return re.sub(" +", " ", str(value).lower()).replace(" ?", "?").strip()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Streaming sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def listing_checksum(folder: Path) -> str:
    """A cheap fingerprint of an image folder: sha256 over sorted (relative path, size) pairs."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def read_json_records(path: Path) -> list[dict[str, Any]]:
    """Read a JSON file holding a list of objects (SLAKE splits, VQA-RAD's public JSON)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}); "
            "re-download the file or fix it"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of question records, found {type(data).__name__}")
    return data


def read_csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str] | str]]:
    """Yield ``(line_number, row)`` for each data row of a CSV with a header.

    A malformed row (wrong number of fields) is yielded as ``(line_number, error_message)`` instead of a
    dict, so the caller can count it as skipped and carry on.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty file, expected a header with columns {', '.join(required)}") from None
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: header {header} lacks column(s) {missing}; expected {list(required)}")
    try:
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                yield (
                    line,
                    f"{path}:{line}: malformed CSV row ({len(fields)} fields, header has {len(header)})",
                )
                continue
            yield line, dict(zip(header, fields, strict=True))
    except csv.Error as exc:
        yield reader.line_num, f"{path}:{reader.line_num}: malformed CSV ({exc}); rows after it were not read"


# Old pickle protocols (0-2) build sets and frozensets by calling the builtin type; these constructors only make
# plain containers, so they are the one exception to "no globals".
_PLAIN_CONSTRUCTORS = frozenset({"set", "frozenset", "list", "tuple", "dict"})


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global except the plain container types, so nothing else can be
    imported or called.

    Plain lists, dicts, tuples, strings, numbers, booleans and None have opcodes of their own and never need
    ``find_class``; anything else (a class, a function such as ``os.system``) needs it and is refused before it
    is looked up, so the payload never runs.
    """

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _PLAIN_CONSTRUCTORS:
            return {"set": set, "frozenset": frozenset, "list": list, "tuple": tuple, "dict": dict}[name]
        raise pickle.UnpicklingError(f"refused to import {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id")


def read_plain_pickle(path: Path) -> Any:
    """Load a pickle that may contain only plain data (PathVQA's ``*_qa.pkl``).

    A pickle that tries to import anything raises :class:`DataError` naming the file and what it tried to
    import; the payload is never executed.
    """
    try:
        with path.open("rb") as fh:
            return _PlainDataUnpickler(fh, encoding="utf-8").load()
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{path}: unsafe or invalid pickle ({exc}). medbench only reads pickles of plain lists/dicts/strings/"
            "numbers; this file is not the original PathVQA annotation file — re-download it from the dataset's "
            "official source"
        ) from exc
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as a pickle ({exc}); re-download it") from exc


def parquet_files(root: Path, split: str) -> list[Path]:
    """Parquet shards of ``split`` in a Hugging Face mirror snapshot (``data/<split>-*.parquet``)."""
    found = sorted(root.glob(f"data/{split}-*.parquet")) or sorted(root.glob(f"{split}-*.parquet"))
    return found


def read_parquet_rows(path: Path, columns: list[str]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Yield ``(row_group, row_in_group, {column: value})`` for the given non-image columns of a parquet file."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a broken file
        raise DataError(f"{path}: not a readable parquet file ({exc}); re-download it") from exc
    names = pf.schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{path}: parquet file lacks column(s) {missing}; has {names}")
    for group in range(pf.num_row_groups):
        table = pf.read_row_group(group, columns=columns)
        for row, record in enumerate(table.to_pylist()):
            yield group, row, record


def read_mirror_split(
    root: Path, split: str, columns: list[str], image_column: str = "image"
) -> Iterator[tuple[str, dict[str, Any], str | None, Any]]:
    """Rows of a Hugging Face mirror split: ``(where, record, image_sha1, image_ref)``.

    The image column (a ``{bytes, path}`` struct) is read one row group at a time to hash each image (the
    content hash is the id for mirrors without a native one); ``image_sha1`` is None for a row without image
    bytes. ``image_ref`` is a lazy :class:`~medbench.schema.ImageRef` to the cell.
    """
    import pyarrow.parquet as pq

    from medbench.schema import ImageRef

    for path in parquet_files(root, split):
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:
            raise DataError(f"{path}: not a readable parquet file ({exc}); re-download it") from exc
        names = pf.schema_arrow.names
        missing = [c for c in [*columns, image_column] if c not in names]
        if missing:
            raise DataError(f"{path}: parquet file lacks column(s) {missing}; has {names}")
        offset = 0
        for group in range(pf.num_row_groups):
            table = pf.read_row_group(group, columns=[*columns, image_column])
            records = table.select(columns).to_pylist()
            images = table.column(image_column).to_pylist()
            for row, (record, cell) in enumerate(zip(records, images, strict=True)):
                data = cell.get("bytes") if isinstance(cell, dict) else cell
                digest = hashlib.sha1(data).hexdigest() if data else None
                if isinstance(cell, dict) and cell.get("path"):
                    record = {**record, "_image_path": cell["path"]}
                where = f"{path.name} row {offset + row}"
                yield where, record, digest, ImageRef("parquet", str(path), image_column, group, row)
            offset += table.num_rows


def mirror_checksums(root: Path, split: str) -> dict[str, str]:
    """sha256 of every parquet shard of ``split``."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in parquet_files(root, split)}
