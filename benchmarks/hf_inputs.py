"""CPU cost of building one ``hf:`` batch's inputs, naive against the fast path, in the same run.

What is timed is the adapter's own ``HFModel._inputs`` (what its background thread does for the next batch while
the GPU generates the current one): image decode and resize to 512 px, the family's image processor, the chat
template and the tokenizer. The naive path (``fast=false``) opens and processes every question's image; the fast
path (``medbench.models.hf_inputs``) opens and processes each distinct image of the batch once and, for Mllama,
Qwen2.5-VL and Gemma 3, leaves ``pixel_values`` with the distinct images' rows only (gathered for every question on
the GPU, after the copy): the ``pixels MB`` columns are what each path hands to the host-to-GPU copy. Both must give
the same tensors once gathered (checked on every row). The processors are the tiny checkpoints' (tokenizer, chat
template) with the real families' image processors at their real sizes swapped in: Mllama's 4 tiles of 560 px,
Qwen2.5-VL's defaults (a 512 px image is 504 x 504: 1,296 patches), Gemma 3's 896 px, LLaVA-1.5's 336 px.

Batches are cut as the fast path orders them (an image's questions together) from requests at a given number of
questions per image: SLAKE's 11.1, the full VQA pass's mean 6.4, VQA-RAD's 2.2 and 1 (every image distinct, as in
captioning). Each row is the best of ``--reps`` builds: the steady state of a run's repeated batches (a first build
also pays for fresh memory pages: ~1.7 s instead of ~1 s for a naive Mllama batch of 64 on the developer machine).
Printed per family and ratio: milliseconds per batch on one thread, the samples per second one
thread can prepare, and the speed-up; against it, the GPU target of 100 samples/s for the 11B Mllama (issue 14): a
prefetch thread slower than that would leave the GPU waiting.

Run: python benchmarks/hf_inputs.py [--batch 64] [--reps 3] [--families mllama,qwen2_5_vl,gemma3,llava] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
FAMILIES = ("mllama", "qwen2_5_vl", "gemma3", "llava")
RATIOS = (11.1, 6.4, 2.2, 1.0)
GPU_TARGET = 100.0  # samples/s: the 11B Mllama's target on one GPU


def _load(name: str, file: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, HERE / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = _load("gpu_eval_bench", "gpu_eval_throughput.py")  # its request maker; loads medbench from the checkout


def real_image_processor(family: str, tiny: Any) -> Any:
    """The real family's image processor at its real size (the tiny checkpoint's class, resized)."""
    if family == "mllama":
        return bench.ts.image_processor(bench.ts.model_shape(tiny=False))
    cls = type(tiny)
    if family == "gemma3":
        return cls(size={"height": 896, "width": 896})
    if family == "llava":
        return cls(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return cls()  # Qwen2.5-VL: its default pixel limits


def adapter(folder: Path, family: str, fast: bool) -> Any:
    from medbench import registry

    model = registry.create_model(f"hf:{folder}", device="cpu", fast=str(fast).lower())
    model.processor.image_processor = real_image_processor(family, model.processor.image_processor)
    return model


def pixels_mb(inputs: Any) -> float:
    return round(inputs["pixel_values"].numel() * inputs["pixel_values"].element_size() / 2**20, 1)


def same(a: Any, b: Any) -> bool:
    import torch

    from medbench.models import hf_inputs

    b = hf_inputs.expand(dict(b))  # the fast path's pixels, gathered as on the device
    if set(a.keys()) != set(b.keys()):
        return False
    return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def timed(model: Any, batch: list[Any], reps: int) -> tuple[float, Any]:
    """The best of ``reps`` builds of ``batch``'s inputs (seconds), and the inputs."""
    best, inputs = float("inf"), None
    for _ in range(reps):
        started = time.perf_counter()
        inputs = model._inputs(batch)
        best = min(best, time.perf_counter() - started)
    return best, inputs


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from medbench.testing import build_tiny_model

    rows = []
    with tempfile.TemporaryDirectory(prefix="medbench-inputs-") as tmp:
        for family in args.families:
            folder = build_tiny_model(family, Path(tmp) / family)
            naive, fast = adapter(folder, family, False), adapter(folder, family, True)
            warm = Path(tmp) / f"{family}-warm-up"
            warm.mkdir()
            for model in (naive, fast):  # untimed: first-call costs (allocator, lazy imports) on neither path's rows
                model._inputs(bench.make_requests(warm, 4, 2, 512, 64, 16))
            for ratio in args.ratios:
                images = Path(tmp) / f"{family}-{ratio}"
                images.mkdir()
                count = max(1, round(args.batch * 4 / ratio))
                requests = bench.make_requests(images, args.batch * 4, count, 512, 64, 16)
                ordered = [requests[i] for i in fast.order(requests)]
                batch = ordered[: args.batch]
                distinct = len({(r.image, r.image_size) for r in batch})
                t_naive, x_naive = timed(naive, batch, args.reps)
                t_fast, x_fast = timed(fast, batch, args.reps)
                rows.append(
                    {
                        "family": family,
                        "ratio": ratio,
                        "batch": len(batch),
                        "distinct": distinct,
                        "naive_ms": round(t_naive * 1000, 1),
                        "fast_ms": round(t_fast * 1000, 1),
                        "naive_per_s": round(len(batch) / t_naive, 1),
                        "fast_per_s": round(len(batch) / t_fast, 1),
                        "speedup": round(t_naive / t_fast, 2),
                        "naive_mb": pixels_mb(x_naive),
                        "fast_mb": pixels_mb(x_fast),
                        "same": same(x_naive, x_fast),
                    }
                )
                print(format_row(rows[-1]), flush=True)
    return rows


HEADER = (
    f"{'family':<11} {'q/img':>5} {'batch':>5} {'images':>6} {'naive ms':>9} {'fast ms':>8} {'naive /s':>9} "
    f"{'fast /s':>8} {'x':>6} {'same':>5} {'fast >= GPU target':>19} {'pixels MB naive/fast':>21}"
)


def format_row(r: dict[str, Any]) -> str:
    return (
        f"{r['family']:<11} {r['ratio']:>5} {r['batch']:>5} {r['distinct']:>6} {r['naive_ms']:>9.1f} "
        f"{r['fast_ms']:>8.1f} {r['naive_per_s']:>9.1f} {r['fast_per_s']:>8.1f} {r['speedup']:>6.2f} "
        f"{'yes' if r['same'] else 'NO':>5} {'yes' if r['fast_per_s'] >= GPU_TARGET else 'no':>19} "
        f"{r['naive_mb']:>11.0f} / {r['fast_mb']:<7.0f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="questions per batch (default 64)")
    parser.add_argument("--reps", type=int, default=3, help="builds per row, the best kept (default 3)")
    parser.add_argument("--families", default=",".join(FAMILIES), help=",".join(FAMILIES))
    parser.add_argument("--quick", action="store_true", help="seconds: batch 8, 1 rep, two ratios (what CI runs)")
    args = parser.parse_args(argv)
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = sorted(set(args.families) - set(FAMILIES))
    if unknown or args.batch < 1 or args.reps < 1:
        parser.error(f"families from {','.join(FAMILIES)}; --batch and --reps >= 1 (got {unknown or args.batch})")
    args.ratios = RATIOS
    if args.quick:
        args.batch, args.reps, args.ratios = 8, 1, (4.0, 1.0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}; one thread")
    print(HEADER)
    rows = run(args)
    bad = [r for r in rows if not r["same"]]
    print(f"inputs equal on every row: {'yes' if not bad else 'NO: ' + ', '.join(r['family'] for r in bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
