"""Data-parallel training (DDP) under ``torchrun`` / ``accelerate launch``: the same recipe, N processes.

``torchrun --nproc_per_node N -m medbench train CONFIG ...`` (or ``accelerate launch -m medbench train ...``) runs
:func:`medbench.training.recipe.train` in every process; each process holds a full copy of the base and the adapter
(wrapped in ``torch.nn.parallel.DistributedDataParallel``, whose all-reduce averages the LoRA gradients) and trains
its share of every optimiser step. The process group is the evaluation's (:func:`medbench.distributed.world`: NCCL
on GPUs, gloo on CPUs).

**What a step is.** The single-process order of micro-batches (``optim.batch_size`` examples each, the epoch order
of :func:`~medbench.training.data.epoch_order`) is cut into optimiser steps of ``grad_accum x world_size``
micro-batches; process ``rank`` trains micro-batches ``rank, rank + N, ...`` of each step (:func:`share`). So the
effective batch is ``batch_size x grad_accum x world_size``, and a run on N processes sees exactly the micro-batches,
padding included, of a one-process run with ``grad_accum x N``: the same loss curve up to floating-point
summation order (tested with 2 gloo processes). The loss of a step is averaged over every answer token of the step
on every process (the token count is all-reduced before the backward pass), as on one process.

**Uneven steps.** The last step of an epoch may hold fewer micro-batches than processes x accumulation. Every
process still runs the same number of forward/backward passes (DDP's all-reduce is collective): a process with no
micro-batch left for a slot reruns the step's first micro-batch with weight 0, which adds nothing to the gradient.

**Files.** Rank 0 writes the checkpoints, the adapter and the run card; the other ranks write only their random
state into each checkpoint (``rng-rank<r>.pt``), so LoRA dropout on every rank draws on resume what it would have
drawn. A checkpoint records the world size, and a run resumes only with the same one.

For bases that do not fit one GPU (the 90B-class), FSDP shards the frozen base instead: see ``docs/training.md``.
torch is imported inside functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

from medbench.distributed import World

T = TypeVar("T")

#: The world of a run without a launcher (the default of the functions that take one).
SINGLE = World()


def share(step: Sequence[T], world: World) -> list[tuple[T, float]]:
    """This process's ``(micro-batch, weight)`` slots of one optimiser step: micro-batches ``rank, rank + N, ...``
    with weight 1, then the step's first micro-batch with weight 0 until every process has the same number of slots
    (``ceil(len(step) / N)``)."""
    slots = math.ceil(len(step) / world.size)
    mine = [(item, 1.0) for item in step[world.rank :: world.size]]
    return mine + [(step[0], 0.0)] * (slots - len(mine))


def wrap(model: Any, world: World, device: str) -> Any:
    """``model`` in ``DistributedDataParallel`` when there are several processes (``model`` itself otherwise).

    The wrapper runs the forward pass and all-reduces the gradients; the adapter is saved from the wrapped PEFT model
    itself. Every trainable tensor takes part in every step (LoRA on modules every forward pass uses), so DDP's
    unused-parameter search stays off."""
    if world.size == 1:
        return model
    import torch
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


def no_sync(engine: Any, last: bool) -> AbstractContextManager[Any]:
    """Skip DDP's gradient all-reduce for every backward pass of a step but its ``last`` one (accumulation)."""
    if last or not hasattr(engine, "no_sync"):
        return nullcontext()
    context: AbstractContextManager[Any] = engine.no_sync()
    return context


def all_sum(values: Sequence[float], world: World, device: str) -> list[float]:
    """``values`` summed over every process (themselves on one process), in float64."""
    if world.size == 1:
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    # NCCL reduces CUDA tensors only; gloo, CPU ones
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device if device.startswith("cuda") else "cpu")
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def reseed(seed: int, world: World) -> None:
    """Give each process of a data-parallel run its own stream of random draws (LoRA dropout) once the adapter,
    identical on every rank, exists; a single process keeps the stream ``seed`` started."""
    if world.size > 1:
        import torch

        torch.manual_seed(seed + 1_000_003 * world.rank)
