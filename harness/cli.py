"""The ``medbench`` command line: run, list, data fetch."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medbench import __version__
from medbench.console import fmt_metric, print_judge, print_protocol_comparison, print_results, progress_factory
from medbench.errors import MedbenchError, UsageError
from medbench.tasks.base import CLOSED_RULES


def _batch_size(value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"--batch-size must be a positive number or auto, not {value!r}")
    return int(value)


def _whole(setting: str) -> Callable[[str], int]:
    """An argparse type: a whole number >= the least value :data:`medbench.runconfig.MINIMUMS` allows for
    ``setting`` (argparse turns the error into exit 2 naming the option). The table is read on use, so building
    the parser imports nothing heavy."""

    def parse(value: str) -> int:
        from medbench.runconfig import MINIMUMS

        least = MINIMUMS[setting][0]
        try:
            number = int(value)
        except ValueError:
            number = least - 1
        if number < least:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {least}, not {value!r}")
        return number

    parse.__name__ = "whole number"
    return parse


def _fraction(setting: str) -> Callable[[str], float]:
    """An argparse type: a number in [0, 1) (``--max-drop 0.01`` is one point, ``--alpha 0.05``)."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not 0.0 <= number < 1.0:
            raise argparse.ArgumentTypeError(f"--{setting} must be a fraction in [0, 1), not {value!r}")
        return number

    parse.__name__ = "fraction"
    return parse


def _positive_seconds(value: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, not {value!r}")
    return seconds


def _model_args(items: Sequence[str], models: Sequence[str]) -> dict[str, dict[str, str]]:
    """``MODEL.KEY=VALUE`` items grouped by model; the model part must be one of ``models`` (names may contain dots,
    so the longest matching model name wins)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        model = max((m for m in models if target.startswith(m + ".")), key=len, default=None)
        if not sep or model is None or not target[len(model) + 1 :]:
            raise UsageError(f"--model-arg {item!r}: expected MODEL.KEY=VALUE with MODEL one of {', '.join(models)}")
        out.setdefault(model, {})[target[len(model) + 1 :]] = value
    return out


def cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from rich.console import Console
    from rich.markup import escape

    from medbench.api import evaluate
    from medbench.runconfig import DEFAULT_MODELS

    no_selection = args.models is None and args.tasks is None and args.data_dir is None
    demo = args.demo or (no_selection and not os.environ.get("MEDBENCH_DATA"))
    models = [m.strip() for m in (args.models or ",".join(DEFAULT_MODELS)).split(",") if m.strip()]
    options = dict(
        output=args.output,
        data_dir=args.data_dir,
        demo=demo,
        split=args.split,
        limit=args.limit,
        closed_rule=args.closed_rule,
        prompt=args.prompt,
        image_size=args.image_size,
        full=args.full,
        seed=args.seed,
        resamples=args.resamples,
        batch_size=_batch_size(args.batch_size),
        model_args=_model_args(args.model_arg, models),
        cache=args.cache,
        no_cache=args.no_cache,
        verify_images=not args.no_verify_images,
        protocol=args.protocol,
        bertscore_model=args.bertscore_model,
        bertscore_layers=args.bertscore_layers,
        judge=args.judge,
        judge_base_url=args.judge_base_url,
        judge_model=args.judge_model,
        judge_api_key_env=args.judge_api_key_env,
        judge_concurrency=args.judge_concurrency,
        judge_max_retries=args.judge_max_retries,
        judge_timeout=args.judge_timeout,
        config_file=args.config,
    )
    err = Console(stderr=True, quiet=int(os.environ.get("RANK", "0")) != 0)  # one voice in a torchrun job
    if demo:
        err.print(
            "[bold]medbench[/]: running the embedded demo set (data: demo — a handful of images, "
            "not a benchmark). Use --data-dir or --tasks to evaluate real data."
        )
    bar, progress = progress_factory(err)
    with bar:
        run = evaluate(models, args.tasks or "all", progress=progress, argv=argv, **options)
    output = run.run_dir or Path(".")
    if err.quiet:
        return 0
    print_results(run, Console())
    for info in run.tasks.values():
        for warning in info.get("warnings", []):
            err.print(f"[bold yellow]warning[/]: {escape(warning)}", highlight=False)
    print_protocol_comparison(run, Console())
    print_judge(run, Console())
    counts = {model: {task: r.counts for task, r in per.items()} for model, per in run.results.items()}
    summary = ", ".join(
        f"{m}: " + " ".join(f"{t} {c['generated']}g/{c['cached']}c/{c['skipped']}s" for t, c in per.items())
        for m, per in counts.items()
    )
    err.print(f"samples generated (g) / from cache (c) / skipped (s): {summary}")
    if "judge" in run.header:
        judged = ", ".join(
            f"{m}: "
            + " ".join(
                f"{t} {c.get('judge_requested', 0)}r/{c.get('judge_cached', 0)}c/{c.get('judge_failures', 0)}f"
                for t, c in per.items()
            )
            for m, per in counts.items()
        )
        err.print(f"judgements requested (r) / from cache (c) / failed (f): {judged}")
        failed = sum(c.get("judge_failures", 0) for per in counts.values() for c in per.values())
        asked = sum(c.get("judged", 0) for per in counts.values() for c in per.values())
        if failed:
            err.print(
                f"[bold yellow]warning[/]: {failed} of {asked} judgements failed after retries or could not be "
                "parsed. They are left out of judge_score and clinical (not counted as 0); each prediction row's "
                "judge.failure says why. A rerun asks only those again (the rest is cached)."
            )
    from medbench.reports.site import build_report

    report = build_report([output], output / "report")
    err.print(
        f"results: {output / 'results.json'}\npredictions: {output / 'predictions'}/\nrun record: {output / 'run.json'}"
        f"\nreport: {report}"
    )
    return 0


def cmd_report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from medbench.reports.site import build_report

    out = args.out or (args.runs[0] / "report" if len(args.runs) == 1 else Path("report"))
    print(f"report: {build_report(args.runs, out, compare=args.compare)}")
    return 0


def cmd_publish(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from medbench.reports.publish import publish

    summary = publish(args.runs, args.dest)
    for line in summary.lines():
        print(line)
    return 0


def cmd_gate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import json

    from rich.console import Console

    from medbench.reports.baseline import promote
    from medbench.reports.gate_output import append_step_summary, markdown, print_table
    from medbench.reports.gating import run_gate

    err = Console(stderr=True)
    if args.update_baseline and not args.baseline.exists():
        err.print(f"no baseline at {args.baseline} yet: promoting {args.candidate} as the first one")
        print(f"baseline: {promote(args.candidate, args.baseline)}")
        return 0
    report = run_gate(
        args.baseline,
        args.candidate,
        pairs=args.pair,
        metrics=args.metric,
        protocol=args.protocol,
        max_drop=args.max_drop,
        alpha=args.alpha,
        allow_changes=args.allow_change,
        fail_on_inconclusive=args.fail_on_inconclusive,
        resamples=args.resamples,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        # A CI log is no terminal: rich would wrap the table at 80 columns.
        print_table(report, Console() if sys.stdout.isatty() else Console(width=200))
    text = markdown(report)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    summary = append_step_summary(text)
    if summary is not None:
        err.print(f"summary appended to {summary}")
    code = report.exit_code
    if args.update_baseline:
        if code and not args.force:
            err.print("[bold red]refusing --update-baseline[/]: the candidate regresses (--force promotes it anyway)")
            return code
        err.print(f"baseline updated: {promote(args.candidate, args.baseline)}")
        return 0
    return code


def cmd_list(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from medbench.registry import model_registry, task_registry

    table = Table(show_header=True)
    table.add_column(args.what[:-1])
    table.add_column("description")
    if args.what == "tasks":
        for name, cls in task_registry().items():
            table.add_row(name, cls.description)
    else:
        for entry in model_registry().values():
            table.add_row(entry.name + ("<...>" if entry.prefix else ""), entry.description)
    Console().print(table)
    return 0


def cmd_data_fetch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from medbench.data.hub import snapshot
    from medbench.registry import get_task, resolve_task_names

    failed = 0
    for name in resolve_task_names(args.tasks):
        task = get_task(name)
        patterns = sorted({p for split in task.splits for p in task.hub.allow_patterns(split)})
        path, problem = snapshot(task.hub.repo_id, task.hub.revision, patterns)
        if path is None:
            failed += 1
            print(
                f"{name}: {task.hub.repo_id}@{task.hub.revision[:10]} not available: {problem}",
                file=sys.stderr,
            )
        else:
            print(f"{name}: {task.hub.repo_id}@{task.hub.revision[:10]} -> {path}")
    return 2 if failed else 0


def _bertscore_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bertscore-model",
        help="BERTScore model id or path (default: roberta-large if cached, else the bundled all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--bertscore-layers", type=_whole("bertscore_layers"), help="BERTScore layer (required for unknown models)"
    )


def cmd_score(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from medbench.scorefile import score_files
    from medbench.scoring.aggregate import ScoringOptions
    from medbench.scoring.bertscore import choose_model

    options = ScoringOptions(args.resamples, args.seed, choose_model(args.bertscore_model, args.bertscore_layers))
    result = score_files(args.files, args.protocol, options)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    table = Table(title=f"medbench score · protocol {result['protocol']} (%, 95% CI)")
    for header in ("task", "metric", "value", "n"):
        table.add_column(header, justify="right" if header in ("value", "n") else "left")
    for task, metrics in result["tasks"].items():
        for metric, entry in metrics.items():
            table.add_row(task, metric, fmt_metric(entry).replace("\n", " "), str(entry["n"]))
    Console().print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(prog="medbench", description="Evaluate medical multimodal LLMs.")
    parser.add_argument("--version", action="version", version=f"medbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="evaluate models on tasks (no arguments: blind baselines on the demo set)")
    run.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a TOML file with the same keys as these flags (closed_rule = ..., [model_args.NAME]); flags override it",
    )
    run.add_argument("--models", help="comma-separated model names (default: prior,yes)")
    run.add_argument("--tasks", help="'all' or comma-separated task names (default: all)")
    run.add_argument(
        "--data-dir",
        type=Path,
        help="folder with one subfolder per task in its original layout "
        "(default: $MEDBENCH_DATA, else the pinned Hugging Face mirrors)",
    )
    run.add_argument("--demo", action="store_true", help="use the bundled demo set")
    run.add_argument("--split", default="test", help="split to evaluate (default: test)")
    run.add_argument("--limit", type=_whole("limit"), help="evaluate only the first N samples of each task")
    run.add_argument("--output", type=Path, help="run directory (default: runs/<timestamp>)")
    run.add_argument(
        "--closed-rule",
        choices=CLOSED_RULES,
        default="yesno",
        help="closed/open split: yesno (gold is yes/no; default) or answer_type (dataset labels)",
    )
    run.add_argument("--prompt", choices=("role", "generic"), default="role", help="prompt template style")
    run.add_argument(
        "--image-size",
        type=_whole("image_size"),
        default=512,
        help="resize images to N x N (0 keeps originals)",
    )
    run.add_argument("--full", action="store_true", help="rocov2: all test captions, not the fixed 1,000 subset")
    run.add_argument("--seed", type=_whole("seed"), default=0, help="bootstrap seed")
    run.add_argument("--resamples", type=_whole("resamples"), default=1000, help="bootstrap resamples for the 95%% CIs")
    run.add_argument("--batch-size", default="auto", help="N, or auto (the adapter's own default)")
    run.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="MODEL.KEY=VALUE",
        help="an option for one model, e.g. llama32med.adapter=/path or openai:gpt-4o.base_url=URL",
    )
    run.add_argument(
        "--cache",
        type=Path,
        help="prediction cache file (default: $MEDBENCH_CACHE or ~/.cache/medbench/predictions.sqlite)",
    )
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the prediction cache")
    run.add_argument("--no-verify-images", action="store_true", help="skip decoding every image before the run")
    run.add_argument("--protocol", default="strict", help="headline VQA protocol (all are computed; see docs)")
    _bertscore_args(run)
    judge = run.add_argument_group(
        "LLM judge", "caption judge (Appendix D, 1-5) on rocov2 and an equivalence judge on VQA open answers"
    )
    judge.add_argument(
        "--judge",
        metavar="NAME",
        help="deepseek (DeepSeek's API, key from $DEEPSEEK_API_KEY), any name with --judge-base-url and "
        "--judge-model, or hf:<path-or-hub-id> for a local transformers model",
    )
    judge.add_argument("--judge-base-url", metavar="URL", help="OpenAI-compatible endpoint (vLLM, SGLang, ...)")
    judge.add_argument("--judge-model", metavar="MODEL", help="model name to ask (deepseek default: deepseek-chat)")
    judge.add_argument(
        "--judge-api-key-env",
        metavar="VAR",
        help="environment variable holding the judge's API key (keys are never taken on the command line)",
    )
    judge.add_argument(
        "--judge-concurrency",
        type=_whole("judge_concurrency"),
        default=32,
        metavar="N",
        help="the most requests in flight at once; halved on HTTP 429 and raised again after successes "
        "(local judge: batch size; default 32)",
    )
    judge.add_argument(
        "--judge-max-retries",
        type=_whole("judge_max_retries"),
        default=6,
        metavar="N",
        help="retries per judge request on 429/5xx/timeouts/blank replies, with exponential backoff (default 6)",
    )
    judge.add_argument(
        "--judge-timeout",
        type=_positive_seconds,
        default=600.0,
        metavar="S",
        help="seconds per judge request (default 600)",
    )
    run.set_defaults(func=cmd_run)
    parser._medbench_run = run  # type: ignore[attr-defined]  # for --config: the file's values become defaults

    score = sub.add_parser("score", help="score prediction JSONL files without running a model")
    score.add_argument(
        "files", nargs="+", type=Path, help="JSONL rows with id, task, answer_type, reference, prediction"
    )
    score.add_argument("--protocol", default="strict", help="VQA protocol to report (default: strict)")
    score.add_argument("--json", action="store_true", help="print the result as JSON")
    score.add_argument("--seed", type=_whole("seed"), default=0, help="bootstrap seed")
    score.add_argument(
        "--resamples", type=_whole("resamples"), default=1000, help="bootstrap resamples for the 95%% CIs"
    )
    _bertscore_args(score)
    score.set_defaults(func=cmd_score)

    rep = sub.add_parser("report", help="a static HTML report (leaderboards, charts, provenance) of run directories")
    rep.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories written by medbench run")
    rep.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/report for one run, else ./report)")
    rep.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="A:B",
        help="a model pair to compare sample by sample (repeatable; default: every X vs X+lora:* pair present, "
        "or every pair of up to four models)",
    )
    rep.set_defaults(func=cmd_report)

    pub = sub.add_parser("publish", help="add runs to the published leaderboard folder (pages + leaderboard.json)")
    pub.add_argument(
        "runs", nargs="*", type=Path, metavar="RUN_DIR", help="run directories to add (none: rebuild the board's pages)"
    )
    pub.add_argument(
        "--dest", type=Path, default=Path("leaderboard"), help="the leaderboard folder (default: ./leaderboard)"
    )
    pub.set_defaults(func=cmd_publish)

    gate = sub.add_parser(
        "gate", help="fail CI on a real regression: paired tests on the same samples, Holm-corrected, explained"
    )
    gate.add_argument(
        "--baseline",
        type=Path,
        default=Path("leaderboard/baseline"),
        help="run directory, prediction JSONL file(s) or published baseline (default: leaderboard/baseline)",
    )
    gate.add_argument("--candidate", type=Path, required=True, help="run directory or prediction JSONL file(s)")
    gate.add_argument(
        "--pair", action="append", default=[], metavar="BASE:CAND", help="pair two differently named models"
    )
    gate.add_argument(
        "--metric",
        action="append",
        default=[],
        help="a metric to gate (repeatable; default: closed/open/overall accuracy; captions judge_score, bleu, "
        "bertscore_f1)",
    )
    gate.add_argument("--protocol", help="VQA protocol (default: the runs' headline protocol)")
    gate.add_argument(
        "--max-drop", type=_fraction("max-drop"), default=0.01, help="tolerated drop, a fraction (default 0.01)"
    )
    gate.add_argument("--alpha", type=_fraction("alpha"), default=0.05, help="significance level after Holm")
    gate.add_argument("--allow-change", action="append", default=[], metavar="SETTING", help="accept a changed setting")
    gate.add_argument("--fail-on-inconclusive", action="store_true", help="exit 1 on an inconclusive row too")
    gate.add_argument("--json", action="store_true", help="print everything as JSON")
    gate.add_argument("--markdown", type=Path, metavar="FILE", help="write the Markdown summary here")
    gate.add_argument("--update-baseline", action="store_true", help="promote the candidate to --baseline")
    gate.add_argument("--force", action="store_true", help="with --update-baseline: promote even a regression")
    gate.add_argument("--seed", type=_whole("seed"), default=0, help="bootstrap seed")
    gate.add_argument("--resamples", type=_whole("resamples"), default=1000, help="bootstrap resamples")
    gate.set_defaults(func=cmd_gate)

    lst = sub.add_parser("list", help="list registered tasks or models")
    lst.add_argument("what", choices=("tasks", "models"))
    lst.set_defaults(func=cmd_list)

    from medbench.testing import configure_parser

    configure_parser(sub.add_parser("testing", help="offline test fixtures (tiny random models of every family)"))
    from medbench.training.cli import configure_parser as configure_training

    configure_training(sub.add_parser("train", help="the LoRA/QLoRA training module (configs, parameter counts)"))

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="pre-fetch the pinned Hugging Face mirrors into the local cache")
    fetch.add_argument("--tasks", default="all")
    fetch.set_defaults(func=cmd_data_fetch)
    return parser


def _with_config_file(parser: argparse.ArgumentParser, argv: Sequence[str], path: Path) -> argparse.Namespace:
    """``argv`` parsed again with the config file's settings as the run command's defaults, so flags given on
    the command line override the file."""
    from medbench.configfile import read_config

    settings = read_config(path)
    defaults: dict[str, Any] = {}
    for key, value in settings.items():
        if key in ("data_dir", "output", "cache"):
            defaults[key] = Path(value)
        elif key == "model_args":
            defaults["model_arg"] = value  # --model-arg items on the command line are appended after these
        elif key == "batch_size":
            defaults[key] = str(value)
        else:
            defaults[key] = value
    run_parser: argparse.ArgumentParser = parser._medbench_run  # type: ignore[attr-defined]
    run_parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medbench`` console script."""
    from medbench.training.cli import normalise_argv  # `medbench train CONFIG ...` = `medbench train run CONFIG ...`

    argv = normalise_argv(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "config", None) is not None:
            args = _with_config_file(parser, argv, args.config)
        return int(args.func(args, ["medbench", *argv]))
    except MedbenchError as exc:
        print(f"medbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("medbench: interrupted; finished predictions are kept in the run directory", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
