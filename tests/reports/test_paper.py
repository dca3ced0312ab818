"""The bundled copy of the LLaMA32-Med paper's Table 1 and Table 2 (medbench.reports.paper).

The transcription is checked cell by cell against the paper's text (parsed independently here) when the text is
available, so a mistyped number, a dropped row or a wrong type/group fails; a few hard-coded cells keep a check
when it is not.
"""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from medbench.errors import DataError, UsageError
from medbench.reports import paper
from medbench.reports.paper import PaperRow, paper_columns, paper_row, paper_rows, parse_table

PAPER_TEXT = Path("/work/shared/seed/LLaMA32-Med.txt")
VQA_TASKS = ("slake", "pathvqa", "vqa_rad")
VQA_METRICS = ("closed_accuracy", "open_accuracy", "overall_accuracy")
CAPTION_METRICS = ("judge_score", "bleu", "token_recall", "bertscore_f1")
# "M2I2 (Li et al., 2023b)" -> method, reference; "LLaMA32-Med (Human Evaluation)" has no year, so stays whole
_LABEL = re.compile(r"^(?P<method>.+?) \((?P<ref>[^()]*\d{4}[a-z]?)\)$")


def _table_lines(text: str, caption: str) -> list[list[str]]:
    """The tab-separated lines of the table whose caption starts with ``caption``, up to the blank line after it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(caption))
    body = [line for line in lines[start + 1 :]]
    while not body[0].strip():
        body.pop(0)
    end = next((i for i, line in enumerate(body) if not line.strip()), len(body))
    return [line.split("\t") for line in body[:end]]


def _split_label(label: str) -> tuple[str, str | None]:
    match = _LABEL.match(label)
    return (match["method"], match["ref"]) if match else (label, None)


def _parse_table1(text: str) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """(columns as (dataset, Closed/Open/Overall), rows as dicts) of the paper's Table 1.

    The Type column is a merged cell in the paper: an empty cell repeats the type above it."""
    header, sub, *body = _table_lines(text, "Table 1:")
    datasets: list[str] = []
    for cell in header[2:]:
        datasets.append(cell or datasets[-1])
    columns = list(zip(datasets, sub[2:], strict=False))[:9]
    rows, group, kind = [], None, None
    for cells in body:
        if not any(c.strip() for c in cells[1:]):
            group = cells[0]
            continue
        kind = cells[1] or kind
        method, reference = _split_label(cells[0])
        values = [None if c == "-" else float(c) for c in cells[2:11]]
        rows.append({"method": method, "reference": reference, "type": kind, "group": group, "values": values})
    return columns, rows


def _parse_table2(text: str) -> tuple[list[str], list[dict[str, Any]]]:
    header, *body = _table_lines(text, "Table 2:")
    return header[1:], [{"method": c[0], "values": [float(v) for v in c[1:]]} for c in body]


def _table1_mismatches(rows: list[PaperRow], text: str) -> list[str]:
    """Every difference between the bundled Table 1 rows and the paper's text, as readable lines."""
    columns, parsed = _parse_table1(text)
    names = paper_columns()
    by_paper = {
        (names[t]["paper_name"], m["paper_column"]): (t, k) for t in VQA_TASKS for k, m in names[t]["metrics"].items()
    }
    ours = {r.method: r for r in rows if r.table == "Table 1"}
    problems = [f"row {m!r} is not in the paper" for m in sorted(set(ours) - {p["method"] for p in parsed})]
    for want in parsed:
        row = ours.get(want["method"])
        if row is None:
            problems.append(f"row {want['method']!r} is missing")
            continue
        for attr in ("reference", "type", "group"):
            if getattr(row, attr) != want[attr]:
                problems.append(f"{row.method}: {attr} {getattr(row, attr)!r} != paper {want[attr]!r}")
        for column, pct in zip(columns, want["values"], strict=True):
            task, metric = by_paper[column]
            expected = None if pct is None else round(pct / 100, 4)
            if row.value(task, metric) != expected:
                problems.append(f"{row.method} {task}.{metric}: {row.value(task, metric)} != paper {pct}")
    return problems


@pytest.fixture(scope="module")
def paper_text() -> str:
    if not PAPER_TEXT.is_file():
        pytest.skip(f"{PAPER_TEXT} is absent: cannot check the transcription against the paper")
    return PAPER_TEXT.read_text(encoding="utf-8")


def test_table1_matches_paper_cell_by_cell(paper_text: str) -> None:
    assert _table1_mismatches(paper_rows(), paper_text) == []


def test_table1_checker_catches_a_transcription_error(paper_text: str) -> None:
    # guards the check above: one changed cell, one dropped row and a wrong type must each be reported
    rows = paper_rows()
    bad = copy.deepcopy({t: dict(v) for t, v in rows[0].values.items()})
    bad["slake"]["open_accuracy"] = 0.748  # paper: 74.7
    tampered = [PaperRow(**{**rows[0].__dict__, "values": bad, "type": "LLMs"}), *rows[2:]]
    problems = _table1_mismatches(tampered, paper_text)
    assert any("slake.open_accuracy" in p for p in problems)
    assert any("type" in p for p in problems)
    assert "row 'VQA-Adapter' is missing" in problems


def test_table1_columns_match_paper(paper_text: str) -> None:
    columns, _ = _parse_table1(paper_text)
    names = paper_columns()
    ours = [(names[t]["paper_name"], names[t]["metrics"][m]["paper_column"]) for t in VQA_TASKS for m in VQA_METRICS]
    assert ours == columns


def test_table2_matches_paper(paper_text: str) -> None:
    header, parsed = _parse_table2(paper_text)
    metrics = paper_columns()["rocov2"]["metrics"]
    assert [metrics[m]["paper_column"] for m in CAPTION_METRICS] == header
    ours = [r for r in paper_rows() if r.table == "Table 2"]
    assert [r.method for r in ours] == [p["method"] for p in parsed]
    for row, want in zip(ours, parsed, strict=True):
        # Table 2 is stored as printed: BLEU/Recall/BERTScore are already fractions, the judge score is 1-5
        assert [row.value("rocov2", m) for m in CAPTION_METRICS] == want["values"], row.method


def test_spot_cells_without_the_paper() -> None:
    # hard-coded from the paper, so a damaged table fails even where the paper's text is not available
    assert paper_row("M2I2").value("slake", "closed_accuracy") == 0.911
    assert paper_row("MMQ").value("slake", "overall_accuracy") is None
    assert paper_row("LLaMA32-Med").value("pathvqa", "closed_accuracy") == 0.924
    assert paper_row("LLaMA32-Med (Human Evaluation)").value("vqa_rad", "open_accuracy") == 0.625
    assert paper_row("LLaMA 3.2 Vision Instruct").value("pathvqa", "open_accuracy") == 0.027
    table2 = paper_row("LLaMA32-Med", table="Table 2").values["rocov2"]
    assert dict(table2) == {"judge_score": 3.8, "bleu": 0.047, "token_recall": 0.358, "bertscore_f1": 0.8467}
    assert paper_row("Original LLaMA 3.2", table="Table 2").value("rocov2", "bertscore_f1") == 0.8165


def test_every_row_and_column_present() -> None:
    rows = paper_rows()
    table1 = [r for r in rows if r.table == "Table 1"]
    assert [r.method for r in table1] == [
        "M2I2", "VQA-Adapter", "MMQ", "PubMedCLIP", "CLIP-ViT w/GPT2", "BiomedGPT", "LLaVA-Med",
        "HuatuoGPT-Vision", "MedGemma", "LLaMA 3.2 Vision Instruct", "LLaMA32-Med", "LLaMA32-Med (Human Evaluation)",
    ]  # fmt: skip
    assert [r.group for r in table1] == [paper.GROUPS[0]] * 9 + [paper.GROUPS[1]] + [paper.GROUPS[2]] * 2
    assert [r.type for r in table1] == ["Non-LLMs"] * 4 + ["LLMs"] * 8
    for row in table1:
        assert list(row.values) == list(VQA_TASKS), row.method
        for task in VQA_TASKS:
            assert list(row.values[task]) == list(VQA_METRICS), (row.method, task)
            assert all(v is None or 0 <= v <= 1 for v in row.values[task].values())
    table2 = [r for r in rows if r.table == "Table 2"]
    assert [r.method for r in table2] == ["LLaMA32-Med", "Original LLaMA 3.2"]
    assert all(list(r.values) == ["rocov2"] and list(r.values["rocov2"]) == list(CAPTION_METRICS) for r in table2)
    assert {r.citation for r in rows} == {paper.citation()["key"]}


def test_labels_as_printed() -> None:
    assert paper_row("M2I2").label == "M2I2 (Li et al., 2023b)"
    assert paper_row("LLaMA32-Med (Human Evaluation)").label == "LLaMA32-Med (Human Evaluation)"


def test_citation() -> None:
    cite = paper.citation()
    assert cite["title"].startswith("LLaMA32-Med: Parameter-Efficient Adaptation")
    assert cite["authors"] == ["Wanqi Dong", "Jingze Ge", "Wanyue Dong", "Mehul Motani"]
    assert cite["tables"] == "Table 1 (Section 4.1) and Table 2 (Section 4.3)"
    assert set(cite["table_sections"]) == {"Table 1", "Table 2"}
    assert "medbench did not measure" in cite["note"]
    cite["title"] = "changed"  # a copy: the next caller still sees the original
    assert paper.citation()["title"] != "changed"


def test_rows_are_read_only() -> None:
    row = paper_rows()[0]
    with pytest.raises(TypeError):
        row.values["slake"]["closed_accuracy"] = 1.0  # type: ignore[index]
    assert paper_rows()[0] == row


def test_unknown_row_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"no row 'GPT-9'.*M2I2"):
        paper_row("GPT-9")


def _raw() -> dict[str, Any]:
    path = resources.files("medbench.reports").joinpath(paper.DATA_FILE)
    return json.loads(path.read_text(encoding="utf-8"))


def test_parse_table_accepts_the_bundled_file() -> None:
    assert list(parse_table(_raw())) == paper_rows()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # a percentage left unconverted (91.1 instead of 0.911) must not pass as a fraction
        (lambda raw: raw["rows"][0]["values"]["slake"].update(closed_accuracy=91.1), r"rows\[0\] \(M2I2\) slake"),
        (lambda raw: raw["rows"][1]["values"]["vqa_rad"].pop("open_accuracy"), r"VQA-Adapter.*exactly the metrics"),
        (lambda raw: raw["rows"][2]["values"].update(mimic={}), r"MMQ.*unknown task 'mimic'"),
        (lambda raw: raw["rows"][3].update(type="LLM"), r"PubMedCLIP.*type 'LLM'"),
        (lambda raw: raw["rows"][12]["values"]["rocov2"].update(judge_score=0.5), r"rocov2.judge_score"),
        (lambda raw: raw["rows"][4].update(method="M2I2"), r"lists 'M2I2' twice"),
        (lambda raw: raw["rows"][5]["values"]["slake"].update(bleu="x"), r"exactly the metrics"),
    ],
)
def test_parse_table_rejects_damage(edit: Any, message: str) -> None:
    raw = _raw()
    edit(raw)
    with pytest.raises(DataError, match=message) as info:
        parse_table(raw, "llama32med_paper.json")
    assert str(info.value).startswith("llama32med_paper.json")
    assert "reinstall medbench" in str(info.value)
