"""The run card: ``<adapter dir>/run_card.json``, what a training stage was and did.

It records the resolved config and its sha256, the base checkpoint (as given, where it was read from, its type and
content digest), the data (per task: source, checksums, counts, images skipped by loading, and the examples the
collator refused), where LoRA went and how many parameters trained per component, the adapter's tensors at the start
and at the end (sha256, :func:`tensors_digest`: stage 2's start equals stage 1's end when it continues it), the
loss curve (one point per optimiser step: mean loss per answer token, learning rate, gradient norm before clipping),
peak GPU memory allocated and reserved in GiB (null on the CPU), samples/s and tokens/s (prompt, image and answer
tokens, padding excluded; of the process that finished the run), package versions and the git commit
(:mod:`medbench.provenance`).

The card is written last, atomically: a folder with ``run_card.json`` holds a finished adapter.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medbench.errors import UsageError
from medbench.training.presets import COMPONENTS, LAYOUTS

NAME = "run_card.json"
SCHEMA = "medbench-train-run-card/1"
GIB = 2**30


def build(
    config: Any,
    progress: Any,
    *,
    base: Any,
    init: Path | None,
    preset: str,
    model: Any,
    checkpointed: dict[str, int],
    data: Any,
    trained: int,
    refused: list[dict[str, str]],
    lengths: list[int],
    optimisation: dict[str, Any],
    device: str,
    dtype: Any,
    throughput: dict[str, Any],
) -> dict[str, Any]:
    """The card of a finished stage: ``config`` (a TrainConfig), its ``progress`` (a checkpoint Progress: loss curve,
    resumes, the initial digest), ``base`` (the recipe's Base), the adapter ``init`` continued (None: fresh), the
    LoRA ``preset`` trained, the trained ``model``, the layers ``checkpointed`` per component, the ``data``
    (TrainingData) with how many examples were ``trained`` and ``refused``, their token ``lengths``, and the
    ``optimisation`` and ``throughput`` blocks."""
    from medbench import filehash
    from medbench.models.hf_runtime import dtype_name
    from medbench.training.presets import PRESETS

    return {
        "name": config.name,
        "stage": config.stage,
        "config": config.resolved(),
        "config_sha256": config.sha256(),
        "base": {
            "as_given": base.ref,
            "recorded_as": base.record,
            "path": str(base.path),
            "revision": base.revision,
            "model_type": base.model_type,
            "weights_digest": {"algorithm": filehash.ALGORITHM, "value": progress.base_digest},
        },
        "adapter": {
            "init": str(init) if init else "none",
            "continued": init is not None,
            "initial_sha256": progress.initial_sha256,
            "final_sha256": adapter_digest(model),
            "preset": preset,
            "target_modules": PRESETS[base.model_type][preset],
            "rank": config.lora.rank,
            "alpha": config.lora.alpha,
            "dropout": config.lora.dropout,
        },
        "trainable": trainable_counts(model, base.model_type),
        "gradient_checkpointing": {"enabled": config.gradient_checkpointing, "layers": checkpointed},
        "data": {
            "tasks": data.info,
            "examples": len(data.examples),
            "trained": trained,
            "refused_by_collator": {"count": len(refused), "examples": refused[:50]},
            "tokens_per_example": {"max": max(lengths), "mean": round(sum(lengths) / len(lengths), 1)},
        },
        "optimisation": optimisation,
        "loss_curve": progress.loss_curve,
        "resumed_at_steps": progress.resumed_at,
        "memory": memory(device),
        "throughput": throughput,
        "device": device.split(":")[0],
        "dtype": dtype_name(dtype),
        "quant": asdict(config.quant) if config.quant.enabled else None,
        "environment": environment(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def tensors_digest(tensors: dict[str, Any]) -> str:
    """sha256 over names, shapes and float32 values of ``tensors`` (sorted by name): the same adapter weights give
    the same digest whether read from a live model (``get_peft_model_state_dict``) or from the saved file."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(value.shape)}\n".encode())
        h.update(value.numpy().tobytes())
    return h.hexdigest()


def adapter_digest(model: Any) -> str:
    """:func:`tensors_digest` of the adapter's tensors as ``save_pretrained`` writes
    them (equal to the digest of ``load_peft_weights`` of the saved folder)."""
    from peft.utils import get_peft_model_state_dict

    return tensors_digest(get_peft_model_state_dict(model))


def trainable_counts(model: Any, family: str) -> dict[str, Any]:
    """Trainable parameters per component, their total and share of base + trainable (peft's way)."""
    layout = LAYOUTS[family]
    per = dict.fromkeys(COMPONENTS, 0)
    frozen = 0
    for name, param in model.named_parameters():
        if param.requires_grad:
            per[layout.component(name.removeprefix("base_model.model."))] += param.numel()
        else:
            frozen += param.numel()
    total = sum(per.values())
    return {"per_component": per, "total": total, "base_params": frozen, "share": total / (frozen + total)}


def memory(device: str) -> dict[str, float | None]:
    """Peak GPU memory of this process since the run started, in GiB (None on a CPU or MPS run)."""
    import torch

    if not device.startswith("cuda"):
        return {"peak_allocated_gib": None, "peak_reserved_gib": None}
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated(device) / GIB, 3),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / GIB, 3),
    }


def environment() -> dict[str, Any]:
    """Package versions (bitsandbytes included), the git commit of medbench's checkout, the platform."""
    from importlib import metadata

    from medbench.provenance import git_state, package_versions

    versions = package_versions()
    try:
        versions["bitsandbytes"] = metadata.version("bitsandbytes")
    except metadata.PackageNotFoundError:
        versions["bitsandbytes"] = None
    return {"versions": versions, "git": git_state(), "platform": platform.platform()}


def write(output: Path, card: dict[str, Any]) -> Path:
    """Write ``card`` as ``output/run_card.json`` atomically (a temporary file, then rename)."""
    path = output / NAME
    tmp = output / f".{NAME}.tmp"
    tmp.write_text(json.dumps({"schema": SCHEMA, **card}, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read(output: Path) -> dict[str, Any] | None:
    """The run card in ``output``, or None when there is none (the stage has not finished there)."""
    path = output / NAME
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is unreadable ({exc}); delete it and rerun to train this stage again") from exc
    if not isinstance(card, dict):
        raise UsageError(f"{path} is not a medbench run card; delete it and rerun to train this stage again")
    return card
