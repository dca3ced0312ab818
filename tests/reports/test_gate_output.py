"""The gate's output (medbench.reports.gate_output) on hand-built GateReports: the terminal table, the pull-request
Markdown summary (escaping of everything that comes from the runs) and the GitHub step summary file."""

from __future__ import annotations

import html
import io
import re
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from medbench.errors import UsageError
from medbench.reports.gate import Comparison, GateReport
from medbench.reports.gate_output import append_step_summary, markdown, md_text, print_table

HOSTILE_MODEL = "hf:org/x|y`z`<script>alert(1)</script>\n| injected | row |"
HOSTILE_ANSWER = "yes | no\n\n<script>alert('x')</script> `code` <img src=x onerror=alert(1)> **bold** [a](http://e.x)"


def comp(**kw: Any) -> Comparison:
    """A comparison with plausible defaults; keyword arguments override any field."""
    fields: dict[str, Any] = {
        "task": "vqa_rad",
        "baseline_model": "base",
        "candidate_model": "cand",
        "protocol": "strict",
        "metric": "closed_accuracy",
        "test": "mcnemar_exact",
        "n": 400,
        "baseline_value": 0.812,
        "candidate_value": 0.824,
        "delta": 0.012,
        "ci95": (-0.003, 0.027),
        "p_value": 0.21,
        "p_holm": 0.63,
        "verdict": "no change",
    }
    fields.update(kw)
    return Comparison(**fields)


def regression(**kw: Any) -> Comparison:
    base: dict[str, Any] = {
        "metric": "overall_accuracy",
        "baseline_value": 0.80,
        "candidate_value": 0.75,
        "delta": -0.05,
        "ci95": (-0.08, -0.02),
        "p_value": 0.0001,
        "p_holm": 0.0004,
        "verdict": "regression",
        "why": "drop of 5.0 is larger than --max-drop and significant after Holm (p=0.0004)",
        "worse": ["s1", "s2", "s3"],
        "better": ["s9"],
        "examples": [
            {"id": "s1", "question": "is there a mass?", "reference": "yes", "baseline": "yes", "candidate": "no"},
            {"id": "s2", "question": "which organ?", "reference": "liver", "baseline": "liver", "candidate": ""},
            {"id": "s9", "question": "left or right?", "reference": "left", "baseline": "right", "candidate": "left"},
        ],
    }
    base.update(kw)
    return comp(**base)


def report(comparisons: list[Comparison], **kw: Any) -> GateReport:
    fields: dict[str, Any] = {
        "baseline": "leaderboard/baseline",
        "candidate": "runs/pr-123",
        "protocol": "strict",
        "alpha": 0.05,
        "max_drop": 0.01,
        "comparisons": comparisons,
        "pairs": [("base", "cand")],
    }
    fields.update(kw)
    return GateReport(**fields)


def table_text(rep: GateReport) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    print_table(rep, console)
    return console.export_text()


def mixed() -> GateReport:
    """One row of each verdict, on VQA and caption metrics."""
    return report(
        [
            comp(),
            regression(),
            comp(
                task="rocov2",
                protocol="caption",
                metric="judge_score",
                test="paired_bootstrap",
                baseline_value=3.456,
                candidate_value=3.701,
                delta=0.245,
                ci95=(0.11, 0.38),
                p_value=0.0002,
                p_holm=0.0006,
                verdict="improvement",
                excluded=3,
            ),
            comp(
                task="slake",
                metric="open_accuracy",
                delta=-0.004,
                ci95=(-0.041, 0.033),
                p_value=0.8,
                p_holm=1.0,
                verdict="inconclusive",
                samples_needed=2345,
                why="not significant (p=1 after Holm), but the CI allows a larger drop",
                worse=["a", "b"],
                better=["c"],
            ),
        ],
        allowed_changes={"prompt": ("v1", "v2")},
        notes=["5 ids scored by the baseline only were left out"],
    )


# --- the terminal table --------------------------------------------------------------------------------------------


def test_table_shows_every_row_in_points_and_pass_line() -> None:
    rep = report([comp(), comp(task="slake", metric="open_accuracy", candidate_model="base")])
    text = table_text(rep)
    assert "vqa_rad" in text and "slake" in text
    assert "base -> cand" in text
    # the same model on both sides shows once
    assert "base -> base" not in text
    assert "closed_accuracy (strict)" in text and "open_accuracy (strict)" in text
    assert "81.2" in text and "82.4" in text and "+1.2 [-0.3, +2.7]" in text
    assert "0.210" in text and "0.630" in text  # p and p(Holm)
    assert text.rstrip().splitlines()[-1] == "gate: PASS (exit 0)"


def test_table_fail_line_counts_regressions_and_shows_why_notes_changes() -> None:
    rep = mixed()
    rep.comparisons.append(regression(task="pathvqa"))
    text = table_text(rep)
    for task in ("vqa_rad", "rocov2", "slake", "pathvqa"):
        assert task in text
    assert "3.46" in text and "3.70" in text and "+0.24 [+0.11, +0.38]" in text  # judge_score on its 1-5 scale
    assert "judge_score" in text and "judge_score (caption)" not in text  # captions have no protocol suffix
    assert "400 (3 excluded)" in text
    assert "3 / 1" in text  # worse / better
    assert "1.0e-04" in text and "4.0e-04" in text
    assert "allowed change: prompt: 'v1' -> 'v2'" in text
    assert "note: 5 ids scored by the baseline only were left out" in text
    assert "drop of 5.0 is larger than --max-drop" in text
    assert text.rstrip().splitlines()[-1] == "gate: FAIL (2 regressions) (exit 1)"


def test_table_fail_on_inconclusive_names_it() -> None:
    rep = report([comp(verdict="inconclusive", samples_needed=900)], fail_on_inconclusive=True)
    assert table_text(rep).rstrip().splitlines()[-1] == "gate: FAIL (0 regressions, 1 inconclusive) (exit 1)"
    rep.fail_on_inconclusive = False
    assert table_text(rep).rstrip().splitlines()[-1] == "gate: PASS (exit 0)"


def test_table_colours_verdicts() -> None:
    console = Console(record=True, width=200, file=io.StringIO(), force_terminal=True, color_system="standard")
    print_table(mixed(), console)
    ansi = console.export_text(styles=True)
    assert re.search(r"\x1b\[[0-9;]*31m\s*regression", ansi)  # red
    assert re.search(r"\x1b\[[0-9;]*33m\s*inconclusive", ansi)  # yellow
    assert re.search(r"\x1b\[[0-9;]*32m\s*improvement", ansi)  # green


def test_table_prints_model_names_literally_not_as_markup() -> None:
    # Guards: a name holding rich markup must neither vanish nor restyle the table.
    text = table_text(report([comp(baseline_model="[bold red]m[/]", candidate_model="[link=x]c")]))
    assert "[bold red]m[/] -> [link=x]c" in text


def test_table_with_no_comparisons() -> None:
    text = table_text(report([]))
    assert "nothing was compared" in text and "gate: PASS (exit 0)" in text


# --- the Markdown summary ------------------------------------------------------------------------------------------


def _renderer() -> MarkdownIt:
    """CommonMark with raw HTML allowed plus GFM tables and strikethrough: as close to GitHub as markdown-it gets."""
    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _raw_table_rows(text: str) -> list[list[str]]:
    """The lines of the summary that are Markdown table rows, split into cells on their pipes."""
    return [line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("|")]


def test_markdown_headline_table_rows_and_holm() -> None:
    rep = mixed()
    text = markdown(rep)
    assert text.startswith("## medbench gate: FAIL (1 regression) (exit 1)\n")
    assert "1 regression, 1 improvement, 1 inconclusive, 1 no change" in text
    assert "--max-drop 0.01 (1 point; 0.04 on judge_score's 1-5 scale)" in text
    main_rows = [r for r in text.split("<details>")[0].splitlines() if r.startswith("| ")]
    assert len(main_rows) == 2 + len(rep.comparisons)  # header, alignment, one row per comparison
    regression_row = next(r for r in main_rows if "REGRESSION" in r)
    assert "1.0e-04" in regression_row and "4.0e-04" in regression_row  # p before and after Holm
    assert "-5.0 [-8.0, -2.0]" in regression_row
    assert "3 / 1" in regression_row
    inconclusive_row = next(r for r in main_rows if "inconclusive" in r)
    assert inconclusive_row.rstrip(" |").endswith("2,345")  # samples needed
    assert "- prompt: 'v1' -> 'v2'" in text
    assert "5 ids scored by the baseline only were left out" in text
    assert markdown(report([])).startswith("## medbench gate: PASS (exit 0)\n")


def test_markdown_details_only_for_regression_and_inconclusive() -> None:
    text = markdown(mixed())
    summaries = re.findall(r"<details><summary>(.*?)</summary>", text)
    assert len(summaries) == 2
    assert summaries[0].startswith("regression: vqa_rad, overall_accuracy (strict), base -&gt; cand: -5.0")
    assert summaries[1].startswith("inconclusive: slake")
    assert not any("improvement" in s or "no change" in s for s in summaries)
    block = text.split("<details>")[1]
    assert "is there a mass?" in block and "| s1 | worse |" in block and "| s9 | better |" in block
    assert "*(empty)*" in block  # an empty candidate answer stays visible
    # The inconclusive row has no example texts: its worse ids are listed instead.
    assert "Worse on: a, b." in text.split("<details>")[2]


def test_markdown_examples_limit() -> None:
    rep = report([regression()])
    assert "| s2 |" not in markdown(rep, examples=1) and "| s1 |" in markdown(rep, examples=1)
    no_examples = markdown(rep, examples=0)
    assert "<details>" in no_examples and "| s1 |" not in no_examples
    with pytest.raises(UsageError, match="examples"):
        markdown(rep, examples=-1)


def test_markdown_escapes_hostile_text() -> None:
    # Guards: model names, questions and answers come from the runs; none may break a table or inject HTML.
    hostile_example = {
        "id": "id|1",
        "question": "<b>q</b>\r\n| x |",
        "reference": "`ref`",
        "baseline": HOSTILE_ANSWER,
        "candidate": "&lt;script&gt; @octocat\n# heading",
    }
    rep = report(
        [
            regression(baseline_model=HOSTILE_MODEL, task="t|<i>", examples=[hostile_example], worse=["id|1"]),
            comp(candidate_model="<script>alert(2)</script>"),
        ],
        notes=["- <script>note</script>\n---"],
        allowed_changes={"prompt": ("a|b", "<c>")},
    )
    text = markdown(rep)
    # raw: every table row of a table has the same number of cells, and nothing raw survives
    rows = _raw_table_rows(text)
    assert len(rows) == 2 + 2 + 2 + 1  # main table (header, rule, 2 rows) + example table (header, rule, 1 row)
    assert {len(r) for r in rows[:4]} == {12} and {len(r) for r in rows[4:]} == {6}
    assert "<script" not in text and "<b>" not in text and "<img" not in text and "`" not in text
    # rendered: the same cell counts, no element the payload would add, every payload shown as text
    rendered = _renderer().render(text)
    for tr in re.findall(r"<tr>(.*?)</tr>", rendered, flags=re.S):
        assert len(re.findall(r"<t[hd][ >]", tr)) in (12, 6)
    assert len(re.findall(r"<tr>", rendered)) == 2 + 1 + 1 + 1  # two header rows, three body rows
    for tag in ("<script", "<img", "<b>", "<i>", "<a ", "<code>", "<h1>", "<hr", "<del>", "<ul>\n<li>\n<ul>"):
        assert tag not in rendered, tag
    assert re.findall(r"<strong>(.*?)</strong>", rendered) == ["REGRESSION"]  # only the verdict marker is bold
    shown = html.unescape(re.sub(r"<[^>]+>", " ", rendered))
    assert "<script>alert(1)</script>" in shown and "**bold**" in shown and "[a](http://e.x)" in shown
    assert "&lt;script&gt;" in shown  # text that looks like an entity stays that text
    assert "@\u2060octocat" in shown  # mentions nobody
    assert "t|<i>" in shown and "# heading" in shown


def test_md_text_block_starts_and_specials() -> None:
    assert md_text("# h") == "&#35; h"
    assert md_text("1. item") == "1&#46; item"
    assert md_text("- item") == "&#45; item"
    assert md_text("    code") == "&#32;&#32;&#32;&#32;code"
    assert md_text("a\\b*c*~d~") == "a&#92;b&#42;c&#42;&#126;d&#126;"
    assert md_text("vqa_rad _x_") == "vqa_rad &#95;x&#95;"  # intraword underscores never emphasise
    assert md_text("a\x00b") == "a\ufffdb"
    assert md_text("@octocat, hf:org/x@main") == "@\u2060octocat, hf:org/x@main"  # only a would-be mention changes
    assert md_text(["yes", "y"]) == "yes / y" and md_text(None) == ""
    assert md_text("abcdef", limit=4) == "abc…"
    assert md_text("<&>", limit=2) == "&lt;…"  # cut before escaping: no reference cut in half


def test_markdown_is_deterministic() -> None:
    assert markdown(mixed()) == markdown(mixed())
    assert not re.search(r"\d{4}-\d{2}-\d{2}|\d{2}:\d{2}:\d{2}", markdown(mixed()))


# --- the step summary ------------------------------------------------------------------------------------------------


def test_step_summary_unset_or_empty(tmp_path: Path) -> None:
    assert append_step_summary("x", environ={}) is None
    assert append_step_summary("x", environ={"GITHUB_STEP_SUMMARY": ""}) is None
    assert list(tmp_path.iterdir()) == []


def test_step_summary_appends(tmp_path: Path) -> None:
    target = tmp_path / "summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(target)}
    assert append_step_summary("first", environ=env) == target  # created when missing
    assert append_step_summary("second\n", environ=env) == target
    assert target.read_text(encoding="utf-8") == "first\n\nsecond\n"


def test_step_summary_after_text_without_newline(tmp_path: Path) -> None:
    target = tmp_path / "summary.md"
    target.write_text("other step", encoding="utf-8")
    append_step_summary("## gate", environ={"GITHUB_STEP_SUMMARY": str(target)})
    assert target.read_text(encoding="utf-8") == "other step\n\n## gate\n"


def test_step_summary_unwritable_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="GITHUB_STEP_SUMMARY"):
        append_step_summary("x", environ={"GITHUB_STEP_SUMMARY": str(tmp_path)})  # a directory
