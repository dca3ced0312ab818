"""The run loop: tasks x models -> prediction rows (written as produced) -> metrics -> results.json.

Order of work: every task is loaded and its images checked once, so all models see exactly the same samples
and the same skipped ones; then each model generates in batches, rows are appended and flushed to
``predictions/<model>/<task>.jsonl``, and ``results.json`` is rewritten atomically after every (model, task),
so a killed run keeps everything it finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medbench import __version__
from medbench.cache import PredictionCache, default_cache_path
from medbench.distributed import world
from medbench.errors import UsageError
from medbench.evaluation import TaskEvaluation, evaluate_rows
from medbench.fileio import write_json_atomic, write_jsonl_atomic
from medbench.generation import generate_all, request_keys
from medbench.models.base import Model
from medbench.preparation import PreparedTask, Progress, prepare_task, training_split
from medbench.prompts import render_prompt
from medbench.provenance import environment, redact_urls
from medbench.registry import check_model_name, create_model
from medbench.results import (
    Comparability,
    RunResults,
    TaskResult,
    comparability_settings,
    image_record,
    safe_name,
)
from medbench.runconfig import RunConfig
from medbench.schema import Request
from medbench.scoring.aggregate import (
    ScoringOptions,
    answer_of,
    headline_protocol,
)
from medbench.scoring.bertscore import choose_model
from medbench.scoring.bertscore import variant as bertscore_variant
from medbench.scoring.protocols import get_protocol, protocols
from medbench.tasks.base import Skipped


@dataclass
class Judging:
    """The run's judge backend and its cache (a table in the prediction cache's SQLite file)."""

    backend: Any  # medbench.judges.core.JudgeBackend (imported lazily with the judge)
    cache: Any  # medbench.judges.cache.JudgeCache

    @classmethod
    def start(cls, config: RunConfig, cache_path: Path | None) -> Judging | None:
        if not config.judge:
            if config.judge_base_url or config.judge_model or config.judge_api_key_env:
                raise UsageError("--judge-base-url, --judge-model and --judge-api-key-env need --judge NAME")
            return None
        from medbench.judges.cache import JudgeCache
        from medbench.judges.runs import JudgeSpec, build_judge

        spec = JudgeSpec(
            config.judge,
            config.judge_base_url,
            config.judge_model,
            config.judge_api_key_env,
            config.judge_concurrency,
            config.judge_max_retries,
            config.judge_timeout,
        )
        return cls(build_judge(spec), JudgeCache(cache_path))

    def describe(self) -> dict[str, Any]:
        from medbench.judges.runs import describe

        return describe(self.backend)


@dataclass
class TaskRun:
    """One model on one task: its prediction rows, counts, numbers and timing."""

    rows: list[dict[str, Any]]
    counts: dict[str, Any]
    evaluation: TaskEvaluation
    timing: dict[str, Any]


def run_model_on_task(
    model: Model,
    prepared: PreparedTask,
    config: RunConfig,
    out_dir: Path,
    progress: Progress,
    scoring: ScoringOptions,
    cache: PredictionCache,
    judge: Judging | None = None,
) -> TaskRun | None:
    """Outputs (cached or generated), scores, judgements (with a judge) and ``predictions/<model>/<task>.jsonl``
    for one model and task.

    The JSONL file is rebuilt in dataset order from the outputs, so a resumed run writes exactly the file an
    uninterrupted run would. Returns the rows, the generated/cached/skipped (and judge) counts, the numbers and the
    timing; None on the other ranks of a distributed run.
    """
    task, kind = prepared.task, prepared.task.kind
    wall_started = time.perf_counter()
    requests = [
        Request(
            s.id,
            task.name,
            kind,
            render_prompt(config.prompt, kind, s.question),
            s.question,
            s.image,
            config.image_size or None,
            task.max_new_tokens,
        )
        for s in prepared.samples
    ]
    keys = request_keys(
        model,
        requests,
        prompt_style=config.prompt,
        data_checksum=prepared.split.checksum(),
        image_sha256=[prepared.image_sha256[s.id] for s in prepared.samples],
    )
    job = world()
    mine = job.shard(list(zip(requests, keys, strict=True)))  # the whole list in a single-process run
    # Blind baselines are instant: a throwaway in-memory store instead of the shared cache.
    with (
        contextlib.nullcontext(cache) if model.cacheable else PredictionCache(None) as store,
        progress(f"{model.name} · {task.name}", len(mine)) as advance,
    ):
        result = generate_all(
            model,
            [r for r, _ in mine],
            [k for _, k in mine],
            store,
            batch_size=config.batch_size,  # None: the model's, as it adapts it
            advance=advance,
        )
    parts = job.gather(
        (result.outputs, result.generated, result.cached, result.failed, result.model_seconds, result.new_tokens)
    )
    if not job.is_main:
        return None
    # parts: one (outputs, generated, cached, failed, model_seconds, new_tokens) per rank
    merged = {sample_id: text for part in parts for sample_id, text in part[0].items()}
    failed = {sample_id: reason for part in parts for sample_id, reason in part[3].items()}
    # A sample whose image failed at generation time (only possible with --no-verify-images) is skipped for this
    # model, with its reason, rather than scored as an empty answer.
    samples = [s for s in prepared.samples if s.id not in failed]
    outputs = [merged[s.id] for s in samples]
    rows = [
        {
            "id": s.id,
            "task": task.name,
            "model": model.name,
            "answer_type": s.answer_type,
            "question": s.question,
            "reference": s.reference,
            "prediction": output,
            "answer": answer_of(kind, output),
            "metadata": dict(s.metadata),
            "image": image_record(s.image, prepared.root, prepared.image_sha256[s.id]),
            "scores": {},  # set by evaluate_rows
        }
        for s, output in zip(samples, outputs, strict=True)
    ]
    judge_counts: dict[str, int] = {}
    judge_seconds = 0.0

    def judge_fold(scored: list[dict[str, Any]]) -> None:
        nonlocal judge_counts, judge_seconds
        assert judge is not None
        from medbench.judges.runs import judge_rows, targets

        started = time.perf_counter()
        with progress(f"judge · {model.name} · {task.name}", len(targets(kind, scored))) as advance:
            judge_counts = judge_rows(kind, scored, judge.backend, judge.cache, advance)
        judge_seconds = time.perf_counter() - started

    started = time.perf_counter()
    evaluation = evaluate_rows(
        kind, rows, scoring, judge_fold=judge_fold if judge is not None else None, judged=judge is not None
    )
    scoring_seconds = time.perf_counter() - started - judge_seconds
    write_jsonl_atomic(out_dir / "predictions" / safe_name(model.name) / f"{task.name}.jsonl", rows)
    counts = {
        "n": len(rows),
        "generated": sum(part[1] for part in parts),
        "cached": sum(part[2] for part in parts),
        "skipped": len(prepared.skipped) + len(failed),
        "generation_failed": len(failed),
        "empty_outputs": sum(1 for o in outputs if not o.strip()),
        **judge_counts,
    }
    if failed:
        counts["generation_failures"] = [
            Skipped(s.image.describe(), failed[s.id], s.id).as_dict() for s in prepared.samples if s.id in failed
        ]
    generated = counts["generated"]
    model_seconds = sum(part[4] for part in parts)
    token_counts = [part[5] for part in parts]
    new_tokens = None if any(t is None for t in token_counts) else sum(token_counts)
    timing = {
        "seconds": round(time.perf_counter() - wall_started, 3),  # the whole (model, task), wall clock
        # Around model calls only (cache lookups, scoring and judging excluded); summed over ranks.
        "generation": {
            "seconds": round(model_seconds, 3),
            "samples": generated,
            "samples_per_s": round(generated / model_seconds, 1) if model_seconds > 0 else None,
            "new_tokens": new_tokens,
            "new_tokens_per_s": round(new_tokens / model_seconds, 1) if new_tokens and model_seconds > 0 else None,
        },
        "scoring_seconds": round(scoring_seconds, 3),
        "judging_seconds": round(judge_seconds, 3) if judge is not None else None,
    }
    return TaskRun(rows, counts, evaluation, timing)


def _skip_write(path: Path, data: Any) -> None:
    """Non-main ranks of a distributed run write nothing."""


def claim_run_dir(out_dir: Path) -> dict[str, Any] | None:
    """Make ``out_dir`` this run's own folder. A folder holding an earlier medbench run is cleared of that run's
    records first (its predictions stay in the cache), so two runs are never mixed in one folder; a non-empty
    folder that is not a run directory is refused. Returns what was replaced, if anything."""
    if not out_dir.exists():
        out_dir.mkdir(parents=True)
        return None
    if not out_dir.is_dir():
        raise UsageError(f"--output {out_dir} exists and is not a folder; choose another --output")
    previous_record = out_dir / "run.json"
    if not previous_record.is_file():
        if any(out_dir.iterdir()):
            raise UsageError(
                f"--output {out_dir} is not empty and holds no medbench run (no run.json); "
                "choose a new or empty folder so that no other files are mixed into this run's results"
            )
        return None
    try:
        previous = json.loads(previous_record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = {}
    for name in RUN_FILES:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return {"started": previous.get("started"), "status": previous.get("status")}


#: What a run writes into its folder (and what a later run in the same folder replaces).
RUN_FILES = ("run.json", "results.json", "predictions", "report")


def thread_settings() -> dict[str, Any]:
    """The CPU thread settings a run used (recorded in ``run.json``; scores are computed thread-independently)."""
    settings: dict[str, Any] = {
        var: os.environ.get(var) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }
    settings["cpu_count"] = os.cpu_count()
    torch = sys.modules.get("torch")
    if torch is not None:
        settings["torch_num_threads"] = torch.get_num_threads()
        settings["torch_num_interop_threads"] = torch.get_num_interop_threads()
    return settings


def execute(config: RunConfig, progress: Progress, argv: Sequence[str] | None = None) -> RunResults:
    """Run every model on every task and write the run directory; returns the run's results.

    Everything that can be checked without data is checked first — option values, model names, protocol, the
    BERTScore model, each model's configuration (checkpoint and adapter present) and the judge — so a mistake is
    reported in seconds, not after every task has been loaded. A run that stops with an error leaves
    ``"status": "failed"`` and the reason in ``run.json``.
    """
    config.validate()
    for name in config.models:
        check_model_name(name)
    get_protocol(config.protocol)
    bertscore = choose_model(config.bertscore_model, config.bertscore_layers)
    cache_path = None if config.no_cache else (config.cache or default_cache_path())
    job = world()
    # Building a model is cheap (weights load on first use) and checks its configuration.
    models = [create_model(name, **config.model_args.get(name, {})) for name in config.models]
    for model in models:
        if config.batch_size:
            model.batch_size = config.batch_size  # the user's batch size, not capped at the adapter's default
    # Rank 0 judges the merged rows of a distributed run.
    judging = Judging.start(config, cache_path) if job.is_main else None
    out_dir = config.output
    save = write_json_atomic if job.is_main else _skip_write  # only rank 0 writes the run directory
    replaced = claim_run_dir(out_dir) if job.is_main else None
    run_info: dict[str, Any] = {
        "medbench_version": __version__,
        "status": "running",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": redact_urls(list(argv if argv is not None else sys.argv)),
        # numbers: what can change a result (hashed); runtime: output, cache, batch size, ... (never hashed)
        "config": config.resolved(),
        "config_sha256": config.numbers_sha256(),
        "seeds": {"bootstrap": config.seed, "bootstrap_resamples": config.resamples},
        "data": "demo" if config.demo else "user",
        "world_size": job.size,
        "threads": thread_settings(),
        **environment(),
    }
    if replaced is not None:
        run_info["replaced_previous_run"] = replaced
    save(out_dir / "run.json", run_info)
    try:
        results = _evaluate(config, progress, models, bertscore, cache_path, judging, run_info, save)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        run_info.update(
            status="interrupted" if interrupted else "failed",
            error=("interrupted by the user" if interrupted else f"{exc.__class__.__name__}: {exc}"),
            finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        save(out_dir / "run.json", run_info)
        raise
    finally:
        if judging is not None:
            judging.cache.close()
    run_info["threads"] = thread_settings()  # torch may have been imported since (BERTScore, HF models)
    run_info.update(status="complete", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    save(out_dir / "run.json", run_info)
    return results


def _evaluate(
    config: RunConfig,
    progress: Progress,
    models: Sequence[Model],
    bertscore: Any,
    cache_path: Path | None,
    judging: Judging | None,
    run_info: dict[str, Any],
    save: Callable[[Path, Any], None],
) -> RunResults:
    """The run proper: prepare every task once, then each model on each task; returns the run's results."""
    out_dir = config.output
    prepared = {name: prepare_task(name, config, progress) for name in config.tasks}
    run_info["tasks"] = {name: {k: v for k, v in p.info.items() if k != "skipped"} for name, p in prepared.items()}
    save(out_dir / "run.json", run_info)

    header: dict[str, Any] = {
        "medbench_version": __version__,
        "data": "demo" if config.demo else "user",
        "headline_protocol": config.protocol,
        "closed_rule": config.closed_rule,
        "tasks": {name: p.info for name, p in prepared.items()},
        "headline": {name: headline_protocol(p.task.kind, config.protocol) for name, p in prepared.items()},
        "scoring": {
            "protocols": {name: p.description for name, p in protocols().items()},
            "bertscore": bertscore_variant(bertscore),
            "bootstrap": {"method": "percentile", "resamples": config.resamples, "seed": config.seed},
        },
        "models": {},
    }
    run_info["cache"] = str(cache_path) if cache_path else None
    if judging is not None:
        header["judge"] = run_info["judge"] = judging.describe()
        header["scoring"]["protocols"]["clinical"] += (
            f"; with the LLM equivalence judge {judging.backend.model} on open answers neither accepts"
        )
        save(out_dir / "run.json", run_info)
    results = RunResults(header, run_dir=out_dir)
    run_info["counts"] = {}
    with PredictionCache(cache_path) as cache:
        for model in models:
            _evaluate_model(model, prepared, config, progress, bertscore, cache, judging, results, run_info, save)
            model.release()  # free this model's weights before the next one loads
    if world().is_main:
        results.write(out_dir)
    return results


def _evaluate_model(
    model: Model,
    prepared: dict[str, PreparedTask],
    config: RunConfig,
    progress: Progress,
    bertscore: Any,
    cache: PredictionCache,
    judging: Judging | None,
    results: RunResults,
    run_info: dict[str, Any],
    save: Callable[[Path, Any], None],
) -> None:
    """One model on every prepared task: rows, metrics and records, saved after each task."""
    out_dir = config.output
    model_name = model.name
    run_info["counts"][model_name] = {}
    for name, task_data in prepared.items():
        if model.needs_training_data:
            model.fit(name, training_split(task_data.task, config))
        scoring = ScoringOptions(config.resamples, config.seed, bertscore, task_data.task.subgroup_fields)
        run = run_model_on_task(model, task_data, config, out_dir, progress, scoring, cache, judging)
        if run is None:  # another rank of a distributed run: rank 0 evaluates and writes
            continue
        run_info["counts"][model_name][name] = run.counts
        if judging is not None:
            # What the server says it ran (an alias like deepseek-chat moves between model versions).
            seen = {r["judge"].get("server_model") for r in run.rows if "judge" in r} - {None}
            judge_info = results.header["judge"]  # the same dict as run_info["judge"]
            judge_info["server_models"] = sorted(set(judge_info.get("server_models", [])) | seen)
            # What the adaptive concurrency did so far (the local judge has none).
            adaptive = judging.backend.describe().get("adaptive_concurrency")
            if adaptive is not None:
                judge_info["adaptive_concurrency"] = adaptive
        save(out_dir / "run.json", run_info)
        results.header["models"][model_name] = model.describe() | {"fingerprint": model.fingerprint()}
        settings = comparability_settings(
            task=name,
            task_info=task_data.info,
            scoring=results.header["scoring"],
            judge=results.header.get("judge"),
            image_size=config.image_size,
            max_new_tokens=task_data.task.max_new_tokens,
        )
        results.add(
            TaskResult(
                model=model_name,
                task=name,
                metrics=run.evaluation.metrics,
                counts=run.counts,
                comparability=Comparability.of(settings),
                # evaluate_rows breaks VQA tasks down by their subgroup fields; captions have none
                subgroups=run.evaluation.subgroups if scoring.subgroup_fields else None,
                judge_agreement=run.evaluation.judge_agreement if judging is not None else None,
                timing=run.timing,
            )
        )
        results.write(out_dir)
