"""Training checkpoints: everything a killed run needs to carry on exactly where it stopped.

A checkpoint is the folder ``<output>/checkpoint-<step>/`` (the name the HF adapter's fingerprint leaves out, so a
checkpoint never changes an adapter's digest) holding

* ``trainable.safetensors``: every trainable tensor, by its parameter name in the wrapped model;
* ``optimizer.pt`` and ``scheduler.pt``: their ``state_dict()`` s;
* ``rng.pt``: the Python, NumPy and torch (CPU and CUDA) random states, so LoRA dropout draws what an uninterrupted
  run would have drawn (under DDP, rank 0's; each other rank's in ``rng-rank<r>.pt``);
* ``state.json``: where to continue (epoch, optimiser step, the next batch index in that epoch's order), the config's
  sha256, and the loss curve and counters so far.

It is written into a hidden temporary folder and renamed into place, so a folder named ``checkpoint-*`` is always
complete; only the newest is kept. Under DDP (:mod:`medbench.training.parallel`) rank 0 writes it: the trainable
tensors and the optimiser state are the same on every rank. torch and safetensors are imported inside functions.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medbench.distributed import World
from medbench.errors import UsageError
from medbench.training.parallel import SINGLE

PREFIX = "checkpoint-"


@dataclass
class Progress:
    """Where a run stands: the next batch to train is batch ``batch`` of epoch ``epoch``'s order, after ``step``
    optimiser steps in all. The rest is what the run card reports, carried across a resume."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    config_sha256: str = ""
    base_digest: str = ""  # the base checkpoint's content digest (medbench.models.hf_runtime.weights_digest)
    initial_sha256: str = ""  # the adapter's tensors before the first step (runcard.tensors_digest)
    loss_curve: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0
    tokens: int = 0
    resumed_at: list[int] = field(default_factory=list)  # the step each resume continued from
    world_size: int = 1  # processes of the run (a step's micro-batches are split between them)


def latest(output: Path) -> Path | None:
    """The newest complete checkpoint folder in ``output``, or None."""
    found = [p for p in output.glob(PREFIX + "*") if p.is_dir() and (p / "state.json").is_file()]
    return max(found, key=lambda p: int(p.name[len(PREFIX) :]), default=None)


def clear(output: Path, *, partial_only: bool = False) -> None:
    """Remove the half-written checkpoints a kill left in ``output`` and, unless ``partial_only``, every complete
    one too (a finished run needs none)."""
    paths = [*output.glob("." + PREFIX + "*")] + ([] if partial_only else [*output.glob(PREFIX + "*")])
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def save(output: Path, progress: Progress, model: Any, optimizer: Any, scheduler: Any, world: World = SINGLE) -> Path:
    """Write a checkpoint of ``progress`` atomically (temporary folder, then rename) and drop the older ones; under
    DDP every rank of ``world`` calls it (each adds its random state, rank 0 the rest)."""
    import torch

    final = output / f"{PREFIX}{progress.step:06d}"
    tmp = output / f".{final.name}.tmp"
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    world.barrier()
    if not world.is_main:
        torch.save(_rng_state(), tmp / f"rng-rank{world.rank}.pt")
    world.barrier()
    if world.is_main:
        _write(final, tmp, output, progress, model, optimizer, scheduler)
    world.barrier()
    return final


def _write(
    final: Path, tmp: Path, output: Path, progress: Progress, model: Any, optimizer: Any, scheduler: Any
) -> None:
    import torch
    from safetensors.torch import save_file

    trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(_rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(asdict(progress), indent=1), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)  # a checkpoint of the same step from before a kill: replaced
    os.replace(tmp, final)
    for old in output.glob(PREFIX + "*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def resume(
    output: Path,
    config_sha256: str,
    base_digest: str,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    device: str,
    world: World = SINGLE,
) -> Progress:
    """The newest checkpoint in ``output`` restored into the run (its step appended to ``resumed_at``), or a fresh
    :class:`Progress` when there is none. Half-written checkpoints are removed; a checkpoint of another config, of
    the same config on other base weights, or of another number of processes is an error."""
    if world.is_main:
        output.mkdir(parents=True, exist_ok=True)
        clear(output, partial_only=True)
    world.barrier()
    last = latest(output)
    if last is None:
        return Progress(config_sha256=config_sha256, base_digest=base_digest, world_size=world.size)
    saved = read_progress(last)
    if saved.config_sha256 != config_sha256:
        raise UsageError(
            f"{last} is a checkpoint of another training config; rerun the same config to resume it, or choose "
            "another --output (or delete the checkpoint to start again)"
        )
    if saved.base_digest != base_digest:
        raise UsageError(
            f"{last} was trained on other base weights than the base's files now hold (its content digest "
            "changed); resume it on the base it started on, or delete the checkpoint to start again"
        )
    if saved.world_size != world.size:
        raise UsageError(
            f"{last} is a checkpoint of a run on {saved.world_size} process(es), and this one has {world.size}: "
            "each optimiser step's micro-batches are split between the processes, so resume with the same number "
            "(or delete the checkpoint to start again)"
        )
    progress = restore(last, model, optimizer, scheduler, device, world.rank)
    progress.resumed_at.append(progress.step)
    return progress


def read_progress(folder: Path) -> Progress:
    """The ``state.json`` of a checkpoint folder."""
    try:
        return Progress(**json.loads((folder / "state.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"checkpoint {folder} is unreadable ({exc}); delete it to start the run again") from exc


def restore(folder: Path, model: Any, optimizer: Any, scheduler: Any, device: str, rank: int = 0) -> Progress:
    """Load a checkpoint into ``model`` (its trainable tensors, by name), ``optimizer`` and ``scheduler``, restore the
    random states (of process ``rank`` under DDP), and return its :class:`Progress`."""
    import torch
    from safetensors.torch import load_file

    progress = read_progress(folder)
    saved = load_file(str(folder / "trainable.safetensors"))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(saved) != set(trainable):
        raise UsageError(
            f"checkpoint {folder} holds other trainable tensors than this model has ({len(saved)} saved, "
            f"{len(trainable)} here): it is not of this run; delete it or use another --output"
        )
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(saved[name])
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    _set_rng_state(torch.load(folder / ("rng.pt" if rank == 0 else f"rng-rank{rank}.pt"), weights_only=True))
    return progress


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    numpy_state: Any = np.random.get_state()  # the legacy tuple: (kind, keys, pos, has_gauss, cached)
    kind, keys, pos, has_gauss, cached = numpy_state
    state: dict[str, Any] = {
        "python": list(random.getstate()),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
