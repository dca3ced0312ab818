"""Readers for the datasets' original files: JSON lists, CSV, restricted pickles, parquet mirrors, checksums.

Every reader names the file (and row) in its errors, so a user can find and fix the bad input. Readers that go
row by row (CSV, parquet) report a bad row as a row, so the task can count it as skipped and carry on; only a
problem that makes the rows themselves impossible to tell apart stops the task with :class:`DataError`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
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


def value_kind(value: Any) -> str:
    """The JSON type of ``value`` with its article ("a list", "an object"), for messages: never a repr, which
    could hold a memory address or a whole list."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def id_text(value: Any) -> str | None:
    """An id field (a qid, an image ID) as text for metadata and skip entries, None when it is not usable."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value).strip() or None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Streaming sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc.__class__.__name__})") from exc


def decode_text_file(path: Path, data: bytes) -> str:
    """The whole of ``data`` (the bytes of ``path``) as UTF-8 text, without a leading byte-order mark.

    For files that cannot be read row by row (JSON): one bad byte stops the task, with its byte offset, line
    and column so the user can find it.
    """
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        raise DataError(
            f"{path}: not valid UTF-8 at byte offset {offset} (line {line}, column {column}: byte "
            f"0x{data[offset]:02x}); this file cannot be read row by row, so re-save it as UTF-8 or re-download it"
        ) from None


def read_json_records(path: Path) -> list[Any]:
    """Read a JSON file holding a list of records (SLAKE splits, VQA-RAD's public JSON).

    The items are returned as they are: the caller counts an item that is not an object as a skipped row.
    """
    text = decode_text_file(path, _read_bytes(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}); "
            "re-download the file or fix it"
        ) from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of question records, found {type(data).__name__}")
    return data


# --- CSV ---------------------------------------------------------------------------------------------------
# A line that begins like a new row: an unquoted first field without spaces, then a comma (``ROCOv2_..._000012,``).
# A quoted field may legitimately span lines, but never across such a line: that is a stray quote, and letting
# the csv module carry on would swallow every later row into one field.
_ROW_START = re.compile(r'[^\s",]+,')
_UNTERMINATED = "unterminated quoted field"
# The csv module's default limit (128 KiB per field) is a guard against runaway quotes. Here a runaway quote
# cannot get past the next row, so the limit only refuses long captions; raise it (2**31 - 1 fits a C long on
# every platform).
_FIELD_LIMIT = 2**31 - 1


def _csv_fields(text: str) -> tuple[list[str] | None, str | None]:
    """Parse ``text`` as exactly one CSV record: ``(fields, None)`` or ``(None, problem)``."""
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        message = str(exc)
        return None, _UNTERMINATED if "unexpected end of data" in message else message
    if len(rows) != 1:
        return None, "not exactly one CSV record"
    return rows[0], None


def _csv_line(raw: bytes) -> tuple[str | None, str | None]:
    """One physical line (without its ``\\n``; the ``\\r`` of CRLF endings is dropped) as ``(text, None)``, or
    ``(None, "not valid UTF-8 (byte 0x.. at column N)")`` with the 1-based byte column of the first bad byte."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"


def _csv_header(path: Path, lines: list[bytes], required: tuple[str, ...]) -> list[str]:
    """The stripped column names of line 1; a header that is missing, unreadable or lacks a required column is a
    :class:`DataError` (without it no row can be read)."""
    if not lines or not lines[0].strip():
        raise DataError(f"{path}: empty first line, expected a header with columns {', '.join(required)}")
    text, problem = _csv_line(lines[0])
    fields, error = _csv_fields(text) if text is not None else (None, problem)
    if fields is None:
        raise DataError(f"{path}:1: the header cannot be read ({error}); expected columns {', '.join(required)}")
    header = [h.strip() for h in fields]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: header {header} lacks column(s) {missing}; expected {list(required)}")
    return header


def read_csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str] | str]]:
    """Yield ``(line_number, row)`` for every record of a CSV file with a header (UTF-8, CRLF or LF endings).

    Every record is yielded exactly once, so the caller can count it: as a dict of the header's columns, or,
    for a record that cannot be used, as ``(line_number, message)`` naming the file, line and problem (wrong
    number of fields, a quote that is never closed, bytes that are not UTF-8). Lines are decoded one by one,
    so one bad byte costs one row. A quoted field may span lines, but never into a line that starts like a
    new row (see ``_ROW_START``): then the opening line is reported as a row with an unbalanced quote and
    reading goes on at the next line. Blank lines are not records. A file whose lines cannot be told apart
    (NUL bytes: UTF-16 or binary) or whose header is unusable raises :class:`DataError`.
    """
    data = _read_bytes(path)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise DataError(
            f"{path}:{line}: NUL byte; this is not a UTF-8 text CSV (perhaps UTF-16 or binary). "
            "Re-save it as UTF-8 CSV or re-download it"
        )
    lines = data.split(b"\n")
    header = _csv_header(path, lines, required)
    index = 1
    while index < len(lines):
        number = index + 1
        text, problem = _csv_line(lines[index])
        if text is None:
            yield number, f"{path}:{number}: {problem}; fix or remove this row"
            index += 1
            continue
        if not text.strip():
            index += 1
            continue
        last, fields, problem, unclosed = _csv_record(lines, index, text)
        if unclosed is not None:
            yield (
                number,
                f"{path}:{number}: unbalanced quote: the quoted field opened on this line {unclosed}; fix the "
                "quoting of this row (the rows after it were read on their own)",
            )
            index += 1  # the lines tried as a continuation are read again as rows of their own
            continue
        span = f"{number}" if last == index else f"{number}-{last + 1}"
        index = last + 1
        if fields is None:
            yield number, f"{path}:{span}: malformed CSV row ({problem}); fix the quoting of this row"
        elif len(fields) != len(header):
            yield number, f"{path}:{span}: malformed CSV row ({len(fields)} fields, header has {len(header)})"
        else:
            yield number, dict(zip(header, fields, strict=True))


def _csv_record(lines: list[bytes], index: int, text: str) -> tuple[int, list[str] | None, str | None, str | None]:
    """Parse the record that starts at ``lines[index]`` (already decoded as ``text``).

    Returns ``(last line index, fields, problem, unclosed)``: ``fields`` or a csv ``problem``; ``unclosed``
    says where a quoted field that never closes stopped. Such a field is continued on the following lines, but
    not into a line that starts a new row or is not UTF-8, nor past the end of the file.
    """
    fields, problem = _csv_fields(text)
    last = index
    while problem == _UNTERMINATED:
        if last + 1 >= len(lines):
            return last, None, problem, "is never closed before the end of the file"
        following, bad_bytes = _csv_line(lines[last + 1])
        if following is None:
            return last, None, problem, f"is still open at line {last + 2}, which is {bad_bytes}"
        if _ROW_START.match(following):
            return last, None, problem, f"is still open where line {last + 2} starts a new row"
        last += 1
        text = f"{text}\n{following}"
        fields, problem = _csv_fields(text)
    return last, fields, problem, None


# --- Pickle ------------------------------------------------------------------------------------------------
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


# --- Parquet (Hugging Face mirrors) ------------------------------------------------------------------------
def parquet_files(root: Path, split: str) -> list[Path]:
    """Parquet shards of ``split`` in a Hugging Face mirror snapshot (``data/<split>-*.parquet``)."""
    found = sorted(root.glob(f"data/{split}-*.parquet")) or sorted(root.glob(f"{split}-*.parquet"))
    return found


def _open_parquet(path: Path, columns: list[str]) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` that has ``columns``, else :class:`DataError`."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a broken file
        detail = " ".join(str(exc).split())
        raise DataError(f"{path}: not a readable parquet file ({detail}); re-download it") from exc
    names = pf.schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{path}: parquet file lacks column(s) {missing}; has {names}")
    return pf


def _row_group(pf: Any, path: Path, group: int, columns: list[str]) -> Any:
    """Row group ``group`` of ``pf`` as a table; corrupt pages become a :class:`DataError` naming the file and
    the row group (a row group is the smallest unit pyarrow can read, so its rows cannot be counted one by one)."""
    from pyarrow import ArrowException

    try:
        table = pf.read_row_group(group, columns=columns)
        table.validate(full=True)
        return table
    except (OSError, ValueError, ArrowException) as exc:  # corrupt pages: OSError, ArrowInvalid, ...
        detail = " ".join(str(exc).split())  # pyarrow's messages span lines
        raise DataError(
            f"{path}: row group {group} of {pf.num_row_groups} cannot be read ({exc.__class__.__name__}: {detail}); "
            "the file is damaged, re-download it"
        ) from exc


def read_parquet_rows(path: Path, columns: list[str]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Yield ``(row_group, row_in_group, {column: value})`` for the given non-image columns of a parquet file."""
    pf = _open_parquet(path, columns)
    for group in range(pf.num_row_groups):
        for row, record in enumerate(_row_group(pf, path, group, columns).to_pylist()):
            yield group, row, record


def read_mirror_split(
    root: Path, split: str, columns: list[str], image_column: str = "image"
) -> Iterator[tuple[str, dict[str, Any], str | None, Any]]:
    """Rows of a Hugging Face mirror split: ``(where, record, image_sha1, image_ref)``.

    The image column (a ``{bytes, path}`` struct) is read one row group at a time to hash each image (the
    content hash is the id for mirrors without a native one); ``image_sha1`` is None for a row without image
    bytes. ``image_ref`` is a lazy :class:`~medbench.schema.ImageRef` to the cell. ``where`` is
    ``<file name> row <n>`` (n counts from 0 over the whole file).
    """
    from medbench.schema import ImageRef

    for path in parquet_files(root, split):
        pf = _open_parquet(path, [*columns, image_column])
        offset = 0
        for group in range(pf.num_row_groups):
            table = _row_group(pf, path, group, [*columns, image_column])
            records = table.select(columns).to_pylist()
            images = table.column(image_column).to_pylist()
            for row, (record, cell) in enumerate(zip(records, images, strict=True)):
                data = cell.get("bytes") if isinstance(cell, dict) else cell
                digest = hashlib.sha1(data).hexdigest() if isinstance(data, bytes) and data else None
                if isinstance(cell, dict) and cell.get("path"):
                    record = {**record, "_image_path": cell["path"]}
                where = f"{path.name} row {offset + row}"
                yield where, record, digest, ImageRef("parquet", str(path), image_column, group, row)
            offset += table.num_rows


def mirror_checksums(root: Path, split: str) -> dict[str, str]:
    """sha256 of every parquet shard of ``split``."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in parquet_files(root, split)}
