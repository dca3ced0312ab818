"""What ``medbench run`` prints: the progress bars and the result tables (rich is imported inside each function)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


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


def print_results(results: dict[str, Any], console: Any) -> None:
    """Print one table per task kind: VQA accuracies and caption metrics, with 95% CIs (in %)."""
    from rich.table import Table

    data_label = results.get("data", "user")
    for kind, columns in (
        ("vqa", ("closed_accuracy", "open_accuracy", "overall_accuracy")),
        ("caption", ("bleu", "bleu4_sentence", "token_recall", "rouge1", "bertscore_f1")),
    ):
        tasks = [t for t, info in results["tasks"].items() if info["kind"] == kind]
        if not tasks:
            continue
        title = (
            f"{'VQA accuracy' if kind == 'vqa' else 'Captioning'} (%, 95% CI) · protocol "
            f"{results['headline_protocol'] if kind == 'vqa' else 'caption'}"
            + (f" · closed rule {results['closed_rule']}" if kind == "vqa" else "")
            + f" · data: {data_label}"
        )
        table = Table(title=title)
        for header in ("model", "task", "n", *columns, "skipped"):
            label = header.removesuffix("_accuracy").replace("_sentence", "_sent").replace("bertscore_f1", "bertscore")
            table.add_column(
                label,
                justify="left" if header in ("model", "task") else "right",
                overflow="fold" if header == "model" else "ellipsis",
            )
        counts = results.get("counts", {})
        for model, per_task in results["metrics"].items():
            for task in tasks:
                if task not in per_task:
                    continue
                metrics = per_task[task][results["headline"][task]]
                info = results["tasks"][task]
                table.add_row(
                    model,
                    task,
                    str(counts.get(model, {}).get(task, {}).get("n", info["n_samples"])),
                    *(fmt_metric(metrics.get(c)) for c in columns),
                    str(counts.get(model, {}).get(task, {}).get("skipped", info["skipped"]["count"])),
                )
        console.print(table)
        bertscore = results.get("scoring", {}).get("bertscore", {})
        if kind == "caption" and bertscore and not bertscore.get("model"):
            console.print(f"bertscore: not computed — {bertscore.get('origin')}", highlight=False, markup=False)


def print_protocol_comparison(results: dict[str, Any], console: Any) -> None:
    """Overall accuracy of every VQA protocol side by side: where scoring conventions move the numbers."""
    from rich.table import Table

    names = list(results["scoring"]["protocols"])
    table = Table(title="Overall accuracy (%) under each protocol — the same predictions, scored as each peer does")
    for header in ("model", "task", *names):
        table.add_column(
            header,
            justify="left" if header in ("model", "task") else "right",
            overflow="fold" if header == "model" else "ellipsis",
        )
    for model, per_task in results["metrics"].items():
        for task, metrics in per_task.items():
            if results["tasks"][task]["kind"] == "vqa":
                table.add_row(model, task, *(fmt_metric(metrics[p]["overall_accuracy"]).split("\n")[0] for p in names))
    if table.row_count:
        console.print(table)


def _judge_cell(entry: dict[str, Any]) -> str:
    """A 1–5 judge score with its CI (not a percentage, unlike :func:`fmt_metric`)."""
    value, ci = entry.get("value"), entry.get("ci95")
    return "-" if value is None else f"{value:.2f}" + (f"\n{ci[0]:.2f}–{ci[1]:.2f}" if ci else "")


def print_judge(results: dict[str, Any], console: Any) -> None:
    """The LLM judge's numbers: caption judge scores (1–5, 95% CI, failures) and, for VQA open questions, what
    the equivalence judge changes relative to ``strict``."""
    from rich.table import Table

    judge = results.get("judge")
    if not judge:
        return
    served = f"{judge['name']} · {judge['model']}"
    captions = Table(title=f"Caption judge score (1–5, 95% CI; failures are excluded, not zeros) · judge {served}")
    for header in ("model", "task", "judge_score", "n scored", "failures", "failure rate"):
        captions.add_column(
            header,
            justify="left" if header in ("model", "task") else "right",
            overflow="fold" if header == "model" else "ellipsis",
        )
    vqa = Table(title=f"Open-answer equivalence judge vs strict (judged open questions) · judge {served}")
    vqa.caption = (
        "agree: judge verdict = strict verdict; +judge: strict wrong, judge equivalent; -exact: strict right, judge "
        "not equivalent (clinical keeps those right); clinical open: open accuracy with the judge (failures left out)"
    )
    for header in ("model", "task", "judged", "agree %", "κ", "+judge", "-exact", "failed", "clinical open %"):
        vqa.add_column(
            header,
            justify="left" if header in ("model", "task") else "right",
            overflow="fold" if header == "model" else "ellipsis",
        )
    for model, per_task in results["metrics"].items():
        for task, metrics in per_task.items():
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
            report = results.get("judge_agreement", {}).get(model, {}).get(task)
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
