"""The run loop: tasks x models -> prediction rows (written as produced) -> metrics -> results.json.

Order of work: every task is loaded and its images checked once, so all models see exactly the same samples
and the same skipped ones; then each model generates in batches, rows are appended and flushed to
``predictions/<model>/<task>.jsonl``, and ``results.json`` is rewritten atomically after every (model, task),
so a killed run keeps everything it finished.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medbench import __version__
from medbench.cache import PredictionCache, default_cache_path
from medbench.distributed import world
from medbench.errors import DataError, SampleError, UsageError
from medbench.fileio import write_json_atomic, write_jsonl_atomic
from medbench.generation import generate_all, request_keys
from medbench.images import check_image
from medbench.models.base import Model
from medbench.prompts import prompt_hash, render_prompt
from medbench.provenance import environment, redact_urls, stable_hash
from medbench.registry import check_model_name, create_model, get_task
from medbench.schema import Request, Sample
from medbench.scoring.aggregate import (
    ScoringOptions,
    aggregate,
    answer_of,
    headline_protocol,
    score_batch,
    subgroups_vqa,
)
from medbench.scoring.bertscore import choose_model
from medbench.scoring.bertscore import variant as bertscore_variant
from medbench.scoring.caption import lexical_variants
from medbench.scoring.judged import agreement_report
from medbench.scoring.protocols import get_protocol, protocols
from medbench.stats import DEFAULT_RESAMPLES
from medbench.tasks.base import LoadedSplit, LoadOptions, Skipped, Task, locate

MAX_NEW_TOKENS = {"vqa": 32, "caption": 256}
DEFAULT_MODELS = ("prior", "yes")


@dataclass
class RunConfig:
    """Everything that decides a run's numbers; hashed into ``run.json``."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    tasks: list[str] = field(default_factory=list)
    output: Path = Path("runs")
    data_dir: Path | None = None
    demo: bool = False
    split: str = "test"
    limit: int | None = None
    closed_rule: str = "yesno"
    protocol: str = "strict"
    prompt: str = "role"
    image_size: int = 512
    full: bool = False
    seed: int = 0
    resamples: int = DEFAULT_RESAMPLES
    batch_size: int | None = None
    verify_images: bool = True
    bertscore_model: str | None = None
    bertscore_layers: int | None = None
    cache: Path | None = None  # None: default_cache_path()
    no_cache: bool = False
    model_args: dict[str, dict[str, str]] = field(default_factory=dict)
    judge: str | None = None  # --judge: a preset (deepseek), another name with judge_base_url + judge_model, hf:<path>
    judge_base_url: str | None = None
    judge_model: str | None = None
    judge_api_key_env: str | None = None  # the variable's name; the key itself is read from the environment only
    judge_concurrency: int = 16
    judge_max_retries: int = 6
    judge_timeout: float = 600.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["output"] = str(self.output)
        data["data_dir"] = str(self.data_dir) if self.data_dir else None
        data["cache"] = str(self.cache) if self.cache else None
        return redact_urls(data)  # a URL may carry credentials (user:pass@host, ?api_key=...)


@dataclass
class PreparedTask:
    """A loaded task split, its images checked, ready for every model."""

    task: Task
    split: LoadedSplit
    samples: list[Sample]
    skipped: list[Skipped]
    info: dict[str, Any]


Progress = Callable[[str, int], Any]  # (description, total) -> context manager yielding advance(n)


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


def _closed_counts(samples: Sequence[Sample]) -> dict[str, int]:
    counts = Counter(s.answer_type for s in samples)
    return {"closed": counts.get("closed", 0), "open": counts.get("open", 0)}


def prepare_task(name: str, config: RunConfig, progress: Progress) -> PreparedTask:
    """Locate, load and check one task's evaluation split."""
    task = get_task(name)
    if config.split not in task.splits:
        raise DataError(f"task {name!r} has no split {config.split!r}; it has {', '.join(task.splits)}")
    source = locate(task, config.split, data_dir=config.data_dir, demo=config.demo)
    options = LoadOptions(closed_rule=config.closed_rule, full=config.full, seed=config.seed)
    loaded = task.load(source, config.split, options)
    skipped = list(loaded.skipped)
    samples = loaded.samples[: config.limit] if config.limit else list(loaded.samples)
    if config.verify_images and samples:
        good: list[Sample] = []
        with progress(f"checking images {name}", len(samples)) as advance:
            for sample in samples:
                try:
                    check_image(sample.image)
                    good.append(sample)
                except SampleError as exc:
                    skipped.append(Skipped(sample.image.describe(), str(exc), sample.id))
                advance(1)
        samples = good
    if not samples:
        reasons = "; ".join(s.reason for s in skipped[:3])
        raise DataError(f"task {name!r}: no usable samples in {source.root} ({len(skipped)} skipped: {reasons})")
    info = {
        "split": config.split,
        "kind": task.kind,
        "data": source.describe() | {"layout": loaded.layout, "checksum": loaded.checksum(), "files": loaded.files},
        "n_samples": len(samples),
        "n_loaded": len(loaded.samples),
        "limit": config.limit,
        "skipped": {"count": len(skipped), "samples": [s.as_dict() for s in skipped]},
        "notes": loaded.notes,
    }
    if task.kind == "vqa":
        fallback = sum(1 for s in samples if s.metadata.get("closed_rule_fallback"))
        info["closed_rule"] = {
            "rule": config.closed_rule,
            **_closed_counts(samples),
            "fallback_to_yesno": fallback,
        }
    else:
        info["metric_variants"] = lexical_variants()
    info["prompt"] = {"style": config.prompt, "sha256": prompt_hash(config.prompt, task.kind)}
    return PreparedTask(task, loaded, samples, skipped, info)


def _training_split(task: Task, config: RunConfig) -> list[Sample]:
    source = locate(task, "train", data_dir=config.data_dir, demo=config.demo)
    return task.load(source, "train", LoadOptions(closed_rule=config.closed_rule, full=True)).samples


def run_model_on_task(
    model: Model,
    prepared: PreparedTask,
    config: RunConfig,
    out_dir: Path,
    progress: Progress,
    scoring: ScoringOptions,
    cache: PredictionCache,
    judge: Judging | None = None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Outputs (cached or generated), scores, judgements (with a judge) and ``predictions/<model>/<task>.jsonl``
    for one model and task.

    The JSONL file is rebuilt in dataset order from the outputs, so a resumed run writes exactly the file an
    uninterrupted run would. Returns the rows and the generated/cached/skipped (and judge) counts.
    """
    task, kind = prepared.task, prepared.task.kind
    requests = [
        Request(
            s.id,
            task.name,
            kind,
            render_prompt(config.prompt, kind, s.question),
            s.question,
            s.image,
            config.image_size or None,
            MAX_NEW_TOKENS[kind],
        )
        for s in prepared.samples
    ]
    keys = request_keys(model, requests, prompt_style=config.prompt, data_checksum=prepared.split.checksum())
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
            batch_size=config.batch_size or model.batch_size,
            advance=advance,
        )
    parts = job.gather((result.outputs, result.generated, result.cached))
    if not job.is_main:
        return [], {}
    merged = {sample_id: text for outputs_part, _, _ in parts for sample_id, text in outputs_part.items()}
    samples = prepared.samples
    outputs = [merged[s.id] for s in samples]
    scores = score_batch(kind, outputs, [s.reference for s in samples], [s.answer_type for s in samples], scoring)
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
            "scores": score,
        }
        for s, output, score in zip(samples, outputs, scores, strict=True)
    ]
    judge_counts: dict[str, int] = {}
    if judge is not None:
        from medbench.judges.runs import judge_rows, targets

        with progress(f"judge · {model.name} · {task.name}", len(targets(kind, rows))) as advance:
            judge_counts = judge_rows(kind, rows, judge.backend, judge.cache, advance)
    write_jsonl_atomic(out_dir / "predictions" / safe_name(model.name) / f"{task.name}.jsonl", rows)
    counts = {
        "generated": sum(g for _, g, _ in parts),
        "cached": sum(c for _, _, c in parts),
        "skipped": len(prepared.skipped),
        "empty_outputs": sum(1 for o in outputs if not o.strip()),
        **judge_counts,
    }
    return rows, counts


def safe_name(model_name: str) -> str:
    """A model name usable as a folder name (``hf:/x/y+lora:z`` -> ``hf__x_y+lora_z``)."""
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in model_name).strip("._") or "model"


def _skip_write(path: Path, data: Any) -> None:
    """Non-main ranks of a distributed run write nothing."""


def execute(config: RunConfig, progress: Progress, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every model on every task and write the run directory; returns the results document."""
    for name in config.models:
        check_model_name(name)
    get_protocol(config.protocol)
    bertscore = choose_model(config.bertscore_model, config.bertscore_layers)
    cache_path = None if config.no_cache else (config.cache or default_cache_path())
    # The judge is set up before any work, so a missing key or model stops the run at once. Rank 0 judges the
    # merged rows of a distributed run.
    judging = Judging.start(config, cache_path) if world().is_main else None
    out_dir = config.output
    job = world()
    save = write_json_atomic if job.is_main else _skip_write  # only rank 0 writes the run directory
    if job.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run_info: dict[str, Any] = {
        "medbench_version": __version__,
        "status": "running",
        "started": started,
        "argv": redact_urls(list(argv if argv is not None else sys.argv)),
        "config": config.to_json(),
        "config_sha256": stable_hash(config.to_json()),
        "seeds": {"bootstrap": config.seed, "bootstrap_resamples": config.resamples},
        "data": "demo" if config.demo else "user",
        "world_size": job.size,
        **environment(),
    }
    save(out_dir / "run.json", run_info)

    prepared = {name: prepare_task(name, config, progress) for name in config.tasks}
    run_info["tasks"] = {name: {k: v for k, v in p.info.items() if k != "skipped"} for name, p in prepared.items()}
    save(out_dir / "run.json", run_info)

    results: dict[str, Any] = {
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
        "metrics": {},
        "subgroups": {},
    }
    cache = PredictionCache(cache_path)
    run_info["cache"] = str(cache.path) if cache.path else None
    if judging is not None:
        results["judge"] = run_info["judge"] = judging.describe()
        results["scoring"]["protocols"]["clinical"] += (
            f"; with the LLM equivalence judge {judging.backend.model} on open answers neither accepts"
        )
        results["judge_agreement"] = {}
        save(out_dir / "run.json", run_info)
    run_info["counts"] = {}
    for model_name in config.models:
        model = create_model(model_name, **config.model_args.get(model_name, {}))
        run_info["counts"][model_name] = {}
        results["metrics"][model_name] = {}
        results["subgroups"][model_name] = {}
        for name, task_data in prepared.items():
            if model.needs_training_data:
                model.fit(name, _training_split(task_data.task, config))
            started_at = time.perf_counter()
            scoring = ScoringOptions(config.resamples, config.seed, bertscore, task_data.task.subgroup_fields)
            rows, counts = run_model_on_task(model, task_data, config, out_dir, progress, scoring, cache, judging)
            if not job.is_main:
                continue
            run_info["counts"][model_name][name] = counts
            save(out_dir / "run.json", run_info)
            elapsed = time.perf_counter() - started_at
            results["metrics"][model_name][name] = aggregate(task_data.task.kind, rows, scoring)
            if task_data.task.kind == "vqa" and scoring.subgroup_fields:
                results["subgroups"][model_name][name] = subgroups_vqa(rows, scoring)
            if judging is not None:
                # What the server says it ran (an alias like deepseek-chat moves between model versions).
                seen = {r["judge"].get("server_model") for r in rows if "judge" in r} - {None}
                judge_info = results["judge"]  # the same dict as run_info["judge"]
                judge_info["server_models"] = sorted(set(judge_info.get("server_models", [])) | seen)
            if judging is not None and task_data.task.kind == "vqa":
                report = agreement_report(rows, config.resamples, config.seed)
                results["judge_agreement"].setdefault(model_name, {})[name] = report
            results["models"][model_name] = model.describe() | {"fingerprint": model.fingerprint()}
            results["tasks"][name].setdefault("timing", {})[model_name] = {
                "seconds": round(elapsed, 3),
                "samples_per_s": round(len(rows) / elapsed, 1) if elapsed else None,
            }
            save(out_dir / "results.json", results)
    cache.close()
    if judging is not None:
        judging.cache.close()
    results["counts"] = run_info["counts"]
    save(out_dir / "results.json", results)
    run_info.update(status="complete", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    save(out_dir / "run.json", run_info)
    return results
