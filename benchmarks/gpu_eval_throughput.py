"""Evaluation throughput of the ``hf:`` adapter on one GPU: the naive path against the fast path, in the same run.

Models, with random weights built directly on the GPU in bf16 (seconds, no download; random weights have the real
compute and memory profile, never the real accuracy):

* ``mllama``: the Llama-3.2-11B-Vision architecture (``benchmarks/train_step.py``'s ``model_shape``: ``MllamaConfig()``
  with vision ``image_size`` 560, tanh gates opened), with the real 4-tile Mllama image processor;
* ``qwen2_5_vl``: the Qwen2.5-VL-7B-Instruct architecture (:func:`qwen_7b_config`), with Qwen's own image processor
  at its default pixel limits (a 512 px image becomes 504 x 504: 324 image tokens).

Both run through the real adapter (``medbench.registry.create_model("hf:...")``): the model object replaces the one
the adapter would load, and the processor is the adapter's own (the tiny checkpoint's tokenizer and chat template;
only the image processor is the real family's), so what is timed is exactly ``HFModel.generate`` — image decode and
resize, chat template, processor, generation, decoding — as ``medbench run`` calls it.

Requests: ``--samples`` VQA requests over ``--images`` distinct random 512 x 512 PNG images (default: 6.4 questions
per image, the mean of the full SLAKE + VQA-RAD + PathVQA test pass: 8,231 questions on 96 + 203 + 991 images;
SLAKE alone 11.1, VQA-RAD 2.2), interleaved (question i on image i mod images), prompts of about
``--prompt-tokens`` tokens (lengths varied by +-25 %), exactly ``--new-tokens`` new tokens each (end of sequence
suppressed). Paths (``--paths``):

* ``naive``: ``fast=false`` — batches in request order, inputs prepared between batches, a fixed batch size;
* ``fast``: the default adapter path (the questions of an image batched together and its image encoded once per
  batch, the next batch prepared in the background; the same outputs as naive, checked below on the same inputs);
* ``static``: ``fast`` plus ``decode=static`` (the key/value cache allocated once per batch, not grown per step);
* ``compiled``: ``fast`` plus ``decode=compiled`` (that cache and the decode step compiled by ``torch.compile``,
  replayed as CUDA graphs: see ``medbench.models.hf_decode``); its compilation falls in the warm-up batch, reported
  apart as ``warm-up s`` (a run pays it once per batch size);
* ``valid-tiles`` (Mllama only): ``fast`` plus ``vision_tiles=valid``: the vision encoder on the valid tile of each
  512 px image instead of 4 — faster, but **not** output-preserving (Mllama's padded tiles enter its outputs: see
  ``medbench.models.hf_fast``); its agreement with naive is printed, never assumed.

Per (model, path, batch): samples/s and new tokens/s over the whole ``generate`` call (after one warm-up batch,
whose seconds are reported too), peak GPU memory allocated, the speed-up over the naive path's best batch, the
share of requests whose greedy output equals the naive path's at the same batch size, and (at the first batch size)
the largest difference of the first batch's prefill next-token logits from the naive path's (bf16 on a GPU). A
configuration that runs out of memory is recorded as OOM and the larger batches of that path are skipped; one that
fails otherwise on the GPU (a compile error, say) is recorded with its error and the run goes on to the next path
(``--tiny`` lets it raise). After each configuration the adapter is released, as ``medbench run`` releases a model
before loading the next, and the GPU memory still allocated is recorded (``allocated_after_release_gib``; the
summary gives the largest). Every row is printed as it is measured and the JSON rewritten, so a run cut short keeps
what it measured. At the end: the time a full SLAKE + VQA-RAD + PathVQA pass (8,231 questions) would take at each
path's best rate (plus its warm-up, paid once), and the issue's targets (Mllama >= 100 samples/s and >= 10x naive
on one H100/H200) for the paths meant to keep the naive outputs.

``--tiny`` runs the same comparison on tiny models of both families on the CPU (Mllama with the real 4-tile
layout) in seconds: what CI runs (``tests/models/test_gpu_eval_bench.py``). Under ``torchrun`` every process
measures its share of the requests on its own GPU and rank 0 reports the merged outputs and the slowest rank's
time (``benchmarks/gpu_eval_scaling.py`` compares N processes with one).

Run: python benchmarks/gpu_eval_throughput.py [--tiny] [--batches 32,64,128] [--samples 512] [--json FILE]
The checkout needs no install (medbench is loaded from its folders, as train_step.py does).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
FULL_PASS = 8231  # SLAKE (English) 1,061 + VQA-RAD 451 + PathVQA 6,719 test questions
FAMILIES = ("mllama", "qwen2_5_vl")
PATHS = ("naive", "fast", "static", "compiled", "valid-tiles")
DECODE = {"static": "static", "compiled": "compiled"}  # the paths that set the adapter's decode option
WORDS = [
    "lesion",
    "left",
    "right",
    "lung",
    "liver",
    "kidney",
    "image",
    "scan",
    "shows",
    "does",
    "contain",
    "which",
    "organ",
    "abnormal",
    "the",
    "is",
    "of",
    "in",
]


def _train_step() -> ModuleType:
    """benchmarks/train_step.py as a module (its 11B Mllama shape and builder; it loads medbench from the checkout
    when medbench is not installed)."""
    spec = importlib.util.spec_from_file_location("train_step_bench", HERE / "train_step.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_step_bench"] = module
    spec.loader.exec_module(module)
    return module


ts = _train_step()

from medbench.errors import MedbenchError, UsageError  # noqa: E402


@dataclass
class Row:
    """One (model, path, batch) measurement."""

    family: str
    path: str
    batch: int
    samples_per_s: float | None = None
    new_tokens_per_s: float | None = None
    seconds: float | None = None
    warmup_s: float | None = None  # the warm-up batch (kernels, allocator; the compilation of a compiled path)
    peak_allocated_gib: float | None = None
    agreement_with_naive: float | None = None  # share of outputs equal to naive's at this batch size
    logits_max_diff: float | None = None  # prefill next-token logits of the first batch against naive's (max |d|)
    allocated_after_release_gib: float | None = None  # GPU memory still allocated once the model was released
    oom: bool = False
    error: str | None = None  # a failure other than out-of-memory (full-size runs only; --tiny raises)
    outputs: list[str] | None = None  # in request order (the JSON keeps them: gpu_eval_scaling.py compares them)


# -- models ---------------------------------------------------------------------------------------------------------
def qwen_7b_config(tiny: Any) -> Any:
    """Qwen2.5-VL-7B-Instruct's architecture, with the tiny checkpoint's special-token ids (so its tokenizer's image
    placeholders are the model's)."""
    import copy

    config = copy.deepcopy(tiny)
    text = {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "max_position_embeddings": 128000,
        "max_window_layers": 28,
    }
    vision = {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    rope = dict(getattr(config.text_config, "rope_parameters", None) or {})
    text["rope_parameters"] = {**rope, "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}  # head_dim 128
    for name, sizes in (("text_config", text), ("vision_config", vision)):
        old = getattr(config, name)
        # rebuilt through the class, so that what it derives from the sizes (head_dim, layer_types) follows them
        settings = {k: v for k, v in old.to_dict().items() if k not in ("layer_types", "head_dim")}
        setattr(config, name, type(old)(**{**settings, **sizes}))
    return config


def build_full(family: str, folder: Path, device: Any) -> tuple[Any, Any]:
    """``(model, image processor)`` of the full-size ``family`` (a model_type) with random bf16 weights made on
    ``device`` (the same weights on every call: seeded)."""
    import torch
    import transformers

    if family == "mllama":
        shape = ts.model_shape(tiny=False)
        return ts.build_model(shape, device), ts.image_processor(shape)
    tiny = transformers.AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.Qwen2_5_VLForConditionalGeneration._from_config(qwen_7b_config(tiny), dtype=torch.bfloat16)
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    return model, type(processor)()  # the family's image processor at its default pixel limits


def make_adapter(folder: Path, path: str, batch: int, device: str, full: bool) -> Any:
    """The ``hf:`` adapter for ``path``; with ``full``, a freshly built full-size model (the fast path changes its
    modules, so no two paths share one) and the family's image processor swapped in."""
    from medbench import registry
    from medbench.models import hf_runtime

    options: dict[str, Any] = {"device": device, "batch_size": str(batch), "fast": str(path != "naive").lower()}
    if path == "valid-tiles":
        options["vision_tiles"] = "valid"
    if path in DECODE:
        options["decode"] = DECODE[path]
    adapter = registry.create_model(f"hf:{folder}", **options)
    if full:
        hf_runtime.release_memory()  # the previous configuration's model, dropped by the caller
        model, image_processor = build_full(adapter.model_type, folder, device)
        adapter.processor.image_processor = image_processor
        adapter._model = adapter.prepare(model)  # as the adapter prepares what it loads itself
    else:
        adapter.load()
    adapter.generation.eos_token_id = None  # exactly --new-tokens each: every path decodes the same length
    return adapter


# -- requests -------------------------------------------------------------------------------------------------------
def make_requests(
    root: Path, samples: int, images: int, size: int, prompt_tokens: int, new_tokens: int, write: bool = True
) -> list[Any]:
    """``samples`` VQA requests over ``images`` random PNG images of ``size`` px (seeded; written to ``root`` when
    ``write``: one rank writes, every rank gets the same requests), prompts of about ``prompt_tokens`` tokens
    (+-25 %)."""
    import numpy as np
    from PIL import Image

    from medbench.schema import ImageRef, Request

    rng = np.random.default_rng(0)
    words = random.Random(0)
    refs = []
    for i in range(images):
        path = root / f"image{i:04d}.png"
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        if write:
            Image.fromarray(pixels).save(path)
        refs.append(ImageRef("file", str(path)))
    out = []
    for i in range(samples):
        n = max(4, int(prompt_tokens * 0.7 * words.uniform(0.75, 1.25)))  # ~0.7 words per token of LLaMA's tokenizer
        prompt = " ".join(words.choice(WORDS) for _ in range(n)) + "?"
        out.append(Request(f"q{i}", "bench", "vqa", prompt, prompt, refs[i % images], size, new_tokens))
    return out


# -- measuring ------------------------------------------------------------------------------------------------------
Measured = tuple[list[str], float, "float | None", float]


def measure(adapter: Any, requests: list[Any], batch: int, cuda: bool) -> Measured:
    """``(outputs, seconds, peak GiB, warm-up seconds)`` of one ``generate`` over ``requests`` after a warm-up
    batch."""
    import torch

    warm = time.perf_counter()
    adapter.generate(requests[:batch])  # warm-up: kernels, allocator, the compilation of a compiled decode step
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warmup = time.perf_counter() - warm
    started = time.perf_counter()
    outputs = adapter.generate(requests)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None
    return outputs, seconds, peak, warmup


def allocated_gib(cuda: bool) -> float | None:
    """GPU memory allocated now (None on a CPU): after ``release`` it should be ~0, the next model's to use."""
    if not cuda:
        return None
    import torch

    return round(torch.cuda.memory_allocated() / 2**30, 3)


def first_logits(adapter: Any, requests: list[Any], batch: int) -> Any:
    """The prefill's next-token logits (float32, on the CPU) of the first ``batch`` requests, on the inputs the
    adapter builds (the same for every path but valid-tiles, which cuts the padded tiles)."""
    import torch

    inputs = adapter._on_device(adapter._inputs(requests[:batch]))
    with torch.inference_mode():
        return adapter.model(**inputs).logits[:, -1].float().cpu()


def measure_sharded(adapter: Any, requests: list[Any], batch: int, cuda: bool) -> Measured:
    """:func:`measure` on this process's share of ``requests`` under ``torchrun`` (requests ``rank, rank + N,
    ...``, as ``medbench run`` shards), merged: every output in request order, the slowest rank's seconds (and
    warm-up), the largest peak. One process: :func:`measure` itself."""
    from medbench.distributed import world

    w = world()
    if w.size == 1:
        return measure(adapter, requests, batch, cuda)
    w.barrier()  # every rank starts timing together (model builds take different times)
    parts = w.gather(measure(adapter, w.shard(requests), batch, cuda))
    outputs = [""] * len(requests)
    for rank, (texts, *_) in enumerate(parts):
        outputs[rank :: w.size] = texts
    peaks = [p for _, _, p, _ in parts if p is not None]
    return outputs, max(p[1] for p in parts), max(peaks) if peaks else None, max(p[3] for p in parts)


def run_family(
    family: str,
    folder: Path,
    args: argparse.Namespace,
    requests: list[Any],
    cuda: bool,
    done: Callable[[Row], None] = lambda row: None,
) -> list[Row]:
    """Every path of ``family`` at every batch size; ``done`` is called with each row once it is measured."""

    from medbench.models import hf_runtime

    device = "cuda" if cuda else "cpu"
    rows: list[Row] = []
    naive_outputs: dict[int, list[str]] = {}
    naive_logits: Any = None
    for path in args.paths:
        if path == "valid-tiles" and family != "mllama":
            continue
        for batch in args.batches:
            row = Row(family, path, batch)
            rows.append(row)
            adapter, logits = None, None
            try:
                adapter = make_adapter(folder, path, batch, device, full=not args.tiny)
                outputs, seconds, peak, warmup = measure_sharded(adapter, requests, batch, cuda)
                if batch == args.batches[0]:
                    logits = first_logits(adapter, requests, batch)
            except Exception as exc:
                if hf_runtime.is_oom(exc):
                    row.oom = True
                elif args.tiny:
                    raise
                else:  # one path's failure (a compile error, say) must not cost a lent GPU session the others
                    row.error = f"{type(exc).__name__}: {str(exc)[:500]}"
                done(row)
                break  # larger batches of this path would fail too (the model is freed below)
            finally:
                if adapter is not None:
                    adapter.release()
                adapter = None
                hf_runtime.release_memory()
                row.allocated_after_release_gib = allocated_gib(cuda)
            row.seconds = round(seconds, 3)
            row.warmup_s = round(warmup, 2)
            row.samples_per_s = round(len(requests) / seconds, 2)
            row.new_tokens_per_s = round(len(requests) * args.new_tokens / seconds, 1)
            row.peak_allocated_gib = peak
            row.outputs = outputs
            if logits is not None and path == "naive":
                naive_logits = logits
            elif logits is not None and naive_logits is not None:
                row.logits_max_diff = round(float((logits - naive_logits).abs().max()), 5)
            if path == "naive":
                naive_outputs[batch] = outputs
            if batch in naive_outputs:
                same = sum(a == b for a, b in zip(outputs, naive_outputs[batch], strict=True))
                row.agreement_with_naive = round(same / len(outputs), 4)
            done(row)
    return rows


# -- output ---------------------------------------------------------------------------------------------------------
def best(rows: Sequence[Row], family: str, path: str) -> Row | None:
    done = [r for r in rows if r.family == family and r.path == path and r.samples_per_s]
    return max(done, key=lambda r: r.samples_per_s or 0.0, default=None)


HEADER = (
    f"{'model':<11} {'path':<12} {'batch':>5} {'samples/s':>10} {'new tok/s':>10} {'peak GiB':>9} "
    f"{'x naive':>8} {'= naive':>8} {'logit d':>8} {'warm-up s':>9}"
)


def format_row(r: Row, rows: Sequence[Row]) -> str:
    """One row of the table (its speed-up against the best naive row among ``rows``)."""
    base = best(rows, r.family, "naive")
    if r.oom or r.error:
        return f"{r.family:<11} {r.path:<12} {r.batch:>5} {'OOM' if r.oom else 'failed: ' + (r.error or '')}"
    speedup = f"{(r.samples_per_s or 0) / base.samples_per_s:.2f}" if base and base.samples_per_s else "-"
    agree = f"{100 * r.agreement_with_naive:.1f}%" if r.agreement_with_naive is not None else "-"
    peak = f"{r.peak_allocated_gib:.1f}" if r.peak_allocated_gib is not None else "-"
    diff = f"{r.logits_max_diff:.3g}" if r.logits_max_diff is not None else "-"
    return (
        f"{r.family:<11} {r.path:<12} {r.batch:>5} {r.samples_per_s:>10.2f} {r.new_tokens_per_s:>10.1f} "
        f"{peak:>9} {speedup:>8} {agree:>8} {diff:>8} {r.warmup_s or 0:>9.1f}"
    )


def format_table(rows: Sequence[Row]) -> str:
    return "\n".join([HEADER, "-" * len(HEADER), *(format_row(r, rows) for r in rows)])


def summary(rows: Sequence[Row], tiny: bool) -> list[str]:
    """The full-pass estimate per model and path (with the path's warm-up, paid once), and the issue's targets for
    Mllama's paths meant to keep the naive outputs (valid-tiles is not one)."""
    lines = []
    for family in FAMILIES:
        for path in PATHS:
            top = best(rows, family, path)
            if top and top.samples_per_s:
                agree = "" if top.agreement_with_naive is None else f", {100 * top.agreement_with_naive:.1f}% = naive"
                lines.append(
                    f"{family} {path}: best {top.samples_per_s:.2f} samples/s at batch {top.batch}; "
                    f"{FULL_PASS:,} questions in {FULL_PASS / top.samples_per_s + (top.warmup_s or 0):,.0f} s "
                    f"incl. {top.warmup_s or 0:.0f} s warm-up{agree}"
                )
    left = [r.allocated_after_release_gib for r in rows if r.allocated_after_release_gib is not None]
    if left:
        lines.append(f"GPU memory allocated after a model is released: at most {max(left):.3f} GiB, {len(left)} times")
    naive = best(rows, "mllama", "naive")
    for path in ("fast", "static", "compiled"):
        top = best(rows, "mllama", path)
        if tiny or not (naive and top and naive.samples_per_s and top.samples_per_s):
            continue
        ok = top.samples_per_s >= 100 and top.samples_per_s >= 10 * naive.samples_per_s
        lines.append(
            f"target (Mllama {path} >= 100 samples/s and >= 10x naive): {'MET' if ok else 'NOT MET'} "
            f"({top.samples_per_s:.1f}/s, {top.samples_per_s / naive.samples_per_s:.2f}x)"
        )
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, got {text!r}")
        return values

    def names(allowed: tuple[str, ...]) -> Any:
        def parse(text: str) -> list[str]:
            values = [v.strip() for v in text.split(",") if v.strip()]
            unknown = [v for v in values if v not in allowed]
            if unknown or not values:
                raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}; got {text!r}")
            return values

        return parse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU (seconds): the CI mode")
    parser.add_argument("--batches", type=ints, help="batch sizes (default 32,64,128; --tiny 2,4)")
    parser.add_argument("--samples", type=int, help="requests per measurement (default 512; --tiny 8)")
    parser.add_argument("--images", type=int, default=0, help="distinct images (default samples / 6.4)")
    parser.add_argument("--prompt-tokens", type=int, default=64, help="about this many prompt tokens (default 64)")
    parser.add_argument("--new-tokens", type=int, default=16, help="new tokens per request (default 16)")
    parser.add_argument("--families", type=names(FAMILIES), default=list(FAMILIES), help="mllama,qwen2_5_vl")
    parser.add_argument("--paths", type=names(PATHS), default=list(PATHS), help="naive,fast,valid-tiles")
    parser.add_argument("--json", type=Path, help="write every number to this JSON file")
    args = parser.parse_args(argv)
    args.batches = args.batches or ([2, 4] if args.tiny else [32, 64, 128])
    args.samples = args.samples or (8 if args.tiny else 512)
    args.images = args.images or max(1, round(args.samples / 6.4))
    if args.samples < 1 or args.new_tokens < 1 or args.prompt_tokens < 1:
        raise UsageError("--samples, --new-tokens and --prompt-tokens must be >= 1")
    if "naive" not in args.paths:
        args.paths = ["naive", *args.paths]  # every speed-up and agreement is against the naive path of this run
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from medbench.distributed import world
    from medbench.testing import build_tiny_model

    w = world()  # under torchrun: the process group, and this rank's GPU as the current device, before any model
    dev = ts.Device(torch)
    if not dev.cuda and not args.tiny:
        raise UsageError("the full-size run needs a CUDA GPU (the 11B model's bf16 weights are 19.9 GiB); use --tiny")
    rows: list[Row] = []
    started = time.strftime("%Y-%m-%d")

    def record() -> dict[str, Any]:
        return {
            "device": dev.name,
            "processes": w.size,
            "date": started,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "environment": ts.environment(dev),
            "rows": [asdict(r) for r in rows],
            "summary": summary(rows, args.tiny),
        }

    def done(row: Row) -> None:  # each row as it is measured: a run cut short keeps what it measured
        rows.append(row)
        if not w.is_main:
            return
        print(format_row(row, rows), flush=True)
        if args.json:
            args.json.write_text(json.dumps(record(), indent=2))

    if w.is_main:
        print(f"{dev.name}\n{HEADER}", flush=True)
    with tempfile.TemporaryDirectory(prefix="medbench-eval-bench-") as tmp:
        # one folder for every rank (rank 0's): transformers saves checkpoints from the main process only
        root = Path(w.gather(tmp)[0])
        for family in args.families:
            folder, images = root / family, root / f"{family}-images"
            size = 512 if not args.tiny else (26 if family == "mllama" else 56)  # 26 px: 1 valid tile of 4, as 512
            if w.is_main:
                build_tiny_model("mllama-4tiles" if family == "mllama" else family, folder)
                images.mkdir()
            w.barrier()
            reqs = make_requests(
                images, args.samples, args.images, size, args.prompt_tokens, args.new_tokens, w.is_main
            )
            w.barrier()
            run_family(family, folder, args, reqs, dev.cuda, done=done)
        w.barrier()  # rank 0 removes the folder once every rank is done with it
    final = record()
    if not w.is_main:  # the other ranks of a torchrun job measured their shares; rank 0 reports
        return final
    print(f"\n{dev.name}\n{format_table(rows)}\n" + "\n".join(final["summary"]))
    if args.json:
        args.json.write_text(json.dumps(final, indent=2))
    return final


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except MedbenchError as exc:
        print(f"gpu_eval_throughput: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
