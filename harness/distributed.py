"""Data-parallel runs under ``torchrun`` / ``accelerate launch``: shard samples by rank, merge on rank 0.

Every rank loads the same tasks, takes samples ``rank, rank + world, ...`` of each task, generates them (through
the shared prediction cache, so a restarted job resumes per rank), and sends its outputs to rank 0, which scores
the merged outputs and writes the run directory. A single-process run is the ``world == 1`` case of the same code.
torch is imported only when the launcher says there is more than one process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the job."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share: every ``size``-th item starting at ``rank`` (balanced, order-preserving)."""
        return list(items[self.rank :: self.size])

    def gather(self, value: Any) -> list[Any]:
        """``value`` from every rank, in rank order (on every rank); ``[value]`` for a single process."""
        if self.size == 1:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()


_WORLD: World | None = None


def world() -> World:
    """The job's world, initialising the process group (gloo on CPU, nccl on GPU) on first use under a launcher."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        _WORLD = World()
        return _WORLD
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    _WORLD = World(dist.get_rank(), dist.get_world_size(), local_rank)
    return _WORLD
