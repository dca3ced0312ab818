"""What ``medbench gate`` shows: a rich table for the terminal, a Markdown summary for a pull request (and the
GitHub Actions step summary). The ``--json`` document is :meth:`GateReport.to_json` as is.

Everything that comes from the runs (model and task names, questions, references, model answers, paths, notes) is
escaped for Markdown tables *and* HTML before it reaches the summary (:func:`md_text`): a model answer holding
``|``, a newline, ``<script>`` or a backtick must neither break the table nor inject markup into a GitHub comment.
In the terminal table the same text goes in as :class:`rich.text.Text`, never as rich markup.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medbench.errors import UsageError
from medbench.reports.gate import JUDGE_RANGE, Comparison, GateReport, Verdict
from medbench.scoring.aggregate import CAPTION_PROTOCOL

if TYPE_CHECKING:
    from rich.console import Console

#: The terminal colour of each verdict ("no change" keeps the default colour).
VERDICT_STYLE: dict[str, str] = {"regression": "bold red", "inconclusive": "yellow", "improvement": "green"}
#: The Markdown table's marker of each verdict: words, no emoji (they read the same in every font and to a
#: screen reader, and grep finds them).
VERDICT_MARK: dict[str, str] = {
    "regression": "**REGRESSION**",
    "inconclusive": "*inconclusive*",
    "improvement": "improvement",
    "no change": "no change",
}
#: Rows whose flipped samples the summary spells out.
EXPLAINED: tuple[Verdict, ...] = ("regression", "inconclusive")
#: Longest question / answer shown in an example cell, in characters (cut before escaping, so no entity is cut in
#: half): a PR comment is capped at 65,536 characters and the step summary at 1 MiB.
MAX_CELL_CHARS = 300
#: How many flipped ids a details block lists when the comparison carries no examples.
MAX_LISTED_IDS = 20

# Characters with a meaning in Markdown (tables, code spans, emphasis, links, strikethrough, escapes) or HTML,
# written as numeric character references: those render as the character itself, in a Markdown table cell and
# inside an HTML block (<summary>) alike, and never act as syntax. Backslash escapes would show up literally
# inside HTML blocks. Data never goes inside a code span (references are not decoded there) or an attribute.
_ENTITIES = {c: f"&#{ord(c)};" for c in "|`\\*_[]~"}
_ENTITIES.update({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
# ``_`` between two letters or digits never emphasises (GFM), so ``vqa_rad`` stays readable in the raw text.
_SPECIAL = re.compile(r"[&<>|`\\*\[\]~]|(?<![^\W_])_|_(?![^\W_])")
# What would start a heading, list item, setext underline or code block at the start of a line (the text may be
# the first thing on a line: a note in a list, the reason under a details summary).
# Leading blanks count too: four make an indented code block.
_BLOCK_START = re.compile(r"^(?:([ \t]+)|([#+=-])|(\d+)([.)]))")
_NEWLINES = re.compile(r"\r\n|\r|\n|\u2028|\u2029")
# An ``@name`` in a comment notifies that GitHub user (references are decoded before GitHub looks for mentions),
# so a word joiner goes after an ``@`` that could start a mention: it reads the same and mentions nobody. An ``@``
# after a letter or digit (``org/model@rev``, an e-mail address) mentions nobody and is left as is.
_MENTION = re.compile(r"(?<!\w)@(?=[A-Za-z0-9])")
# C0 controls other than tab and newlines, DEL and C1 controls: invisible at best.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _entity(c: str) -> str:
    return f"&#{ord(c)};"


def _block_start(m: re.Match[str]) -> str:
    if m.group(1):
        return "".join(_entity(c) for c in m.group(1))
    if m.group(2):
        return _entity(m.group(2))
    return m.group(3) + _entity(m.group(4))


def md_text(value: Any, *, limit: int | None = None) -> str:
    """Text from the runs made safe for one Markdown table cell, a line of its own or an HTML element: Markdown and
    HTML syntax characters become character references, newlines ``<br>``, ``@`` mentions nobody. ``limit`` cuts
    the text (before escaping, so no reference is cut in half) to that many characters, ending in an ellipsis."""
    text = _plain(value)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    text = _CONTROL.sub("\ufffd", text)
    text = _SPECIAL.sub(lambda m: _ENTITIES[m.group()], text)
    text = _BLOCK_START.sub(_block_start, text, count=1)
    text = _MENTION.sub("@\u2060", text)
    return _NEWLINES.sub("<br>", text)


def _plain(value: Any) -> str:
    """A cell value as text: None as an empty string, a list of references joined with `` / ``."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " / ".join(_plain(v) for v in value)
    return str(value)


def _models(c: Comparison) -> str:
    """``baseline -> candidate``; one name when both sides ran the same model."""
    if c.baseline_model == c.candidate_model:
        return c.baseline_model
    return f"{c.baseline_model} -> {c.candidate_model}"


def _metric(c: Comparison) -> str:
    """The metric, with its scoring protocol for VQA (captions have one protocol only)."""
    return c.metric if c.protocol == CAPTION_PROTOCOL else f"{c.metric} ({c.protocol})"


def fmt_value(c: Comparison, value: float) -> str:
    """A metric value in points (fractions x 100, one decimal); judge_score on its 1-5 scale (two decimals)."""
    return f"{value:.2f}" if c.metric == "judge_score" else f"{100 * value:.1f}"


def fmt_delta(c: Comparison) -> str:
    """The signed difference candidate - baseline with its 95% CI, in the same units as :func:`fmt_value`."""
    digits = 2 if c.metric == "judge_score" else 1
    s = c.scale
    lo, hi = c.ci95
    return f"{s * c.delta:+.{digits}f} [{s * lo:+.{digits}f}, {s * hi:+.{digits}f}]"


def fmt_p(p: float) -> str:
    """A p-value: three decimals, or two significant digits in scientific form below 0.001 (never a bare 0)."""
    if math.isnan(p):  # the test could not be run
        return "-"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _n(c: Comparison) -> str:
    """Shared samples compared, and how many shared ones were left out pairwise (a judge failed)."""
    return f"{c.n:,}" + (f" ({c.excluded:,} excluded)" if c.excluded else "")


def _flips(c: Comparison) -> str:
    """``worse / better``: samples the candidate got worse / better on."""
    return f"{len(c.worse):,} / {len(c.better):,}"


def _needed(c: Comparison) -> str:
    """For an inconclusive row, the shared samples that would rule out a drop larger than --max-drop."""
    if c.verdict != "inconclusive":
        return ""
    return f"{c.samples_needed:,}" if c.samples_needed is not None else "no n suffices"


def _plural(k: int, word: str) -> str:
    return f"{k} {word}" if k == 1 else f"{k} {word}s"


def status_line(report: GateReport) -> str:
    """``gate: PASS (exit 0)`` or ``gate: FAIL (k regressions) (exit 1)`` (inconclusive rows named when they fail
    the gate, under --fail-on-inconclusive)."""
    code = report.exit_code
    if code == 0:
        return f"gate: PASS (exit {code})"
    counts = report.counts
    why = _plural(counts["regression"], "regression")
    if report.fail_on_inconclusive and counts["inconclusive"]:
        why += f", {counts['inconclusive']} inconclusive"
    return f"gate: FAIL ({why}) (exit {code})"


def _settings(report: GateReport) -> str:
    """One line: the protocol, --max-drop (in points; for judge_score a fraction of its 1-5 range, as
    :func:`medbench.reports.gate.decide` does), --alpha and the correction."""
    points = f"{100 * report.max_drop:g}"
    drop = f"{points} point" if points == "1" else f"{points} points"
    if any(c.metric == "judge_score" for c in report.comparisons):
        drop += f"; {JUDGE_RANGE * report.max_drop:g} on judge_score's 1-5 scale"
    return (
        f"protocol {report.protocol}, --max-drop {report.max_drop:g} ({drop}), --alpha {report.alpha:g}, "
        f"Holm over {_plural(len(report.comparisons), 'comparison')}"
    )


def print_table(report: GateReport, console: Console) -> None:
    """Print one row per comparison (task, models, metric, n, both values, the difference with its CI, p before and
    after Holm, flips, the coloured verdict), then the allowed changes, the notes and the PASS / FAIL line."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"gate: {report.candidate} vs {report.baseline}"), caption=Text(_settings(report)))
    # Headers and cells go in as Text: a model name like "[red]x" or a CI like "[-1.0, +2.0]" is not rich markup.
    for name in ("task", "models", "metric"):
        table.add_column(Text(name), justify="left", overflow="fold")
    for name in ("n", "baseline", "candidate", "delta [95% CI]", "p", "p(Holm)", "worse / better"):
        table.add_column(Text(name), justify="right", no_wrap=True)
    table.add_column(Text("verdict"), justify="left", no_wrap=True)
    for c in report.comparisons:
        cells = [c.task, _models(c), _metric(c), _n(c), fmt_value(c, c.baseline_value)]
        cells += [fmt_value(c, c.candidate_value), fmt_delta(c), fmt_p(c.p_value), fmt_p(c.p_holm), _flips(c)]
        table.add_row(*(Text(cell) for cell in cells), Text(c.verdict, style=VERDICT_STYLE.get(c.verdict, "")))
    if report.comparisons:
        console.print(table)
    else:
        console.print(Text("gate: nothing was compared"))
    for setting, (before, after) in report.allowed_changes.items():
        console.print(Text(f"allowed change: {setting}: {before!r} -> {after!r}", style="yellow"))
    for c in report.comparisons:
        if c.verdict in EXPLAINED:
            console.print(Text(f"{c.verdict}: {c.task} {_metric(c)} {_models(c)}: {c.why}"))
    for note in report.notes:
        console.print(Text(f"note: {note}"))
    console.print(Text(status_line(report), style="bold red" if report.exit_code else "bold green"))


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _headline(report: GateReport) -> list[str]:
    counts = report.counts
    tally = f"{_plural(counts['regression'], 'regression')}, {_plural(counts['improvement'], 'improvement')}, "
    tally += f"{counts['inconclusive']} inconclusive, {counts['no change']} no change"
    return [
        f"## medbench {md_text(status_line(report))}",
        "",
        f"Candidate {md_text(report.candidate)} against baseline {md_text(report.baseline)}: {tally}.",
        "",
        md_text(_settings(report)) + ".",
    ]


def _table(report: GateReport) -> list[str]:
    header = ["verdict", "task", "models", "metric", "n", "baseline", "candidate", "delta [95% CI]", "p", "p (Holm)"]
    header += ["worse / better", "samples needed"]
    align = [":--"] * 4 + ["--:"] * 8
    lines = [_row(header), _row(align)]
    for c in report.comparisons:
        cells = [VERDICT_MARK.get(c.verdict, md_text(c.verdict)), md_text(c.task), md_text(_models(c))]
        cells += [md_text(_metric(c)), _n(c), fmt_value(c, c.baseline_value), fmt_value(c, c.candidate_value)]
        cells += [fmt_delta(c), fmt_p(c.p_value), fmt_p(c.p_holm), _flips(c), _needed(c)]
        lines.append(_row(cells))
    return lines


def _answer(value: Any) -> str:
    """An example's text cell: an empty answer shows as *(empty)* (it is what the model said), a missing field
    (JSONL input without questions) as an empty cell."""
    if isinstance(value, str) and not value.strip():
        return "*(empty)*"
    return md_text(value, limit=MAX_CELL_CHARS)


def _details(c: Comparison, examples: int) -> list[str]:
    """A collapsed block explaining one regression / inconclusive row: why, then its first flipped samples."""
    unit = "on the 1-5 scale" if c.metric == "judge_score" else "points"
    summary = f"{c.verdict}: {c.task}, {_metric(c)}, {_models(c)}: {fmt_delta(c)} {unit}"
    lines = [f"<details><summary>{md_text(summary)}</summary>", "", md_text(c.why), ""]
    shown = c.examples[:examples]
    if shown:
        lines += [_row(["id", "flip", "question", "gold", "baseline answer", "candidate answer"]), _row([":--"] * 6)]
        worse, better = set(c.worse), set(c.better)
        for ex in shown:
            sample_id = _plain(ex.get("id"))
            flip = "worse" if sample_id in worse else "better" if sample_id in better else ""
            cells = [md_text(sample_id), flip]
            cells += [_answer(ex.get(k)) for k in ("question", "reference", "baseline", "candidate")]
            lines.append(_row(cells))
    elif examples and c.worse:
        ids = ", ".join(md_text(i) for i in c.worse[:MAX_LISTED_IDS])
        more = f" and {len(c.worse) - MAX_LISTED_IDS:,} more" if len(c.worse) > MAX_LISTED_IDS else ""
        lines.append(f"No sample texts were recorded. Worse on: {ids}{more}.")
    elif examples:
        lines.append("No flipped samples.")
    return [*lines, "", "</details>"]


def markdown(report: GateReport, *, examples: int = 5) -> str:
    """The summary a reviewer reads in a pull request: the PASS / FAIL headline with the count of each verdict, one
    table row per comparison, the allowed changes and notes, then a ``<details>`` block for every regression and
    inconclusive row with its first ``examples`` flipped samples. Deterministic: the same report gives the same
    text (no timestamps)."""
    if examples < 0:
        raise UsageError(f"examples must be 0 or more (got {examples}): how many flipped samples to show per row")
    lines = _headline(report)
    lines += ["", *_table(report)] if report.comparisons else ["", "Nothing was compared."]
    if report.allowed_changes:
        lines += ["", "Allowed changes (--allow-change):", ""]
        for setting, (before, after) in report.allowed_changes.items():
            lines.append(f"- {md_text(setting)}: {md_text(repr(before))} -> {md_text(repr(after))}")
    if report.notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {md_text(note)}" for note in report.notes]
    for c in report.comparisons:
        if c.verdict in EXPLAINED:
            lines += ["", *_details(c, examples)]
    return "\n".join(lines) + "\n"


def append_step_summary(text: str, environ: Mapping[str, str] = os.environ) -> Path | None:
    """Append ``text`` to the file named by ``$GITHUB_STEP_SUMMARY`` (GitHub Actions shows it on the run's page),
    creating the file when missing; None when the variable is unset or empty (not running in Actions)."""
    name = environ.get("GITHUB_STEP_SUMMARY")
    if not name:
        return None
    path = Path(name)
    try:
        # Another step may have left text without a final newline: start on a fresh line, a blank one apart.
        with path.open("a+b") as handle:  # appends go to the end whatever was read
            end = handle.seek(0, os.SEEK_END)
            last = b""
            if end:
                handle.seek(end - 1)
                last = handle.read(1)
            sep = "" if not end else ("\n" if last == b"\n" else "\n\n")
            handle.write((sep + text + ("" if text.endswith("\n") else "\n")).encode("utf-8"))
    except OSError as exc:
        raise UsageError(
            f"cannot append the gate summary to $GITHUB_STEP_SUMMARY={name}: {exc.strerror or exc}; "
            "point the variable at a writable file or unset it"
        ) from exc
    return path
