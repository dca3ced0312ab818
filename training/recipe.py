"""The LLaMA32-Med training recipe: one LoRA/QLoRA stage, top to bottom (``medbench train CONFIG``).

:func:`train` runs one stage of a :class:`~medbench.training.config.TrainConfig` into an output folder, which becomes
a PEFT adapter directory that ``hf:<base>+lora:<dir>`` and ``llama32med`` load directly:

1. refuse what cannot run here (QLoRA without a CUDA GPU); a folder whose ``run_card.json`` records the same
   config is finished already; under ``torchrun`` / ``accelerate launch`` every process runs this recipe on its
   share of each step (:mod:`medbench.training.parallel`: DDP, rank 0 writes the files);
2. seed Python, NumPy and torch with ``optim.seed``; load the examples (:func:`~medbench.training.data.load_examples`)
   and keep those the label-masking collator accepts (the others are counted in the run card);
3. load the base (``AutoModelForImageTextToText``; for QLoRA in 4-bit NF4, double quantisation, bf16 compute, then
   ``prepare_model_for_kbit_training``); gradient checkpointing on every layer of the language model **and of the
   vision encoder** (transformers 5.x leaves Mllama's vision layers unchecked, so they are wrapped here);
4. put LoRA where the preset says (``freeze_vision`` drops the vision tower's adapters: the ``no-vision`` preset), or,
   with ``init_adapter`` (``previous`` = the stage-1 adapter in ``<output>/../stage1``, or a path), continue that
   adapter (``PeftModel.from_pretrained(..., is_trainable=True)``): stage 2 continues stage 1 by default;
5. AdamW on the trainable tensors, ``transformers.get_scheduler`` (cosine, linear or constant, warmup =
   ``warmup_ratio`` x steps); every epoch in :func:`~medbench.training.data.epoch_order`, ``batch_size`` examples
   per micro-batch, ``grad_accum`` micro-batches per optimiser step, the loss averaged over every answer token of
   the step, gradients clipped at ``max_grad_norm``;
6. a checkpoint every ``checkpoint_every`` steps (:mod:`medbench.training.checkpoint`); the same command with the
   same output resumes from the newest one, with the same data order and random draws, and says so on stderr;
7. save the adapter (``adapter_config.json`` records the base: a hub id as given, a local folder as its absolute
   path), then the run card (:mod:`medbench.training.runcard`), then drop the checkpoints.

:func:`debug` is ``medbench train debug``: ``training/configs/debug.toml`` holds a ``[common]`` table and a
``[stage1]`` and ``[stage2]`` table, each a set of settings laid over the shipped config of that name (``[common]``
first), with ``base`` set to a tiny random Mllama built in ``DIR/base``; stage 1 trains ``DIR/stage1`` and stage 2
continues it into ``DIR/stage2``, on the demo data, on the CPU, in well under a minute.

torch, transformers and peft are imported inside functions.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from medbench.configfile import toml_module
from medbench.distributed import World, world
from medbench.errors import DataError, SampleError, UsageError
from medbench.models import hf_families, hf_runtime
from medbench.training import checkpoint, parallel, runcard
from medbench.training.checkpoint import Progress
from medbench.training.collate import IGNORE_INDEX, Collator
from medbench.training.config import TrainConfig
from medbench.training.data import TrainExample, batches, epoch_order, load_examples
from medbench.training.presets import COMPONENTS, LAYOUTS, PRESET_COMPONENTS, PRESETS, check_family, lora_config

COMPUTE_DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class Base:
    """The base checkpoint of a run: as given, where it was read from, its hub commit (None: a local folder)."""

    ref: str
    path: Path
    revision: str | None
    model_type: str

    @property
    def record(self) -> str:
        """What ``adapter_config.json`` records: a hub id as given, a local folder as its absolute path (so that
        the evaluation finds it from any working directory and refuses an adapter put on another base)."""
        return self.ref if self.revision else str(self.path)


def say(message: str) -> None:
    print(f"medbench train: {message}", file=sys.stderr, flush=True)


# -- the recipe ---------------------------------------------------------------------------------------------------
def train(config: TrainConfig, output: Path) -> Path:
    """Train one stage of ``config`` into ``output`` (the adapter directory, returned); resumes a killed run."""
    output = Path(output).expanduser().resolve()
    refuse_unsupported(config)
    if _finished(config, output):
        return output
    w = world()  # one process, or this rank of a torchrun / accelerate job (initialises the process group)
    base = resolve_base(config.base)
    init = init_adapter(config, output, base)
    seed_everything(config.optim.seed)
    data = load_examples(config)
    weights = hf_runtime.weights_digest(base.path)  # a resumed run must continue on the same weights
    preset = effective_preset(config)
    dtype, device = hf_runtime.device_and_dtype("auto", "auto")
    processor = hf_runtime.load_processor(base.path, base.model_type)
    collator = Collator(processor, base.model_type, config.data.max_length, config.data.image_size)
    examples, refused, lengths = usable_examples(data.examples, collator)
    model = load_base(base, dtype, device, config)
    checkpointed = enable_checkpointing(model, base.model_type) if config.gradient_checkpointing else {}
    model = attach_lora(model, config, base, preset, init)
    model.train()
    parallel.reseed(config.optim.seed, w)
    trainable = [p for p in model.parameters() if p.requires_grad]
    input_dtype = None if config.quant.enabled else dtype  # k-bit prepared models keep float32 inputs
    per_step = config.optim.grad_accum * w.size  # micro-batches per optimiser step, over every process
    steps_per_epoch = math.ceil(math.ceil(len(examples) / config.optim.batch_size) / per_step)
    total = steps_per_epoch * config.optim.epochs
    warmup = math.ceil(config.optim.warmup_ratio * total)
    optimizer, scheduler = make_optimizer(trainable, config, warmup, total)
    progress = checkpoint.resume(output, config.sha256(), weights, model, optimizer, scheduler, device, w)
    progress.initial_sha256 = progress.initial_sha256 or runcard.adapter_digest(model)
    if progress.resumed_at:
        say(f"{config.name}: resuming from checkpoint step {progress.step} (epoch {progress.epoch + 1}) in {output}")
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)
    processes = f" on {w.size} processes" if w.size > 1 else ""
    say(f"{config.name}: {len(examples)} examples, {total} optimiser steps ({steps_per_epoch} per epoch){processes}")
    started, samples0, tokens0 = time.perf_counter(), progress.samples, progress.tokens
    optimisers = (optimizer, scheduler)
    engine = parallel.wrap(model, w, device)
    run_epochs(
        engine, examples, collator, optimisers, trainable, config, progress, output, total, device, input_dtype, w
    )
    seconds = time.perf_counter() - started
    if not w.is_main:  # rank 0 writes the adapter and the run card; the others return once they exist
        w.barrier()
        return output
    save_adapter(model, base, output)
    card = runcard.build(
        config,
        progress,
        base=base,
        init=init,
        preset=preset,
        model=model,
        checkpointed=checkpointed,
        data=data,
        trained=len(examples),
        refused=refused,
        lengths=lengths,
        optimisation={
            "optimizer": "AdamW",
            "scheduler": scheduler_name(config, warmup),
            "steps": total,
            "steps_per_epoch": steps_per_epoch,
            "warmup_steps": warmup,
            "world_size": w.size,
            "effective_batch": config.optim.batch_size * per_step,
        },
        device=device,
        dtype=dtype,
        throughput={  # of this process's share of the steps (all of them unless it resumed a run)
            "seconds": round(seconds, 3),
            "samples_per_s": round((progress.samples - samples0) / seconds, 3) if seconds else None,
            "tokens_per_s": round((progress.tokens - tokens0) / seconds, 1) if seconds else None,
        },
    )
    runcard.write(output, card)
    checkpoint.clear(output)
    say(f"{config.name}: done; adapter and run card in {output}")
    w.barrier()
    return output


def refuse_unsupported(config: TrainConfig) -> None:
    """A :class:`UsageError` for what this machine or this recipe cannot do, before anything is loaded."""
    sharded = [n for n in ("FSDP", "DEEPSPEED") if os.environ.get(f"ACCELERATE_USE_{n}", "").lower() in ("1", "true")]
    if sharded:  # the recipe wraps the model in DDP itself: an FSDP/DeepSpeed launch config would be ignored silently
        raise UsageError(
            f"medbench train trains data-parallel (DDP) under accelerate launch / torchrun, but this launch asks for "
            f"{sharded[0]}, which the recipe does not apply; launch without it (docs/training.md: multi-GPU, and "
            "what to do for bases that do not fit one GPU)"
        )
    if config.quant.compute_dtype not in COMPUTE_DTYPES:
        raise UsageError(f"quant.compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}")
    if not config.quant.enabled:
        return
    import torch

    if not torch.cuda.is_available():
        raise UsageError(
            f"training config {config.name!r}: quant.enabled (QLoRA) loads the base in 4-bit with bitsandbytes, "
            "which needs a CUDA GPU, and torch sees none here; train on a GPU machine, or set quant.enabled=false "
            "for a 16-bit LoRA"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise UsageError("quant.enabled (QLoRA) needs bitsandbytes: pip install 'medbench[hf]'") from exc


def _finished(config: TrainConfig, output: Path) -> bool:
    """Whether ``output`` holds this config's finished adapter already (another config's is an error)."""
    card = runcard.read(output)
    if card is None:
        return False
    if card.get("config_sha256") != config.sha256():
        raise UsageError(
            f"{output} holds a finished adapter of another training config ({card.get('name')!r}); "
            "choose another --output, or delete that folder to train again"
        )
    checkpoint.clear(output)  # what a kill between the run card and the clean-up left
    say(f"{config.name}: {output} is trained already (run_card.json); nothing to do (delete it to train again)")
    return True


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every CUDA device too


def resolve_base(ref: str) -> Base:
    """The base checkpoint ``ref`` (a folder or a hub id), checked as the evaluation checks it."""
    path, revision = hf_runtime.resolve(ref, None, what="model", marker="config.json")
    model_type = hf_families.read_model_type(path)
    hf_families.check_supported(path, model_type)
    hf_families.check_weights(path)
    check_family(model_type)
    return Base(ref, path, revision, model_type)


def effective_preset(config: TrainConfig) -> str:
    """The LoRA preset trained: ``freeze_vision`` turns a preset with vision adapters into ``no-vision``."""
    if config.freeze_vision and "vision" in PRESET_COMPONENTS[config.lora.preset]:
        return "no-vision"
    return config.lora.preset


def init_adapter(config: TrainConfig, output: Path, base: Base) -> Path | None:
    """The adapter this stage continues (None: a fresh one), checked to fit the base and the LoRA settings."""
    if config.init_adapter == "none":
        return None
    previous = config.init_adapter == "previous"
    folder = (output.parent / "stage1" if previous else Path(config.init_adapter).expanduser()).resolve()
    if folder == output:
        raise UsageError(f"init_adapter {config.init_adapter!r} is this run's own output {output}")
    if previous and runcard.read(folder) is None:
        raise UsageError(
            f"init_adapter 'previous': no finished stage-1 adapter in {folder} (its run_card.json); train stage 1 "
            f"with --output {folder} first, or set init_adapter=none (Table 3's 'w/o stage 1') or a path"
        )
    saved = hf_families.read_adapter_config(folder)
    recorded = saved.get("base_model_name_or_path")
    same = recorded in (base.ref, base.record) or (
        isinstance(recorded, str) and Path(recorded).expanduser().is_dir() and Path(recorded).resolve() == base.path
    )
    if recorded and not same:
        raise UsageError(f"init_adapter {folder} was trained on {recorded}, not on this run's base {base.ref}")
    wanted = {
        "r": config.lora.rank,
        "lora_alpha": config.lora.alpha,
        "lora_dropout": config.lora.dropout,
        "target_modules": PRESETS[base.model_type][effective_preset(config)],
    }
    differ = [f"{k} {saved.get(k)!r} (this config: {v!r})" for k, v in wanted.items() if saved.get(k) != v]
    if differ:
        raise UsageError(
            f"init_adapter {folder} does not have this config's LoRA settings: {'; '.join(differ)}; set lora.* "
            "to the adapter's settings, or init_adapter=none for a fresh adapter"
        )
    return folder


def usable_examples(
    examples: list[TrainExample], collator: Collator
) -> tuple[list[TrainExample], list[dict[str, str]], list[int]]:
    """``(examples the collator can train, those it refuses with the reason, the kept ones' token counts)``."""
    kept, refused, lengths = [], [], []
    for example in examples:
        try:
            lengths.append(collator.check(example))
        except SampleError as exc:
            refused.append({"task": example.task, "id": example.id, "reason": str(exc)})
            continue
        kept.append(example)
    if refused:
        say(f"{len(refused)} example(s) skipped, e.g. {refused[0]['reason']} (all listed in the run card)")
    if not kept:
        raise DataError(f"no trainable example: the collator refused all {len(examples)}")
    return kept, refused, lengths


def load_base(base: Base, dtype: Any, device: str, config: TrainConfig) -> Any:
    """The base model on ``device``, in ``dtype`` or, for QLoRA, in 4-bit NF4 prepared for k-bit training (the
    evaluation's loader, :func:`medbench.models.hf_runtime.load_model`)."""
    import torch

    quant = config.quant
    compute = getattr(torch, quant.compute_dtype)
    model = hf_runtime.load_model(
        base.path,
        label=f"the base {base.ref} (training)",
        model_type=base.model_type,
        dtype=compute if quant.enabled else dtype,
        device=device,
        quantization=hf_runtime.four_bit(quant.quant_type, quant.double_quant, compute) if quant.enabled else None,
        oom_hint="use QLoRA (quant.enabled=true) or a larger GPU",
    )
    if quant.enabled:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)  # enabled below, ours
    return model


def enable_checkpointing(model: Any, family: str) -> dict[str, int]:
    """Gradient checkpointing (non-reentrant) on every repeated layer, vision encoder included; returns how many
    layers of each component recompute their activations in the backward pass.

    transformers checkpoints its ``GradientCheckpointingLayer`` s only; Mllama's vision encoder layers are plain
    modules (the encoder carries the flag but never reads it), so they are wrapped here."""
    import torch
    from transformers.modeling_layers import GradientCheckpointingLayer

    with warnings.catch_warnings():  # the deprecated spelling, where the newer one is missing (transformers 5.0)
        warnings.simplefilter("ignore", FutureWarning)
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    layout = LAYOUTS[family]
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, module in model.named_modules():
        if isinstance(module, GradientCheckpointingLayer):
            counts[layout.component(name)] += int(bool(module.gradient_checkpointing))
        elif isinstance(module, torch.nn.ModuleList) and layout.component(name) == "vision":
            for layer in module:
                is_layer = type(layer).__name__.endswith(("Layer", "Block"))
                if is_layer and not isinstance(layer, GradientCheckpointingLayer):
                    _checkpoint_forward(layer)
                    counts["vision"] += 1
    return counts


def _checkpoint_forward(layer: Any) -> None:
    """Make ``layer`` recompute its forward in the backward pass when training (as transformers' own layers do)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    inner = layer.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if layer.training and torch.is_grad_enabled():
            return checkpoint(inner, *args, use_reentrant=False, **kwargs)
        return inner(*args, **kwargs)

    layer.forward = forward


def attach_lora(model: Any, config: TrainConfig, base: Base, preset: str, init: Path | None) -> Any:
    """``model`` with fresh LoRA adapters where ``preset`` says, or with the adapter ``init`` to continue."""
    from peft import PeftModel, get_peft_model

    from medbench.training.presets import matched_modules

    matched_modules(model, base.model_type, preset)  # a clear error before peft's "target modules not found"
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in 5.x: not ours to act on
        warnings.simplefilter("ignore", FutureWarning)
        if init is None:
            lora = lora_config(base.model_type, preset, config.lora.rank, config.lora.alpha, config.lora.dropout)
            return get_peft_model(model, lora)
        return PeftModel.from_pretrained(model, str(init), is_trainable=True)


def scheduler_name(config: TrainConfig, warmup: int) -> str:
    """transformers' name for the schedule (``constant`` keeps its warmup as ``constant_with_warmup``)."""
    name = config.optim.scheduler
    return "constant_with_warmup" if name == "constant" and warmup else name


def make_optimizer(trainable: list[Any], config: TrainConfig, warmup: int, total: int) -> tuple[Any, Any]:
    import torch
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(trainable, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    scheduler = get_scheduler(
        scheduler_name(config, warmup), optimizer, num_warmup_steps=warmup, num_training_steps=total
    )
    return optimizer, scheduler


# -- the loop -----------------------------------------------------------------------------------------------------
def run_epochs(
    model: Any,
    examples: list[TrainExample],
    collator: Collator,
    optimisers: tuple[Any, Any],
    trainable: list[Any],
    config: TrainConfig,
    progress: Progress,
    output: Path,
    total: int,
    device: str,
    input_dtype: Any = None,
    w: World = parallel.SINGLE,
) -> None:
    """Train from ``progress`` to step ``total``, checkpointing every ``checkpoint_every`` steps; ``optimisers``:
    the optimiser and its scheduler; floating inputs are cast to ``input_dtype`` (None: left as they are); with
    several processes ``w``, this one trains its :func:`~medbench.training.parallel.share` of each step."""
    optimizer, scheduler = optimisers
    settings = config.optim
    every = max(1, total // 100)
    per_step = settings.grad_accum * w.size
    for epoch in range(progress.epoch, settings.epochs):
        batched = batches(epoch_order(len(examples), settings.seed, epoch), settings.batch_size)
        steps = [batched[i : i + per_step] for i in range(0, len(batched), per_step)]
        first = progress.batch // per_step if epoch == progress.epoch else 0
        for index in range(first, len(steps)):
            micro = [(collator([examples[i] for i in b]), weight) for b, weight in parallel.share(steps[index], w)]
            lr = float(scheduler.get_last_lr()[0])
            loss, grad_norm, tokens = optimiser_step(
                model, micro, optimisers, trainable, settings, device, input_dtype, w
            )
            progress.step += 1
            progress.samples += sum(len(batch) for batch in steps[index])
            progress.tokens += tokens
            point = {"step": progress.step, "epoch": epoch, "loss": round(loss, 6), "lr": lr, "grad_norm": grad_norm}
            progress.loss_curve.append(point)
            last = index + 1 == len(steps)
            progress.epoch, progress.batch = (epoch + 1, 0) if last else (epoch, (index + 1) * per_step)
            if w.is_main and (progress.step % every == 0 or progress.step in (1, total)):
                say(f"{config.name}: step {progress.step}/{total} epoch {epoch + 1} loss {loss:.4f} lr {lr:.2e}")
            if progress.step % config.checkpoint_every == 0 and progress.step < total:
                checkpoint.save(output, progress, unwrap(model), optimizer, scheduler, w)


def optimiser_step(
    model: Any,
    micro: list[tuple[dict[str, Any], float]],
    optimisers: tuple[Any, Any],
    trainable: list[Any],
    settings: Any,
    device: str,
    input_dtype: Any = None,
    w: World = parallel.SINGLE,
) -> tuple[float, float, int]:
    """One optimiser step over this process's ``(micro-batch, weight)`` slots ``micro``: ``(mean loss per answer
    token of the whole step, gradient norm before clipping, tokens seen by every process)``. Each answer token of the
    step weighs the same, however the micro-batches are padded and whichever process trains them; a weight-0 slot
    (:func:`~medbench.training.parallel.share`) only keeps the processes' all-reduces in step."""
    import torch

    optimizer, scheduler = optimisers
    counted = [(b, weight) for b, weight in micro if weight]
    local_targets = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b, _ in counted)
    targets = max(1, int(parallel.all_sum([local_targets], w, device)[0]))
    summed = 0.0
    for index, (batch, weight) in enumerate(micro):
        with parallel.no_sync(model, last=index + 1 == len(micro)):
            loss = loss_sum(model, batch, device, input_dtype)
            # DDP averages the processes' gradients: x world size makes it their sum, the one-process gradient
            (loss * weight * w.size / targets).backward()
        summed += float(loss.detach()) * weight
    norm = torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    tokens = sum(int(b["attention_mask"].sum()) for b, _ in counted)
    summed, tokens_seen = parallel.all_sum([summed, tokens], w, device)
    return summed / targets, round(float(norm), 6), int(tokens_seen)


def unwrap(model: Any) -> Any:
    """The PEFT model inside a ``DistributedDataParallel`` wrapper (the model itself when unwrapped)."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def loss_sum(model: Any, batch: dict[str, Any], device: str, input_dtype: Any = None) -> Any:
    """The summed next-token cross-entropy over ``batch``'s answer tokens (labels not :data:`IGNORE_INDEX`),
    floating inputs (pixel values) cast to ``input_dtype`` as the evaluation casts them (None: left as they are).

    Computed here rather than by the model: the same for every family, exact across accumulation, and with logits
    only at the positions that predict an answer token (``logits_to_keep``): the full batch x tokens x vocabulary
    logits in float32 would be gigabytes for LLaMA's 128,256-token vocabulary."""
    import torch.nn.functional as F

    labels = batch["labels"].to(device)
    inputs = {
        k: v.to(device, input_dtype) if input_dtype is not None and v.is_floating_point() else v.to(device)
        for k, v in batch.items()
        if k != "labels"
    }
    positions = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().flatten()  # position p predicts token p + 1
    logits = model(**inputs, use_cache=False, logits_to_keep=positions).logits  # batch x positions x vocabulary
    targets = labels[:, positions + 1]  # IGNORE_INDEX where another row's answer needed the position
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


def save_adapter(model: Any, base: Base, output: Path) -> None:
    """``save_pretrained`` into ``output`` with the base recorded (and, for a hub base, its commit)."""
    saved = model.peft_config["default"]
    saved.base_model_name_or_path = base.record
    saved.revision = base.revision
    model.save_pretrained(str(output))


# -- medbench train debug -----------------------------------------------------------------------------------------
def debug_configs(base: Path) -> dict[str, TrainConfig]:
    """``training/configs/debug.toml``'s two stages: stage name -> the shipped config of that name with the
    ``[common]`` settings, then the stage's own, and ``base`` laid over it."""
    text = resources.files("medbench.training").joinpath("configs", "debug.toml").read_text(encoding="utf-8")
    doc = toml_module().loads(text)
    common = _dotted(doc.get("common", {}))
    out = {}
    for stage in ("stage1", "stage2"):
        settings = common | _dotted(doc.get(stage, {})) | {"base": str(base)}
        out[stage] = TrainConfig.load(stage, [f"{key}={json.dumps(value)}" for key, value in settings.items()])
    return out


def _dotted(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out |= _dotted(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def debug(output: Path) -> dict[str, Path]:
    """``medbench train debug``: a tiny random Mllama in ``output/base``, stage 1 into ``output/stage1``, stage 2
    continuing it into ``output/stage2`` (the debug config); rerun the same command to resume a killed run."""
    from medbench.testing.vlms import build_tiny_model

    output = Path(output).expanduser().resolve()
    base = build_tiny_model("mllama", output / "base")  # deterministic: a rebuild writes the same bytes
    return {"base": base} | {stage: train(config, output / stage) for stage, config in debug_configs(base).items()}
