"""What ``medbench run`` prints: the progress bars and the result tables (rich is imported inside each function)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medbench.results import RunResults


def progress_factory(console: Any) -> tuple[Any, Callable[[str, int], Any]]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            # rich only estimates a speed after a few updates; fall back to completed / elapsed.
            speed = task.finished_speed or task.speed
            if not speed and task.elapsed and task.completed:
                speed = task.completed / task.elapsed
            return Text(f"{speed:,.1f} samples/s" if speed else "- samples/s", style="cyan")

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )

    @contextlib.contextmanager
    def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
        task_id = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task_id, n)
        bar.refresh()

    return bar, progress


def _column(table: Any, name: str, label: str | None = None) -> None:
    """A result-table column: names left-aligned, numbers right; a model name folds onto more lines rather than
    being cut (two ``hf:/tmp/...`` models must stay tellable apart)."""
    table.add_column(
        label or name,
        justify="left" if name in ("model", "task") else "right",
        overflow="fold" if name == "model" else "ellipsis",
    )


def fmt_metric(entry: dict[str, Any] | None) -> str:
    """A metric entry as text: a proportion in % with its CI, a count (``*_failures``, ``bertscore_empty``) as is,
    a score on its own scale (``judge_score``, 1-5) unscaled."""
    if not entry or entry.get("value") is None:
        return "-"
    value, ci = entry["value"], entry.get("ci95")
    if isinstance(value, int) and not isinstance(value, bool) and ci is None:
        return str(value)
    if entry.get("scale"):
        return f"{value:.2f}\n{ci[0]:.2f}–{ci[1]:.2f}" if ci else f"{value:.2f}"
    text = f"{100 * value:.1f}"
    return f"{text}\n{100 * ci[0]:.1f}–{100 * ci[1]:.1f}" if ci else text


def print_results(results: RunResults, console: Any) -> None:
    """Print one table per task kind: VQA accuracies and caption metrics, with 95% CIs (in %)."""
    from rich.table import Table

    header = results.header
    data_label = header.get("data", "user")
    for kind, columns in (
        ("vqa", ("closed_accuracy", "open_accuracy", "overall_accuracy")),
        ("caption", ("bleu", "bleu4_sentence", "token_recall", "rouge1", "bertscore_f1")),
    ):
        tasks = [t for t, info in results.tasks.items() if info["kind"] == kind]
        if not tasks:
            continue
        title = (
            f"{'VQA accuracy' if kind == 'vqa' else 'Captioning'} (%, 95% CI) · protocol "
            f"{header['headline_protocol'] if kind == 'vqa' else 'caption'}"
            + (f" · closed rule {header['closed_rule']}" if kind == "vqa" else "")
            + f" · data: {data_label}"
        )
        table = Table(title=title)
        for name in ("model", "task", "n", *columns, "skipped"):
            label = name.removesuffix("_accuracy").replace("_sentence", "_sent").replace("bertscore_f1", "bertscore")
            _column(table, name, label)
        for model, per_task in results.results.items():
            for task in tasks:
                if task not in per_task:
                    continue
                result = per_task[task]
                metrics = result.metrics[header["headline"][task]]
                info = results.tasks[task]
                table.add_row(
                    model,
                    task,
                    str(result.counts.get("n", info["n_samples"])),
                    *(fmt_metric(metrics.get(c)) for c in columns),
                    str(result.counts.get("skipped", info["skipped"]["count"])),
                )
        console.print(table)
        bertscore = header.get("scoring", {}).get("bertscore", {})
        if kind == "caption" and bertscore and not bertscore.get("model"):
            console.print(f"bertscore: not computed — {bertscore.get('origin')}", highlight=False, markup=False)


def print_protocol_comparison(results: RunResults, console: Any) -> None:
    """Overall accuracy of every VQA protocol side by side: where scoring conventions move the numbers."""
    from rich.table import Table

    names = list(results.header["scoring"]["protocols"])
    table = Table(title="Overall accuracy (%) under each protocol — the same predictions, scored as each peer does")
    for name in ("model", "task", *names):
        _column(table, name)
    for model, per_task in results.results.items():
        for task, result in per_task.items():
            if results.tasks[task]["kind"] == "vqa":
                cells = (fmt_metric(result.metrics[p]["overall_accuracy"]).split("\n")[0] for p in names)
                table.add_row(model, task, *cells)
    if table.row_count:
        console.print(table)


def _judge_cell(entry: dict[str, Any]) -> str:
    """A 1–5 judge score with its CI (not a percentage, unlike :func:`fmt_metric`)."""
    value, ci = entry.get("value"), entry.get("ci95")
    return "-" if value is None else f"{value:.2f}" + (f"\n{ci[0]:.2f}–{ci[1]:.2f}" if ci else "")


def print_judge(results: RunResults, console: Any) -> None:
    """The LLM judge's numbers: caption judge scores (1–5, 95% CI, failures) and, for VQA open questions, what
    the equivalence judge changes relative to ``strict``."""
    from rich.table import Table

    judge = results.header.get("judge")
    if not judge:
        return
    served = f"{judge['name']} · {judge['model']}"
    captions = Table(title=f"Caption judge score (1–5, 95% CI; failures are excluded, not zeros) · judge {served}")
    for name in ("model", "task", "judge_score", "n scored", "failures", "failure rate"):
        _column(captions, name)
    vqa = Table(title=f"Open-answer equivalence judge vs strict (judged open questions) · judge {served}")
    vqa.caption = (
        "agree: judge verdict = strict verdict; +judge: strict wrong, judge equivalent; -exact: strict right, judge "
        "not equivalent (clinical keeps those right); clinical open: open accuracy with the judge (failures left out)"
    )
    for name in ("model", "task", "judged", "agree %", "κ", "+judge", "-exact", "failed", "clinical open %"):
        _column(vqa, name)
    for model, per_task in results.results.items():
        for task, result in per_task.items():
            metrics = result.metrics
            if "caption" in metrics and "judge_score" in metrics["caption"]:
                m = metrics["caption"]
                rate = m["judge_failure_rate"]["value"]
                captions.add_row(
                    model,
                    task,
                    _judge_cell(m["judge_score"]),
                    str(m["judge_score"]["n"]),
                    str(m["judge_failures"]["value"]),
                    f"{100 * rate:.1f}%",
                )
            report = result.judge_agreement
            if report:
                agree = report["agreement_with_strict"]
                kappa = report["kappa"]
                vqa.add_row(
                    model,
                    task,
                    str(report["judged"]),
                    fmt_metric(agree).split("\n")[0],
                    "-" if kappa is None else f"{kappa:.2f}",
                    str(report["table"]["strict0_judge1"]),
                    str(report["table"]["strict1_judge0"]),
                    str(report["failures"]),
                    fmt_metric(metrics["clinical"]["open_accuracy"]).split("\n")[0],
                )
    for table in (captions, vqa):
        if table.row_count:
            console.print(table)
