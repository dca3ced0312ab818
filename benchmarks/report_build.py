"""Report build benchmark: ``build_report`` on 5 models x 4 full-size synthetic test sets, then the pages in Chromium.

Makes real run directories through the results contract — rows shaped like ``medbench run`` writes them, scored
with :func:`medbench.evaluation.evaluate_rows`, ``results.json`` written by :class:`medbench.results.RunResults`,
``predictions/<safe_name(model)>/<task>.jsonl`` whose ``image`` records point at real JPEGs in a synthetic data
root (``results.json`` ``tasks[task].data.root``) — for SLAKE-en 1,061 / VQA-RAD 451 / PathVQA 6,719 / ROCOv2
9,927 rows per model (~90k rows for 5 models) over 96 / 203 / 858 / 9,927 distinct ~512 px images. The images are
generated once and cached (``--images``); their generation and the run directories are timed apart from the build.
One model pair is ``X`` and ``X+lora:...``, so the report's default paired comparison has something to compare.

Then times ``medbench.reports.site.build_report(run_dirs, out)`` cold (fresh ``out``) and warm (a second build
into the same ``out``: thumbnails exist), measures every page it wrote (``out/**/*.html``: the index and, once
they exist, the sample browser pages), and, unless ``--no-browser``, loads the index and the largest page of each
other kind in headless Chromium (Playwright) from a local HTTP server on 127.0.0.1: milliseconds from navigation
start to ``document.documentElement.dataset.ready == "1"`` (``performance.now()``), and for each control found on
the page (next page, filter, protocol switch, sort) the milliseconds from the click until the first DOM change,
layout included. The naive way runs in the same process for comparison: the same rows as one static HTML table
per model x task, every row, no pagination, thumbnails inlined as data URLs (128 px JPEG, one per distinct image).
A page that never sets the ready flag shows "never" (its load-event time is still shown) and is not clicked.
BERTScore is not computed for the synthetic runs (many minutes on 2 cores; its column shows "–").

Targets (issue 11): cold build under 30 s on 2 cores, index.html under 2 MB, every page interactive within 1 s.

Run: python benchmarks/report_build.py [--models 5] [--scale 1.0] [--keep DIR] [--no-browser]
Quick check: python benchmarks/report_build.py --scale 0.1
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import html
import io
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from cpu_scoring import WORDS, caption_rows, host_probe, vqa_rows  # the sibling benchmark's row generators
from PIL import Image, ImageDraw, ImageFilter

from medbench import __version__
from medbench.evaluation import evaluate_rows
from medbench.fileio import write_json_atomic, write_jsonl_atomic
from medbench.preparation import data_checksums
from medbench.prompts import prompt_hash
from medbench.provenance import environment
from medbench.registry import get_task
from medbench.results import Comparability, RunResults, TaskResult, comparability_settings, image_record, safe_name
from medbench.schema import ImageRef, Sample, TaskKind
from medbench.scoring.aggregate import ScoringOptions, answer_of, headline_protocol
from medbench.scoring.bertscore import BertScoreChoice
from medbench.scoring.bertscore import variant as bertscore_variant
from medbench.scoring.caption import lexical_variants
from medbench.scoring.protocols import protocols
from medbench.stats import DEFAULT_RESAMPLES
from medbench.tasks.base import LoadOptions

DEFAULT_IMAGES = Path(tempfile.gettempdir()) / "medbench-report-bench" / "images"
MARKER = ".report_build"  # marks a --keep folder as this benchmark's, so a rerun may clear what it wrote there
IMAGE_SIZE = 512
PROMPT_STYLE = "role"
HEADLINE = "strict"
# BERTScore over ~50k captions takes many minutes on 2 CPU cores and does not change the page's size or shape
# (one more number per caption row), so the synthetic runs record it as not computed, like a run without it.
NO_BERTSCORE = BertScoreChoice(None, None, "not computed (benchmarks/report_build.py: synthetic runs)")
TARGET_BUILD_S = 30.0
TARGET_INDEX_BYTES = 2 * 1024 * 1024
TARGET_READY_MS = 1000.0
NAIVE_THUMB = 128  # px, longest side of the naive page's inlined thumbnails


@dataclass(frozen=True)
class TaskSpec:
    """One test set's shape: rows per model, distinct images, how its images look and where they lie."""

    name: str
    rows: int
    images: int
    color: float  # fraction of colour images (pathology photographs are colour, radiology mostly grey)
    pattern: str  # relative image path inside the task's data root, formatted with the image number

    def scaled(self, scale: float) -> tuple[int, int]:
        """(rows, distinct images) at ``scale``: at least one of each, never more images than rows."""
        rows = max(1, round(self.rows * scale))
        return rows, min(rows, max(1, round(self.images * scale)))


TASKS = (
    TaskSpec("slake", 1061, 96, 0.0, "imgs/xmlab{:d}/source.jpg"),
    TaskSpec("vqa_rad", 451, 203, 0.0, "VQA_RAD Image Folder/synpic{:05d}.jpg"),
    TaskSpec("pathvqa", 6719, 858, 1.0, "images/test/test_{:04d}.jpg"),
    TaskSpec("rocov2", 9927, 9927, 0.1, "test/ROCOv2_2023_test_{:06d}.jpg"),
)


@dataclass(frozen=True)
class ModelSpec:
    """A synthetic model: how often it is right (shared per-sample difficulty makes models agree on easy samples,
    as real ones do, so paired comparisons have correlated pairs) and how it words its answers."""

    name: str
    skill: float
    style: str  # "bare" | "sentence" | "verbose"


MODELS = (
    ModelSpec("hf:meta-llama/Llama-3.2-11B-Vision-Instruct", 0.45, "verbose"),
    ModelSpec("hf:meta-llama/Llama-3.2-11B-Vision-Instruct+lora:adapters/llama32-med", 0.72, "bare"),
    ModelSpec("hf:microsoft/llava-med-v1.5-mistral-7b", 0.55, "sentence"),
    ModelSpec("hf:Qwen/Qwen2-VL-7B-Instruct", 0.60, "sentence"),
    ModelSpec("openai:gpt-4o-2024-08-06", 0.62, "verbose"),
)

# Realistic metadata values, so subgroup breakdowns and filters have the datasets' categories.
SLAKE_MODALITY = ("CT", "MRI", "X-Ray")
SLAKE_LOCATION = ("Abdomen", "Lung", "Head", "Chest", "Pelvic Cavity", "Neck", "Brain")
SLAKE_CONTENT = ("Organ", "Abnormality", "Position", "Modality", "Size", "Plane", "Color", "Quantity", "KG")
RAD_QTYPE = ("PRES", "POS", "ABN", "MODALITY", "ORGAN", "SIZE", "PLANE", "OTHER", "ATTRIB", "COUNT", "COLOR")
RAD_ORGAN = ("HEAD", "CHEST", "ABD")
RAD_PHRASE = ("test_freeform", "test_para")
CUIS = ("C0040405", "C0024485", "C1306645", "C0817096", "C0000726", "C0037303", "C1140618", "C0006141")


def stable_seed(*parts: object) -> int:
    """A seed from ``parts`` that is the same in every process and Python version (``hash()`` is salted)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


# --- synthetic images ------------------------------------------------------------------------------------------


def synthetic_jpeg(seed: int, color: bool) -> bytes:
    """A ~512 px JPEG that compresses like a scan: smooth anatomy-like blobs, a few ellipses, mild noise."""
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(448, 641)), int(rng.integers(448, 641))
    # colour: H&E-like pinks and purples; else grey levels
    low = rng.random((12, 12, 3)) * [0.45, 0.35, 0.35] + [0.55, 0.25, 0.5] if color else rng.random((12, 12))
    image = Image.fromarray((low * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x, y, r = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(15, 120))
        fill: Any = tuple(int(v) for v in rng.integers(60, 255, 3)) if color else int(rng.integers(0, 255))
        draw.ellipse([x - r, y - int(r * rng.uniform(0.5, 1.5)), x + r, y + r], fill=fill)
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(2))).astype(np.int16)
    pixels += rng.integers(-10, 11, size=pixels.shape, dtype=np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _write_image(job: tuple[str, int, bool]) -> None:
    """Worker: write one image atomically (a killed generation never leaves a truncated JPEG in the cache)."""
    path, seed, color = job
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    partial.write_bytes(synthetic_jpeg(seed, color))
    os.replace(partial, target)


def image_path(images: Path, spec: TaskSpec, number: int) -> Path:
    return images / spec.name / spec.pattern.format(number + 1)


def ensure_images(images: Path, counts: dict[str, int]) -> tuple[int, int, float]:
    """Generate the missing images (image ``k`` of a task is always the same picture, so a smaller ``--scale``
    reuses the first ones); returns (generated, reused, seconds)."""
    jobs: list[tuple[str, int, bool]] = []
    total = 0
    for spec in TASKS:
        for k in range(counts.get(spec.name, 0)):
            total += 1
            path = image_path(images, spec, k)
            if not path.is_file():
                color = random.Random(stable_seed(spec.name, k, "color")).random() < spec.color
                jobs.append((str(path), stable_seed(spec.name, k), color))
    started = time.perf_counter()
    if jobs:
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(_write_image, jobs, chunksize=64))
    return len(jobs), total - len(jobs), time.perf_counter() - started


# --- synthetic test sets and predictions -----------------------------------------------------------------------


@dataclass
class SyntheticSet:
    """One task's samples (shared by every model and run) and its ``results.json`` task record."""

    spec: TaskSpec
    kind: TaskKind
    root: Path
    samples: list[Sample]
    sha256: dict[str, str]  # sample id -> image sha256
    difficulty: list[float]  # per sample, shared by every model
    info: dict[str, Any] = field(default_factory=dict)


def _question(rng: random.Random, closed: bool) -> str:
    if closed:
        return rng.choice(
            (
                f"Is there a {rng.choice(WORDS)} in the {rng.choice(WORDS)}?",
                f"Does the image show {rng.choice(WORDS)} {rng.choice(WORDS)}?",
                f"Is this a {rng.choice(WORDS)} image?",
                "Is this image normal?",
            )
        )
    return rng.choice(
        (
            "What modality is used to take this image?",
            f"Where is the {rng.choice(WORDS)} located?",
            f"Which organ is {rng.choice(WORDS)} in this image?",
            "What is the main abnormality in this image?",
            f"What does the {rng.choice(WORDS)} {rng.choice(WORDS)} show?",
        )
    )


def _metadata(task: str, rng: random.Random, image_id: str, number: int) -> dict[str, Any]:
    """What each task's loader records per sample (:mod:`medbench.tasks`), with plausible values."""
    meta: dict[str, Any] = {"split": "test", "image_id": image_id}
    if task == "slake":
        meta.update(
            modality=rng.choice(SLAKE_MODALITY),
            location=rng.choice(SLAKE_LOCATION),
            content_type=rng.choice(SLAKE_CONTENT),
            base_type="vqa",
        )
    elif task == "vqa_rad":
        meta.update(
            qid=str(number),
            question_type=rng.choice(RAD_QTYPE),
            image_organ=rng.choice(RAD_ORGAN),
            phrase_type=rng.choice(RAD_PHRASE),
        )
    elif task == "rocov2":
        meta["cuis"] = rng.sample(CUIS, rng.randint(1, 3))
    return meta


def synthetic_set(spec: TaskSpec, scale: float, images: Path) -> SyntheticSet:
    """The task's gold rows (cpu_scoring's generators: ~half yes/no golds, 8-30 word captions) on its images,
    as the task's own loader would build :class:`~medbench.schema.Sample` objects (its closed/open rule)."""
    n_rows, n_images = spec.scaled(scale)
    rng = random.Random(stable_seed("gold", spec.name))
    golds = caption_rows(n_rows, rng) if spec.name == "rocov2" else vqa_rows(spec.name, n_rows, rng)
    task = get_task(spec.name)
    root = images / spec.name
    samples, sha256, digests = [], {}, {}
    for i, gold in enumerate(golds):
        number = i * n_images // n_rows  # questions come in runs per image, as in the real sets
        path = image_path(images, spec, number)
        ref = ImageRef("file", str(path))
        if ref not in digests:
            digests[ref] = hashlib.sha256(path.read_bytes()).hexdigest()
        sample_id = f"ROCOv2_2023_test_{number + 1:06d}" if spec.name == "rocov2" else str(gold["id"])
        meta = _metadata(spec.name, rng, path.relative_to(root).as_posix(), i)
        if task.kind == "caption":
            sample = Sample(sample_id, spec.name, ref, None, str(gold["reference"]), None, meta)
        else:
            closed = gold["answer_type"] == "closed"
            sample = task.vqa_sample(
                sample_id=sample_id,
                image=ref,
                question=_question(rng, closed),
                reference=str(gold["reference"]),
                dataset_label="CLOSED" if closed else "OPEN",
                options=LoadOptions(),
                metadata=meta,
            )
        samples.append(sample)
        sha256[sample_id] = digests[ref]
    difficulty = [random.Random(stable_seed("difficulty", spec.name, s.id)).random() for s in samples]
    out = SyntheticSet(spec, task.kind, root, samples, sha256, difficulty)
    out.info = _task_info(out, digests)
    return out


def _task_info(data: SyntheticSet, digests: dict[ImageRef, str]) -> dict[str, Any]:
    """``results.json`` ``tasks[task]``, the shape :func:`medbench.preparation.prepare_task` records."""
    annotations = hashlib.sha256(
        json.dumps([[s.id, s.question, s.reference] for s in data.samples]).encode()
    ).hexdigest()
    info: dict[str, Any] = {
        "split": "test",
        "kind": data.kind,
        "data": {
            "source": "local",
            "root": str(data.root),
            "layout": "synthetic (benchmarks/report_build.py)",
            **data_checksums(annotations, data.samples, digests),
            "files": {},
            "images": len(set(digests.values())),
        },
        "n_samples": len(data.samples),
        "n_loaded": len(data.samples),
        "limit": None,
        "skipped": {"count": 0, "samples": []},
        "notes": {"synthetic": True},
    }
    if data.kind == "vqa":
        closed = sum(1 for s in data.samples if s.answer_type == "closed")
        info["closed_rule"] = {
            "rule": "yesno",
            "closed": closed,
            "open": len(data.samples) - closed,
            "fallback_to_yesno": 0,
        }
    else:
        info["metric_variants"] = lexical_variants()
    info["warnings"] = []
    info["prompt"] = {"style": PROMPT_STYLE, "sha256": prompt_hash(PROMPT_STYLE, data.kind)}
    return info


def _vqa_prediction(model: ModelSpec, sample: Sample, right: bool, rng: random.Random) -> str:
    if rng.random() < 0.02:
        return ""  # real models sometimes return nothing
    if right:
        answer = sample.reference
    elif sample.answer_type == "closed":
        answer = "no" if sample.reference.lower() == "yes" else "yes"
    else:
        answer = " ".join(rng.sample(WORDS, rng.randint(1, 3)))
    if model.style == "bare":
        return answer
    if model.style == "sentence":
        return f"The answer is: {answer}."
    return f"{answer.capitalize()}. " + " ".join(rng.choices(WORDS, k=rng.randint(5, 25))) + "."


def _caption_prediction(model: ModelSpec, sample: Sample, rng: random.Random) -> str:
    words = sample.reference.rstrip(".").split()
    length = max(3, len(words) + rng.randint(-6, 10))
    out = [words[min(i, len(words) - 1)] if rng.random() < model.skill else rng.choice(WORDS) for i in range(length)]
    return " ".join(out).capitalize() + "."


def prediction_rows(model: ModelSpec, data: SyntheticSet) -> list[dict[str, Any]]:
    """The rows ``medbench run`` writes for one (model, task), before scoring (see ``run_model_on_task``)."""
    rng = random.Random(stable_seed("predictions", model.name, data.spec.name))
    rows = []
    for sample, hardness in zip(data.samples, data.difficulty, strict=True):
        if data.kind == "caption":
            prediction = _caption_prediction(model, sample, rng)
        else:
            right = (hardness < model.skill) != (rng.random() < 0.1)  # mostly by difficulty, some noise
            prediction = _vqa_prediction(model, sample, right, rng)
        rows.append(
            {
                "id": sample.id,
                "task": data.spec.name,
                "model": model.name,
                "answer_type": sample.answer_type,
                "question": sample.question,
                "reference": sample.reference,
                "prediction": prediction,
                "answer": answer_of(data.kind, prediction),
                "metadata": dict(sample.metadata),
                "image": image_record(sample.image, data.root, data.sha256[sample.id]),
                "scores": {},
            }
        )
    return rows


# --- run directories -------------------------------------------------------------------------------------------


def run_header(sets: Sequence[SyntheticSet], resamples: int) -> dict[str, Any]:
    """The ``results.json`` header the runner writes (``medbench.runner._evaluate``)."""
    return {
        "medbench_version": __version__,
        "data": "user",
        "headline_protocol": HEADLINE,
        "closed_rule": "yesno",
        "tasks": {d.spec.name: d.info for d in sets},
        "headline": {d.spec.name: headline_protocol(d.kind, HEADLINE) for d in sets},
        "scoring": {
            "protocols": {name: p.description for name, p in protocols().items()},
            "bertscore": bertscore_variant(NO_BERTSCORE),
            "bootstrap": {"method": "percentile", "resamples": resamples, "seed": 0},
        },
        "models": {},
    }


def write_run(run_dir: Path, models: Sequence[ModelSpec], sets: Sequence[SyntheticSet], resamples: int) -> None:
    """One run directory: predictions per (model, task), ``results.json`` and ``run.json``."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results = RunResults(run_header(sets, resamples), run_dir=run_dir)
    for model in models:
        results.header["models"][model.name] = {
            "name": model.name,
            "class": "SyntheticModel",
            "options": {"skill": model.skill, "style": model.style},
            "fingerprint": hashlib.sha256(model.name.encode()).hexdigest()[:16],
        }
        for data in sets:
            task = data.spec.name
            rows = prediction_rows(model, data)
            options = ScoringOptions(resamples, 0, NO_BERTSCORE, get_task(task).subgroup_fields)
            evaluation = evaluate_rows(data.kind, rows, options)
            write_jsonl_atomic(run_dir / "predictions" / safe_name(model.name) / f"{task}.jsonl", rows)
            counts = {
                "n": len(rows),
                "generated": len(rows),
                "cached": 0,
                "skipped": 0,
                "generation_failed": 0,
                "empty_outputs": sum(1 for r in rows if not r["prediction"].strip()),
            }
            settings = comparability_settings(
                task=task,
                task_info=data.info,
                scoring=results.header["scoring"],
                judge=None,
                image_size=IMAGE_SIZE,
                max_new_tokens=get_task(task).max_new_tokens,
            )
            results.add(
                TaskResult(
                    model=model.name,
                    task=task,
                    metrics=evaluation.metrics,
                    counts=counts,
                    comparability=Comparability.of(settings),
                    subgroups=evaluation.subgroups if options.subgroup_fields else None,
                )
            )
    results.write(run_dir)
    record = {
        "medbench_version": __version__,
        "status": "complete",
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": ["benchmarks/report_build.py", *sys.argv[1:]],
        "data": "user",
        "seeds": {"bootstrap": 0, "bootstrap_resamples": resamples},
        **environment(),
    }
    write_json_atomic(run_dir / "run.json", record)


def model_specs(count: int) -> list[ModelSpec]:
    """The first ``count`` models (the LoRA pair first); beyond the five named ones, more synthetic models."""
    extra = [ModelSpec(f"hf:synthetic/vlm-{k}", 0.4 + 0.03 * (k % 10), "sentence") for k in range(count)]
    return [*MODELS, *extra][:count]


def run_groups(models: Sequence[ModelSpec]) -> list[tuple[str, list[ModelSpec]]]:
    """Run directories as people make them: the base model and its adapter in one run, every other model in its
    own (so the report reads several runs)."""
    groups = [("llama32-11b", list(models[:2]))]
    groups += [(safe_name(m.name), [m]) for m in models[2:]]
    return groups


# --- the naive way ---------------------------------------------------------------------------------------------


NAIVE_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>body{{font:14px system-ui,sans-serif}} td{{border-bottom:1px solid #eee;vertical-align:top}}</style>
</head><body><h1>{title}</h1><p><input type="search" id="filter" placeholder="filter rows"></p>
<table id="rows"><thead><tr><th>id</th><th>image</th><th>question</th><th>reference</th><th>prediction</th>
<th>scores</th></tr></thead><tbody>
"""
NAIVE_TAIL = """</tbody></table>
<script>
(function () {
  var box = document.getElementById("filter"), rows = document.querySelectorAll("#rows tbody tr");
  box.addEventListener("input", function () {
    var q = box.value.toLowerCase();
    rows.forEach(function (tr) { tr.style.display = tr.textContent.toLowerCase().indexOf(q) >= 0 ? "" : "none"; });
  });
  document.documentElement.dataset.ready = "1";
})();
</script></body></html>
"""


def _data_url(path: Path) -> str:
    with Image.open(path) as image:
        image.draft("RGB", (NAIVE_THUMB, NAIVE_THUMB))  # decode at reduced scale, as any sensible thumbnailer does
        thumb = image.convert("RGB")
        thumb.thumbnail((NAIVE_THUMB, NAIVE_THUMB))
        buffer = io.BytesIO()
        thumb.save(buffer, "JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def build_naive(run_dirs: Sequence[Path], out: Path) -> int:
    """The same rows as one static page per (model, task), every row, thumbnails inlined; returns pages written."""
    thumbs: dict[Path, str] = {}  # per distinct image: the naive way gets that much credit
    pages = 0
    for run_dir in run_dirs:
        doc = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        for model in doc["metrics"]:
            for task, info in doc["tasks"].items():
                root = Path(info["data"]["root"])
                source = run_dir / "predictions" / safe_name(model) / f"{task}.jsonl"
                target = out / safe_name(model) / f"{task}.html"
                target.parent.mkdir(parents=True, exist_ok=True)
                with source.open(encoding="utf-8") as lines, target.open("w", encoding="utf-8") as page:
                    page.write(NAIVE_HEAD.format(title=html.escape(f"{model} · {task}")))
                    for line in lines:
                        row = json.loads(line)
                        path = root / row["image"]["path"]
                        if path not in thumbs:
                            thumbs[path] = _data_url(path)
                        scores = ", ".join(f"{k} {v:.2f}" for k, v in row["scores"].items() if v is not None)
                        cells = (row["id"], row["question"] or "", row["reference"], row["prediction"], scores)
                        text = [html.escape(str(c)) for c in cells]
                        page.write(
                            f'<tr><td>{text[0]}</td><td><img src="{thumbs[path]}" alt=""></td>'
                            f"<td>{text[1]}</td><td>{text[2]}</td><td>{text[3]}</td><td>{text[4]}</td></tr>\n"
                        )
                    page.write(NAIVE_TAIL)
                pages += 1
    return pages


# --- pages and the browser -------------------------------------------------------------------------------------


def html_pages(folder: Path) -> list[Path]:
    return sorted(folder.glob("**/*.html"))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("**/*") if p.is_file())


def pages_to_measure(site: Path) -> list[tuple[str, Path]]:
    """(page type, page): the index, then the largest page of every other kind (by its top folder: the sample
    browser's ``samples/``, its paired ``samples/<A>~vs~<B>/`` pages, and whatever else the report grows)."""
    chosen: list[tuple[str, Path]] = []
    if (site / "index.html").is_file():
        chosen.append(("index", site / "index.html"))
    by_kind: dict[str, list[Path]] = {}
    for page in html_pages(site):
        relative = page.relative_to(site)
        if relative != Path("index.html"):
            kind = relative.parts[0] if len(relative.parts) > 1 else "other pages"
            if len(relative.parts) > 2 and "~vs~" in relative.parts[1]:
                kind += " (paired)"  # a comparison's sample pages (samples/<A>~vs~<B>/) are a page type of their own
            by_kind.setdefault(kind, []).append(page)
    for kind, pages in sorted(by_kind.items()):
        chosen.append((f"largest {kind}", max(pages, key=lambda p: p.stat().st_size)))
    return chosen


# Records the moment the page marks itself ready. Runs before any page script (Playwright init script, which CSP
# does not block); it watches the document, since <html> may not exist yet when it runs.
READY_PROBE = """
(() => {
  const mark = () => {
    const root = document.documentElement;
    if (window.__readyAt === undefined && root && root.dataset.ready === "1") window.__readyAt = performance.now();
  };
  new MutationObserver(mark).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-ready"]});
})();
"""

# The controls measured on each page: (label, how to find it, what to do). The first element matching a
# selector is used; a label's later selectors are tried only when the earlier ones match nothing.
CONTROLS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "next page",
        (
            "#next:not([disabled])",
            "[data-action=next]:not([disabled])",
            "[data-page=next]:not([disabled])",
            "button.next:not([disabled])",
            "a[rel=next]",
            "text:next",
        ),
        "click",
    ),
    ("filter", ("select[data-filter]", "select.filter", "input[type=search]"), "auto"),
    ("protocol switch", ("select#protocol",), "auto"),
    ("sort", ("th[data-sortable]",), "click"),
)

# In the page: act on the control and time, with performance.now(), the first DOM change after it (layout
# forced inside the mutation callback, so the time includes laying out the new view) and the last one before
# the page stays quiet for 300 ms (async rendering, chunked updates). Null when no element matches.
INTERACT = """
async ({selectors, action}) => {
  let el = null;
  for (const s of selectors) {
    if (s.startsWith("text:")) {
      const word = s.slice(5);
      el = [...document.querySelectorAll("button, a")].find(
        (b) => !b.disabled && b.textContent.toLowerCase().includes(word)) || null;
    } else {
      el = document.querySelector(s);
    }
    if (el) break;
  }
  if (!el) return null;
  let first = null, last = null;
  const observer = new MutationObserver(() => {
    document.body.getBoundingClientRect();
    const now = performance.now();
    if (first === null) first = now;
    last = now;
  });
  observer.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
  const kind = action !== "auto" ? action : el.tagName === "SELECT" ? "select" : "input";
  const start = performance.now();
  if (kind === "select") {
    el.selectedIndex = (el.selectedIndex + 1) % el.options.length;
    el.dispatchEvent(new Event("change", {bubbles: true}));
  } else if (kind === "input") {
    el.value = "yes";
    el.dispatchEvent(new Event("input", {bubbles: true}));
  } else {
    el.click();
  }
  await new Promise((resolve) => {
    const poll = () => {
      const now = performance.now();
      if ((first !== null && now - last > 300) || now - start > 10000) resolve(); else setTimeout(poll, 20);
    };
    setTimeout(poll, 0);
  });
  observer.disconnect();
  if (first === null) return {changed: false, first: null, last: null};
  return {changed: true, first: first - start, last: last - start};
}
"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving ``root`` for the duration."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class PageTiming:
    """Medians over the repeats: load event, ready flag (None: the page never set it) and each control."""

    load_ms: float | None
    ready_ms: float | None
    controls: dict[str, tuple[float | None, float | None]]  # label -> (first DOM change ms, settled ms)


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def measure_page(browser: Any, url: str, repeats: int, grace_s: float) -> PageTiming:
    """Load ``url`` ``repeats`` times, each in a fresh browser context (nothing cached), and time it."""
    loads: list[float | None] = []
    readies: list[float | None] = []
    controls: dict[str, list[tuple[float | None, float | None]]] = {}
    for _ in range(repeats):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_init_script(READY_PROBE)
        page = context.new_page()
        try:
            page.goto(url, wait_until="load", timeout=300_000)
            try:  # a page that finishes initialising after load gets grace_s more
                page.wait_for_function("window.__readyAt !== undefined", timeout=grace_s * 1000)
                readies.append(float(page.evaluate("window.__readyAt")))
            except Exception:  # Playwright's TimeoutError: the page never marks itself ready
                readies.append(None)
            loads.append(float(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")))
            if readies[-1] is not None:  # a page that is not ready is not measured for interaction
                for label, selectors, action in CONTROLS:
                    timing = page.evaluate(INTERACT, {"selectors": list(selectors), "action": action})
                    if timing is not None:
                        controls.setdefault(label, []).append((timing["first"], timing["last"]))
        finally:
            context.close()
    return PageTiming(
        _median(loads),
        _median(readies) if all(r is not None for r in readies) else None,
        {k: (_median([f for f, _ in v]), _median([s for _, s in v])) for k, v in controls.items()},
    )


def measure_pages(
    root: Path, pages: Sequence[tuple[str, Path]], chromium: str, repeats: int, grace_s: float
) -> dict[Path, PageTiming]:
    """Every page in ``pages`` (under ``root``) through a local HTTP server in one headless Chromium."""
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # Chromium refuses root
    out: dict[Path, PageTiming] = {}
    with serve(root) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=args)
        try:
            for _, page in pages:
                out[page] = measure_page(browser, f"{base}/{page.relative_to(root).as_posix()}", repeats, grace_s)
        finally:
            browser.close()
    return out


# --- the run ---------------------------------------------------------------------------------------------------


def mib(n: int) -> str:
    return f"{n / 1024 / 1024:.2f} MiB"


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def prepare_work(keep: Path | None) -> Path:
    """The folder for run directories, site and naive pages: ``--keep DIR`` (cleared of an earlier run of this
    benchmark; :func:`parse_args` refuses a folder holding anything else) or a temporary folder."""
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="medbench-report-bench-"))
    for name in ("runs", "site", "naive"):
        shutil.rmtree(keep / name, ignore_errors=True)
    keep.mkdir(parents=True, exist_ok=True)
    (keep / MARKER).write_text("benchmarks/report_build.py output folder\n", encoding="utf-8")
    return keep


def timed(step: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = step()
    return value, time.perf_counter() - started


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", type=int, default=5, help="models (default 5; the first two are X and X+lora)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full test-set sizes (0 < F <= 1)")
    parser.add_argument("--keep", type=Path, help="keep run directories, site and naive pages in DIR")
    parser.add_argument("--no-browser", action="store_true", help="skip the headless Chromium measurements")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help=f"image cache (default {DEFAULT_IMAGES})")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable for Playwright")
    parser.add_argument("--repeats", type=int, default=3, help="page loads per page (medians are shown)")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples when scoring")
    args = parser.parse_args(argv)
    if args.models < 1:
        parser.error("--models must be at least 1")
    if not 0 < args.scale <= 1:
        parser.error("--scale must be a fraction in (0, 1], e.g. 0.1 for a quick check")
    if args.repeats < 1 or args.resamples < 1:
        parser.error("--repeats and --resamples must be at least 1")
    keep = args.keep
    if (
        keep is not None
        and keep.exists()
        and (not keep.is_dir() or (any(keep.iterdir()) and not (keep / MARKER).is_file()))
    ):
        parser.error(f"--keep {keep}: not an empty folder or one this benchmark made; choose another")
    if not args.no_browser:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            parser.error("the browser measurements need Playwright (pip install playwright), or pass --no-browser")
        if not Path(args.chromium).is_file():
            parser.error(f"no Chromium at {args.chromium}: pass --chromium PATH, or --no-browser")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    from medbench.reports.site import build_report  # imported before timing: the build, not the import, is timed

    probe_before = host_probe()
    counts = {spec.name: spec.scaled(args.scale)[1] for spec in TASKS}
    generated, reused, image_seconds = ensure_images(args.images, counts)
    work = prepare_work(args.keep)
    try:
        sets, sets_seconds = timed(lambda: [synthetic_set(spec, args.scale, args.images) for spec in TASKS])
        models = model_specs(args.models)
        run_dirs: list[Path] = []
        started = time.perf_counter()
        for label, group in run_groups(models):
            run_dirs.append(work / "runs" / label)
            write_run(run_dirs[-1], group, sets, args.resamples)
        runs_seconds = time.perf_counter() - started

        site = work / "site"
        _, cold = timed(lambda: build_report(run_dirs, site))
        _, warm = timed(lambda: build_report(run_dirs, site))
        naive = work / "naive"
        naive_pages, naive_seconds = timed(lambda: build_naive(run_dirs, naive))

        pages = html_pages(site)
        largest = max(pages, key=lambda p: p.stat().st_size)
        index_bytes = (site / "index.html").stat().st_size
        naive_largest = max(html_pages(naive), key=lambda p: p.stat().st_size)
        timings: dict[Path, PageTiming] = {}
        measured = [*pages_to_measure(site), ("naive: largest page", naive_largest)]
        if not args.no_browser:
            timings = measure_pages(work, measured, args.chromium, args.repeats, grace_s=10.0)
        probe_after = host_probe()

        n_rows = sum(len(d.samples) for d in sets) * len(models)
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
            f"{platform.python_version()}; scale {args.scale:g}: {len(models)} models x {len(sets)} tasks, "
            f"{n_rows:,} sample rows ({', '.join(f'{d.spec.name} {len(d.samples):,}' for d in sets)} per model), "
            f"{sum(counts.values()):,} distinct images, {len(run_dirs)} run directories"
        )
        print(
            f"setup (not in the build times): images {generated:,} generated in {image_seconds:.1f} s "
            f"({reused:,} reused from {args.images}); test sets {sets_seconds:.1f} s; run directories (scoring with "
            f"{args.resamples} resamples) {runs_seconds:.1f} s"
        )
        print(f"{'':<44} {'medbench':>14} {'naive':>14}")
        print(f"{f'build, cold (target < {TARGET_BUILD_S:.0f} s)':<44} {cold:>12.2f} s {naive_seconds:>12.2f} s")
        print(f"{'build, warm (thumbnails exist)':<44} {warm:>12.2f} s {'':>14}")
        print(f"{'pages (**/*.html)':<44} {len(pages):>14,} {naive_pages:>14,}")
        print(f"{'index.html (target < 2 MiB)':<44} {mib(index_bytes):>14} {'':>14}")
        print(f"{'largest page':<44} {mib(largest.stat().st_size):>14} {mib(naive_largest.stat().st_size):>14}")
        print(f"{'whole site (all files)':<44} {mib(folder_bytes(site)):>14} {mib(folder_bytes(naive)):>14}")
        print(f"  largest medbench page: {largest.relative_to(site)}")
        print(f"  largest naive page: {naive_largest.relative_to(naive)}")
        if args.no_browser:
            print("browser: skipped (--no-browser)")
        else:
            print(
                f"headless Chromium via http://127.0.0.1, median of {args.repeats} fresh loads; ms from navigation "
                "start (performance.now()); control: ms from the action to the first DOM change (layout incl.) / "
                "until quiet"
            )
            print(f"{'page type':<24} {'size':>10} {'load ms':>8} {'ready ms':>9}  controls")
            for kind, page in measured:
                timing = timings[page]
                controls = "; ".join(f"{k} {ms(f)} / {ms(s)}" for k, (f, s) in timing.controls.items()) or "–"
                ready = ms(timing.ready_ms) if timing.ready_ms is not None else "never"
                size = mib(page.stat().st_size)
                print(f"{kind:<24} {size:>10} {ms(timing.load_ms):>8} {ready:>9}  {controls}")
            for kind, page in measured:
                print(f"  {kind}: {page.relative_to(work).as_posix()}")
        print(f"host speed probe (10M-step Python loop, before/after): {probe_before:.2f} / {probe_after:.2f} s")
        print(f"target: cold build < {TARGET_BUILD_S:.0f} s: {verdict(cold < TARGET_BUILD_S)} ({cold:.2f} s)")
        print(f"target: index.html < 2 MiB: {verdict(index_bytes < TARGET_INDEX_BYTES)} ({mib(index_bytes)})")
        if timings:
            ours = [timings[p] for _, p in measured if not p.is_relative_to(naive)]
            ok = all(t.ready_ms is not None and t.ready_ms < TARGET_READY_MS for t in ours)
            worst = max((t.ready_ms for t in ours if t.ready_ms is not None), default=None)
            never = sum(1 for t in ours if t.ready_ms is None)
            print(
                f"target: every medbench page ready < {TARGET_READY_MS:.0f} ms: {verdict(ok)} "
                f"(slowest {ms(worst)} ms{f'; {never} page type(s) never set dataset.ready' if never else ''})"
            )
        if args.scale < 1:
            print(f"(scale {args.scale:g}: a quick check, not the issue's full-size measurement)")
        if args.keep:
            print(f"kept: {work}/runs, {work}/site, {work}/naive")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
