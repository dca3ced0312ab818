"""The shared readers (medbench.tasks._readers): CSV that never lets one bad row swallow or drop the rest,
per-row UTF-8 decoding, JSON decoding errors with their position, and corrupt parquet pages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_pathvqa, build_rocov2, build_slake, load_split

from medbench.errors import DataError
from medbench.tasks._readers import read_csv_rows


def rows_of(tmp_path: Path, data: bytes) -> list[tuple[int, dict[str, str] | str]]:
    path = tmp_path / "captions.csv"
    path.write_bytes(data)
    return list(read_csv_rows(path, ("ID", "Caption")))


def test_a_stray_quote_costs_one_row_not_the_rest_of_the_file(tmp_path: Path) -> None:
    """Guards item 1: the csv module used to read the stray quote's field up to the next quote in the file,
    swallowing every row in between into one caption (exit 0, skipped: 0)."""
    rows = rows_of(
        tmp_path,
        b'ID,Caption\r\nA1,first\r\nA2,"stray quote, never closed\r\nA3,third\r\nA4,"quoted, fine"\r\nA5,fifth\r\n',
    )
    assert [line for line, _ in rows] == [2, 3, 4, 5, 6]
    assert rows[0][1] == {"ID": "A1", "Caption": "first"}
    assert isinstance(rows[1][1], str) and "captions.csv:3: unbalanced quote" in rows[1][1]
    assert "line 4 starts a new row" in rows[1][1]
    assert [r for _, r in rows[2:]] == [
        {"ID": "A3", "Caption": "third"},
        {"ID": "A4", "Caption": "quoted, fine"},
        {"ID": "A5", "Caption": "fifth"},
    ]


def test_a_quote_left_open_at_the_end_of_the_file_is_one_skipped_row(tmp_path: Path) -> None:
    rows = rows_of(tmp_path, b'ID,Caption\nA1,first\nA2,"open to the end\n')
    assert rows[0][1] == {"ID": "A1", "Caption": "first"}
    assert isinstance(rows[1][1], str) and "never closed before the end of the file" in rows[1][1]
    assert len(rows) == 2


def test_a_quoted_field_may_span_lines_that_do_not_start_a_row(tmp_path: Path) -> None:
    rows = rows_of(tmp_path, b'ID,Caption\nA1,"two\nlines"\nA2,next\n')
    assert rows == [(2, {"ID": "A1", "Caption": "two\nlines"}), (4, {"ID": "A2", "Caption": "next"})]


def test_an_over_long_field_is_read(tmp_path: Path) -> None:
    """Guards item 1: a field over csv.field_size_limit (128 KiB) used to stop the file with one skip."""
    caption = "x" * 300_000
    rows = rows_of(tmp_path, f'ID,Caption\nA1,"{caption}"\nA2,next\n'.encode())
    assert rows == [(2, {"ID": "A1", "Caption": caption}), (3, {"ID": "A2", "Caption": "next"})]


def test_one_non_utf8_byte_costs_one_row(tmp_path: Path) -> None:
    """Guards item 4: one bad byte used to refuse the whole file without naming the row."""
    rows = rows_of(tmp_path, b"\xef\xbb\xbfID,Caption\r\nA1,caf\xc3\xa9\r\nA2,caf\xe9 latin-1\r\nA3,ok\r\n")
    assert rows[0] == (2, {"ID": "A1", "Caption": "café"})
    assert rows[1][0] == 3 and rows[1][1] == (
        f"{tmp_path / 'captions.csv'}:3: not valid UTF-8 (byte 0xe9 at column 7); fix or remove this row"
    )
    assert rows[2] == (4, {"ID": "A3", "Caption": "ok"})


def test_field_count_and_quoting_errors_are_rows_and_blank_lines_are_not(tmp_path: Path) -> None:
    rows = rows_of(tmp_path, b'ID,Caption\n\nA1,a,b\n   \nA2,"x"y\n,\n')
    assert [line for line, _ in rows] == [3, 5, 6]
    assert "malformed CSV row (3 fields, header has 2)" in str(rows[0][1])
    assert "captions.csv:5: malformed CSV row" in str(rows[1][1])
    assert rows[2][1] == {"ID": "", "Caption": ""}  # a row; the task skips it for its empty ID


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty first line"),
        (b"Name,Text\nA1,x\n", r"lacks column\(s\) \['ID', 'Caption'\]"),
        (b'ID,"Caption\nA1,x\n', r"captions\.csv:1: the header cannot be read"),
        ("ID,Caption\nA1,x\n".encode("utf-16"), r"captions\.csv:1: NUL byte; this is not a UTF-8 text CSV"),
    ],
)
def test_files_whose_rows_cannot_be_told_apart_stop_with_data_error(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message):
        rows_of(tmp_path, data)


def test_rocov2_counts_a_bad_byte_row_and_loads_the_others(tmp_path: Path) -> None:
    root = build_rocov2(tmp_path / "rocov2")
    with (root / "test_captions.csv").open("ab") as fh:
        fh.write(b"ROCOv2_2023_test_000009,bad \xff byte\n")
    split = load_split("rocov2", root)
    assert [s.id for s in split.samples] == ["ROCOv2_2023_test_000001", "ROCOv2_2023_test_000002"]
    assert [s.reason.split(": ", 1)[1] for s in split.skipped] == [
        "not valid UTF-8 (byte 0xff at column 29); fix or remove this row"
    ]


def test_json_that_is_not_utf8_names_the_byte_offset_and_line(tmp_path: Path) -> None:
    root = build_slake(tmp_path / "slake")
    text = json.dumps([{"qid": 1, "question": "Q?", "answer": "A"}], indent=1).encode()
    bad = text.replace(b'"A"', b'"\xe9"')
    (root / "test.json").write_bytes(bad)
    offset = bad.index(b"\xe9")
    with pytest.raises(DataError, match=rf"test\.json: not valid UTF-8 at byte offset {offset} \(line 5, column 14"):
        load_split("slake", root)


# --- parquet ---------------------------------------------------------------------------------------------
def corrupt_question_pages(shard: Path) -> None:
    """Overwrite the compressed data pages of the question column (in the middle of the file: after the
    header, before the image pages and the footer) with junk; the footer stays intact."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(shard).metadata.row_group(0).column(0)
    assert meta.path_in_schema == "question"
    data = bytearray(shard.read_bytes())
    start = meta.data_page_offset + 8
    data[start : start + meta.total_compressed_size - 8] = b"\xff" * (meta.total_compressed_size - 8)
    shard.write_bytes(bytes(data))


def test_corrupt_parquet_pages_are_a_data_error_naming_file_and_row_group(tmp_path: Path) -> None:
    """Guards item 10: read_row_group's OSError/ArrowInvalid used to escape as a traceback."""
    root = build_pathvqa(tmp_path / "pathvqa", mirror=True)
    shard = next((root / "data").glob("test-*.parquet"))
    corrupt_question_pages(shard)
    with pytest.raises(DataError, match=rf"{shard.name}: row group 0 of 1 cannot be read \(.*re-download it"):
        load_split("pathvqa", root)


def test_corrupt_parquet_exits_2_without_a_traceback(tmp_path: Path) -> None:
    root = build_pathvqa(tmp_path / "data" / "pathvqa", mirror=True)
    corrupt_question_pages(next((root / "data").glob("test-*.parquet")))
    argv = ["run", "--tasks", "pathvqa", "--models", "yes", "--data-dir", str(tmp_path / "data")]
    result = subprocess.run(
        [sys.executable, "-m", "medbench.cli", *argv, "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "row group 0 of 1 cannot be read" in result.stderr and "Traceback" not in result.stderr
