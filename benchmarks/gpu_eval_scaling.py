"""Evaluation on N GPUs against one: ``torchrun`` over N processes is about N x one GPU, with the same outputs.

For each N of ``--gpus`` it runs ``benchmarks/gpu_eval_throughput.py`` under ``torchrun --standalone
--nproc_per_node N`` (each process takes requests ``rank, rank + N, ...``, as ``medbench run`` shards a task, and
generates them through the ``hf:`` adapter on its own GPU), then prints per N: samples/s (all requests over the
slowest rank's time), the speed-up over N = 1 and the share of requests whose output equals N = 1's. Settings
after ``--`` go to the throughput script (default: the Mllama fast path at batch 64 on 1,024 requests).

``--tiny`` runs the same on tiny models with CPU processes (gloo): what CI runs
(``tests/models/test_gpu_eval_bench.py``); no speed is asserted there.

Run: python benchmarks/gpu_eval_scaling.py [--tiny] [--gpus 1,2,4,8] [--json FILE] [-- throughput options]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT = ["--families", "mllama", "--paths", "fast", "--batches", "64", "--samples", "1024"]
TINY = ["--tiny", "--families", "mllama", "--paths", "fast", "--batches", "2", "--samples", "8"]


def torchrun() -> list[str]:
    """The launcher: ``torchrun`` beside this Python, else ``python -m torch.distributed.run``."""
    found = Path(sys.executable).parent / "torchrun"
    if found.exists():
        return [str(found)]
    return [sys.executable, "-m", "torch.distributed.run"] if shutil.which(sys.executable) else ["torchrun"]


def one(n: int, options: list[str], out: Path) -> dict[str, Any]:
    """The throughput script's record for ``n`` processes."""
    command = [*torchrun(), "--standalone", "--nproc_per_node", str(n), str(HERE / "gpu_eval_throughput.py")]
    job = subprocess.run([*command, *options, "--json", str(out)], capture_output=True, text=True)
    if job.returncode != 0 or not out.exists():
        raise SystemExit(f"gpu_eval_scaling: {n} process(es) failed (exit {job.returncode}):\n{job.stderr[-3000:]}")
    record: dict[str, Any] = json.loads(out.read_text())
    return record


def compare(records: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per N and (model, path, batch): samples/s, speed-up and output agreement against N = 1."""
    first = min(records)
    base = {(r["family"], r["path"], r["batch"]): r for r in records[first]["rows"]}
    out = []
    for n, record in sorted(records.items()):
        for r in record["rows"]:
            ref = base.get((r["family"], r["path"], r["batch"]))
            if r["oom"] or ref is None or ref["oom"]:
                out.append({"processes": n, **{k: r[k] for k in ("family", "path", "batch")}, "oom": True})
                continue
            same = sum(a == b for a, b in zip(r["outputs"], ref["outputs"], strict=True)) / len(ref["outputs"])
            out.append(
                {
                    "processes": n,
                    **{k: r[k] for k in ("family", "path", "batch", "samples_per_s")},
                    "speedup": round(r["samples_per_s"] / ref["samples_per_s"], 2),
                    "per_process_efficiency": round(r["samples_per_s"] / ref["samples_per_s"] / (n / first), 3),
                    "same_outputs_as_first": round(same, 4),
                    "oom": False,
                }
            )
    return out


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    header = f"{'N':>3} {'model':<11} {'path':<12} {'batch':>5} {'samples/s':>10} {'x N=1':>7} {'eff.':>6} {'= N=1':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        if r["oom"]:
            lines.append(f"{r['processes']:>3} {r['family']:<11} {r['path']:<12} {r['batch']:>5} {'OOM':>10}")
            continue
        lines.append(
            f"{r['processes']:>3} {r['family']:<11} {r['path']:<12} {r['batch']:>5} {r['samples_per_s']:>10.2f} "
            f"{r['speedup']:>7.2f} {r['per_process_efficiency']:>6.2f} {100 * r['same_outputs_as_first']:>6.1f}%"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passed = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models, CPU processes (gloo)")
    parser.add_argument("--gpus", default="1,2", help="process counts to compare (default 1,2)")
    parser.add_argument("--json", type=Path, help="write the comparison and every record to this JSON file")
    args = parser.parse_args(own)
    try:
        counts = sorted({int(n) for n in args.gpus.split(",") if n.strip()})
    except ValueError:
        parser.error(f"--gpus: expected comma-separated whole numbers, got {args.gpus!r}")
    if not counts or counts[0] < 1:
        parser.error("--gpus: process counts must be >= 1")
    options = passed or (TINY if args.tiny else DEFAULT)
    with tempfile.TemporaryDirectory(prefix="medbench-scaling-") as tmp:
        records = {n: one(n, options, Path(tmp) / f"{n}.json") for n in counts}
    rows = compare(records)
    print(f"{records[counts[0]]['device']}\n{format_table(rows)}")
    if args.json:
        args.json.write_text(json.dumps({"comparison": rows, "records": records}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
