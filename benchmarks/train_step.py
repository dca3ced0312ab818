"""Training-step benchmark: the Llama-3.2-11B-Vision architecture (random weights), LoRA and QLoRA, 512 px images.

The model is ``MllamaConfig()`` with the vision tower's ``image_size`` 560 (the released checkpoint's architecture,
10,670,220,835 parameters), built with random bf16 weights directly on the GPU: random weights have the real memory
and compute profile, so the numbers are right for memory and speed (never for accuracy). The tanh gates, which a
fresh Mllama zero-initialises, are set to 0.5 as a trained checkpoint's are non-zero. Each sample is one random
512x512 image through the Mllama image processor and 256 text tokens (``<|begin_of_text|>``, ``<|image|>``, random
ids), of which the last ``--answer-tokens`` (128) are labelled, as a masked prompt/answer row is; the image token is
never a label. LoRA: the ``--preset`` (``paper``, from :mod:`medbench.training.presets`) at rank 32, alpha 64,
dropout 0.05; adapters in fp32 over the frozen bf16 base, bf16 autocast, AdamW (lr 2e-4, fused on CUDA).

Paths, each at batch 1, 4 and 8, each on a freshly built model:

* ``naive``: HF's own ``gradient_checkpointing_enable`` (non-reentrant) and the 4 tiles per image the processor
  gives (1 valid, 3 padding), loss from ``model(..., labels=...)``. HF's flag checkpoints the 40 decoder layers only:
  the vision tower's 32 + 8 encoder layers are plain modules it does not reach.
* ``medbench-4tiles``: every layer checkpointed (the decoder layers through HF's flag; each vision encoder layer's
  ``forward`` wrapped in non-reentrant ``torch.utils.checkpoint``), still 4 tiles per image, and the loss computed on
  the labelled positions only (the language model's hidden states, then ``lm_head`` and the cross-entropy on the
  ``--answer-tokens`` positions that have a label: the same mean loss HF computes, without the batch x 256 x 128,256
  logits in fp32).
* ``medbench`` (the recipe's path): ``medbench-4tiles`` plus one tile per 512 px image instead of four. Exactly:
  the processor's ``pixel_values`` ``[B, 1, 4, 3, 560, 560]`` is cut on the tile axis to the batch's most valid tiles
  (``aspect_ratio_mask`` summed per image; 1 for 512 px images, which fit one 560 px tile), and
  ``aspect_ratio_mask`` and ``cross_attention_mask`` are cut the same way; the vision tower's two precomputed tile
  position embeddings (which reshape to ``max_num_tiles`` = 4) are made to add the first T tiles' slice of their
  aspect-ratio row. No weight changes: the released checkpoint loads as is, and with T = 4 the patched embeddings
  are the stock ones bit for bit. It is *not* output-preserving: HF's (and Meta's) vision attention mask blocks only
  padding-to-padding pairs, so valid patches attend to the three padded tiles, which the checkpoint was trained
  with; after the cut they no longer do. Training and evaluation must then cut the same way.
* ``qlora``: ``medbench`` on an NF4 base (bitsandbytes ``Linear4bit``, double quantisation, bf16 compute) replacing
  every ``nn.Linear`` except ``lm_head``, as ``from_pretrained(quantization_config=BitsAndBytesConfig(...))`` does
  for Mllama; embeddings and norms stay bf16 (no ``prepare_model_for_kbit_training``: its fp32 upcast of the
  embedding and ``lm_head`` would add 4 GiB). Skipped, with a line saying why, without bitsandbytes (or, at full
  size, CUDA).

Every path runs ``use_cache=False``. The first step of each configuration counts, per layer, the calls of the
layer's first sub-module during the backward pass: a layer is "recomputed" when its forward ran again there, which
checks that checkpointing reaches it. Peak memory is ``torch.cuda.max_memory_allocated`` / ``_reserved`` over the
warm-up and timed steps (weights, adapters, optimizer state and activations), in GiB. A configuration that runs out
of memory is recorded as OOM, its memory freed, and the run goes on (larger batches of the same path are skipped).

Targets (one H100/H200): LoRA r=32 batch 8 (``medbench``) <= 28 GiB at >= 8 samples/s (naive HF with
checkpointing measured 57.1 GiB, 9.6/s at 1 tile on an H200); QLoRA r=32 batch 4 <= 12 GiB.

``--tiny`` runs the same code with a tiny Mllama (56 px tiles, 4 tiles max, 51 px images: one valid tile of four,
as 512 px is of 560) on the CPU (or the GPU when there is one) in seconds.

Run: python benchmarks/train_step.py [--tiny] [--batches 1,4,8] [--steps 3] [--warmup 1] [--json FILE]
The checkout needs no install: when ``medbench`` is not importable, it is loaded from this repository's folders.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _load_medbench_from_checkout() -> None:
    """Make ``medbench`` (and ``medbench.training``) importable from this checkout when it is not installed, e.g.
    on a bare GPU machine: pyproject maps the package from folders (``harness/``, ``training/``), so a ``sys.path``
    entry alone would not find it."""
    for name, folder in (("medbench", "harness"), ("medbench.training", "training")):
        spec = importlib.util.spec_from_file_location(
            name, ROOT / folder / "__init__.py", submodule_search_locations=[str(ROOT / folder)]
        )
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {name} from {ROOT / folder}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: its __init__ imports its own submodules
        spec.loader.exec_module(module)
    sys.modules["medbench"].training = sys.modules["medbench.training"]  # type: ignore[attr-defined]


try:
    import medbench.training.presets  # noqa: F401
except ImportError:
    _load_medbench_from_checkout()

from medbench.errors import MedbenchError, UsageError  # noqa: E402
from medbench.models import hf_fast  # noqa: E402
from medbench.training import presets  # noqa: E402

PATHS: tuple[str, ...] = ("naive", "medbench-4tiles", "medbench", "qlora")

#: path -> (every layer checkpointed, padded tiles cut, loss on labelled positions only, NF4 base)
PATH_SETTINGS: dict[str, tuple[bool, bool, bool, bool]] = {
    "naive": (False, False, False, False),
    "medbench-4tiles": (True, False, True, False),
    "medbench": (True, True, True, False),
    "qlora": (True, True, True, True),
}

#: path -> one line for the printout (the module docstring says exactly what each does).
PATH_NOTES: dict[str, str] = {
    "naive": "HF gradient_checkpointing_enable (decoder layers only), 4 padded tiles, HF loss on all logits",
    "medbench-4tiles": "every layer checkpointed (vision encoder too), 4 padded tiles, loss on labelled tokens",
    "medbench": "every layer checkpointed, padded tiles cut (1 tile per 512 px image), loss on labelled tokens",
    "qlora": "the medbench path on an NF4 base (bitsandbytes, double quant, bf16 compute; lm_head bf16)",
}

GIB = 2**30


@dataclass(frozen=True)
class Target:
    """A goal for one (path, batch) row at rank 32: peak allocated memory, and optionally a speed."""

    name: str
    path: str
    batch: int
    max_gib: float
    min_samples_per_s: float | None = None

    def describe(self) -> str:
        speed = f" at >= {self.min_samples_per_s:g} samples/s" if self.min_samples_per_s else ""
        return f"{self.name} r=32 batch {self.batch} ({self.path}): peak allocated <= {self.max_gib:g} GiB{speed}"

    def verdict(self, row: Row) -> str:
        """``met`` / ``NOT MET`` with the measured numbers."""
        assert row.peak_allocated_gib is not None and row.samples_per_s is not None
        ok = row.peak_allocated_gib <= self.max_gib
        if self.min_samples_per_s is not None:
            ok = ok and row.samples_per_s >= self.min_samples_per_s
        return f"{'met' if ok else 'NOT MET'} ({row.peak_allocated_gib:.2f} GiB, {row.samples_per_s:.2f} samples/s)"


#: The issue's targets on one H100/H200 (naive HF with checkpointing: 57.1 GiB, 9.6/s at batch 8, 1 tile, H200).
TARGETS: tuple[Target, ...] = (
    Target("LoRA", "medbench", 8, 28.0, 8.0),
    Target("QLoRA", "qlora", 4, 12.0),
)


# -- the model ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """The sizes one run uses: the model's config, the image side fed to the processor, the token ids."""

    config: Any
    tile_px: int
    image_px: int
    text_vocab: int  # ids below this are plain text tokens
    bos_id: int
    image_token_id: int


def model_shape(tiny: bool) -> Shape:
    """The 11B architecture (``MllamaConfig()`` with vision ``image_size`` 560, as :mod:`presets` builds it) or,
    with ``tiny``, a small Mllama with the same structure: 4 tiles max, local + gated global vision layers,
    self- and cross-attention decoder layers, every linear layer >= 64 wide (bitsandbytes' CPU kernel needs it)."""
    import transformers

    if not tiny:
        config = transformers.MllamaConfig(vision_config={"image_size": 560})
        return Shape(config, 560, 512, 128000, 128000, int(config.image_token_id))
    tile, vocab = 56, 1024
    config = transformers.MllamaConfig(
        vision_config={
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_global_layers": 1,
            "attention_heads": 2,
            "intermediate_size": 128,
            "image_size": tile,
            "patch_size": 14,
            "intermediate_layers_indices": [0, 1],
            "vision_output_dim": 192,  # hidden_size * (1 + len(intermediate_layers_indices))
        },
        text_config={
            "vocab_size": vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 4,
            "cross_attention_layers": [1, 3],
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        },
        image_token_index=vocab,  # one past the text vocabulary, as 128256 is for the real model
    )
    return Shape(config, tile, round(512 * tile / 560), vocab - 8, 1, vocab)


def build_model(shape: Shape, device: Any) -> Any:
    """``MllamaForConditionalGeneration`` with random bf16 weights made on ``device``; tanh gates opened (0.5)."""
    import torch
    import transformers

    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.MllamaForConditionalGeneration._from_config(shape.config, dtype=torch.bfloat16)
    with torch.no_grad():  # a fresh Mllama's gates are 0 (image ignored); a trained checkpoint's are not
        for name, param in model.named_parameters():
            if name.endswith("gate"):
                param.fill_(0.5)
    return model


def quantize_nf4(model: Any, device: Any) -> int:
    """Replace every ``nn.Linear`` but ``lm_head`` by a bitsandbytes NF4 ``Linear4bit`` (double quantisation, bf16
    compute), quantising its weight on ``device``; the number replaced. Marks the model ``is_loaded_in_4bit`` (what
    transformers' quantizer sets, and what peft reads to wrap 4-bit layers)."""
    import bitsandbytes as bnb
    import torch

    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name != "lm_head" and not isinstance(module, bnb.nn.Linear4bit)
    ]
    for name, linear in targets:
        quantized = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=torch.bfloat16,
            compress_statistics=True,
            quant_type="nf4",
            device="meta",  # no throw-away weight: the real one is set (and quantised) next
        )
        quantized.weight = bnb.nn.Params4bit(
            linear.weight.data,
            requires_grad=False,
            compress_statistics=True,
            quant_type="nf4",
            module=quantized,
        )._quantize(device)
        if linear.bias is not None:
            quantized.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, quantized)
    model.is_loaded_in_4bit = True
    return len(targets)


def add_lora(model: Any, preset: str, rank: int) -> tuple[Any, int]:
    """``model`` with the preset's LoRA adapters (peft), every trainable parameter in fp32; and their count."""
    import torch
    from peft import get_peft_model

    presets.matched_modules(model, "mllama", preset)  # a clear error if the layout is not the one medbench knows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, presets.lora_config("mllama", preset, rank))
    trainable = 0
    for param in peft_model.parameters():
        if param.requires_grad:
            if param.dtype != torch.float32:  # fp32 adapters over the bf16 base
                param.data = param.data.float()
            trainable += param.numel()
    return peft_model, trainable


# -- checkpointing every layer ---------------------------------------------------------------------------------
def transformer_layers(model: Any) -> dict[str, list[tuple[str, Any]]]:
    """Component (``vision``, ``language``, ...) -> ``(path, layer)`` of every repeated transformer layer (each
    element of a ``layers`` list) of the HF ``model``, split with the presets' Mllama layout."""
    layout = presets.LAYOUTS["mllama"]
    found: dict[str, list[tuple[str, Any]]] = {}
    for path, module in model.named_modules():
        if re.search(r"\.layers\.\d+$", path):
            found.setdefault(layout.component(path), []).append((path, module))
    return found


def enable_hf_checkpointing(model: Any) -> None:
    """HF's own gradient checkpointing, non-reentrant (``activation_checkpointing_enable`` where transformers has
    it, else the older ``gradient_checkpointing_enable``)."""
    kwargs = {"use_reentrant": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def checkpoint_every_layer(model: Any) -> dict[str, int]:
    """The recipe's gradient checkpointing (:func:`medbench.training.recipe.enable_checkpointing`, so this measures
    exactly what ``medbench train`` runs): HF's flag for the decoder's ``GradientCheckpointingLayer`` s and a
    checkpointed ``forward`` on each of Mllama's vision encoder layers, which HF's flag does not reach. Component ->
    layers wrapped beyond HF's flag (for Mllama, the vision encoder's)."""
    from medbench.training.recipe import enable_checkpointing

    wrapped = enable_checkpointing(model, "mllama")["vision"]
    return {"vision": wrapped} if wrapped else {}


class RecomputeCheck:
    """Counts, per transformer layer, the calls of its first sub-module: after :meth:`backward_starts`, a call
    means the backward pass ran the layer's forward again (checkpointing reached it)."""

    def __init__(self, model: Any) -> None:
        self.layers = transformer_layers(model)
        self.calls: dict[str, list[int]] = {c: [0] * len(layers) for c, layers in self.layers.items()}
        self.forward_calls: dict[str, list[int]] = {}
        self._hooks = []
        for component, layers in self.layers.items():
            for index, (_, layer) in enumerate(layers):
                probe = next(iter(layer.children()))
                self._hooks.append(probe.register_forward_hook(self._counter(component, index)))

    def _counter(self, component: str, index: int) -> Callable[..., None]:
        def count(*_: Any) -> None:
            self.calls[component][index] += 1

        return count

    def backward_starts(self) -> None:
        """Mark the end of the forward pass."""
        self.forward_calls = {c: list(n) for c, n in self.calls.items()}

    def recomputed(self) -> dict[str, str]:
        """Component -> ``"<layers recomputed>/<layers>"``, with ``" (N twice or more)"`` when the backward ran
        some layer's forward more than once (checkpointing nested in checkpointing: wasted compute)."""
        out = {}
        for component, calls in self.calls.items():
            before = self.forward_calls.get(component, calls)
            again = [total - fwd for total, fwd in zip(calls, before, strict=True)]
            text = f"{sum(1 for n in again if n > 0)}/{len(calls)}"
            repeated = sum(1 for n in again if n > 1)
            out[component] = text + (f" ({repeated} twice or more)" if repeated else "")
        return out

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()


# -- one tile per image ------------------------------------------------------------------------------------------
def enable_tile_cut(model: Any) -> int:
    """Let the vision tower take fewer tiles than ``max_num_tiles`` (the ``hf:`` adapter's ``vision_tiles=valid``:
    :func:`medbench.models.hf_fast.install`); the number of embeddings patched (3 on Mllama)."""
    return hf_fast.install(model, "mllama")


def cut_padded_tiles(inputs: dict[str, Any]) -> dict[str, Any]:
    """``inputs`` with the tile axis cut to the batch's most valid tiles per image (1 for 512 px images):
    :func:`medbench.models.hf_fast.trim_tiles`."""
    out: dict[str, Any] = hf_fast.trim_tiles(inputs)
    return out


# -- batches and the loss ---------------------------------------------------------------------------------------
def image_processor(shape: Shape) -> Any:
    """The Mllama image processor for the model's tile size and 4 tiles (the PIL one where transformers has it)."""
    import transformers

    cls = getattr(transformers, "MllamaImageProcessorPil", None) or transformers.MllamaImageProcessor
    return cls(size={"height": shape.tile_px, "width": shape.tile_px}, max_image_tiles=4)


def make_batch(shape: Shape, processor: Any, batch: int, seq: int, answer: int) -> tuple[dict[str, Any], Any]:
    """Model inputs (on the CPU) and labels for ``batch`` rows: a random ``image_px`` square image each through
    ``processor`` (4 tiles, as it pads them), ``seq`` tokens (BOS, the image token, random text), every token from
    the image token on attending to the image's valid tiles; labels on the last ``answer`` tokens only."""
    import numpy as np
    import torch
    from PIL import Image

    generator = torch.Generator().manual_seed(batch)
    pixels = torch.randint(0, 256, (batch, shape.image_px, shape.image_px, 3), generator=generator, dtype=torch.uint8)
    images = [[Image.fromarray(np.asarray(p))] for p in pixels]
    features = processor(images=images, return_tensors="pt")
    ids = torch.randint(10, shape.text_vocab, (batch, seq), generator=generator)
    ids[:, 0], ids[:, 1] = shape.bos_id, shape.image_token_id
    valid = features["aspect_ratio_mask"][:, 0].to(torch.long)  # (batch, tiles)
    cross = torch.zeros(batch, seq, 1, valid.shape[-1], dtype=torch.long)
    cross[:, 1:, 0, :] = valid[:, None, :]
    labels = ids.clone()
    labels[:, : seq - answer] = -100  # prompt (and the image token) never a target
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": features["pixel_values"].to(torch.bfloat16),
        "aspect_ratio_ids": features["aspect_ratio_ids"],
        "aspect_ratio_mask": features["aspect_ratio_mask"],
        "cross_attention_mask": cross,
    }
    return inputs, labels


def labelled_loss(model: Any, inputs: dict[str, Any], labels: Any) -> Any:
    """HF's causal-LM loss (mean cross-entropy of each labelled next token) with ``lm_head`` applied to the
    labelled positions only, not to all batch x seq positions: same value, a fraction of the logits' memory."""
    import torch

    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = model.lm_head(hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, targets[keep])


# -- running ---------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One (path, batch) measurement."""

    path: str
    batch: int
    tiles: int = 0  # tiles per image through the vision tower
    step_s: float | None = None
    samples_per_s: float | None = None
    peak_allocated_gib: float | None = None
    peak_reserved_gib: float | None = None
    oom: bool = False
    loss: float | None = None
    note: str = ""


@dataclass
class PathReport:
    """What one path set up, and its rows."""

    path: str
    trainable: int = 0
    quantized_linears: int = 0
    wrapped_layers: dict[str, int] = field(default_factory=dict)
    recomputed: dict[str, str] = field(default_factory=dict)
    weights_gib: float | None = None
    skipped: str = ""
    rows: list[Row] = field(default_factory=list)


class Device:
    """The device and its memory counters (zeros on a CPU)."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.name = torch.cuda.get_device_name(0) if self.cuda else f"cpu ({os.cpu_count()} cores)"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset(self) -> None:
        """Free what is free and start the peak counters again."""
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def allocated(self) -> float | None:
        return self.torch.cuda.memory_allocated() / GIB if self.cuda else None

    def peaks(self) -> tuple[float | None, float | None]:
        if not self.cuda:
            return None, None
        return self.torch.cuda.max_memory_allocated() / GIB, self.torch.cuda.max_memory_reserved() / GIB


def _step(
    peft_model: Any,
    hf_model: Any,
    optimizer: Any,
    batch: tuple[Any, Any],
    path: str,
    dev: Device,
    check: RecomputeCheck | None = None,
) -> Any:
    """One training step (forward, backward, AdamW); the loss (a tensor). ``check`` is told where the backward
    pass starts."""
    torch = dev.torch
    inputs, labels = batch
    with torch.autocast(dev.device.type, dtype=torch.bfloat16):
        if PATH_SETTINGS[path][2]:
            loss = labelled_loss(hf_model, inputs, labels)
        else:
            loss = peft_model(**inputs, labels=labels, use_cache=False).loss
    if check is not None:
        check.backward_starts()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def measure(
    peft_model: Any, report: PathReport, batch: tuple[dict[str, Any], Any], size: int, args: Any, dev: Device
) -> Row:
    """Warm-up and timed steps of one configuration on a fresh AdamW; OOM is recorded, not raised."""
    torch = dev.torch
    hf_model = peft_model.get_base_model()
    row = Row(report.path, size, tiles=int(batch[0]["pixel_values"].shape[2]))
    inputs = {k: v.to(dev.device) for k, v in batch[0].items()}
    on_device = (inputs, batch[1].to(dev.device))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0, fused=dev.cuda)
    dev.reset()
    times: list[float] = []
    loss = None
    try:
        for index in range(args.warmup + args.steps):
            check = RecomputeCheck(hf_model) if index == 0 else None
            dev.sync()
            start = time.perf_counter()
            try:
                loss = _step(peft_model, hf_model, optimizer, on_device, report.path, dev, check)
            finally:
                if check is not None:
                    check.close()
            if check is not None:
                report.recomputed = check.recomputed()
            dev.sync()
            if index >= args.warmup:
                times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError:
        row.oom = True
    if row.oom:
        row.note = "out of memory"
    else:
        row.step_s = sum(times) / len(times)
        row.samples_per_s = size / row.step_s
        row.loss = float(loss) if loss is not None else None
    row.peak_allocated_gib, row.peak_reserved_gib = dev.peaks()
    optimizer.zero_grad(set_to_none=True)
    del optimizer, params, inputs, on_device, loss
    dev.reset()
    return row


def qlora_unavailable(dev: Device, tiny: bool) -> str:
    """Why the QLoRA path cannot run here ("" when it can)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "bitsandbytes is not installed (pip install 'bitsandbytes>=0.45', or carry its wheel)"
    except Exception as exc:  # bitsandbytes raises assorted errors when its native library does not load
        return f"bitsandbytes does not load here ({type(exc).__name__}: {exc})"
    if not dev.cuda and not tiny:
        return "no CUDA device"
    return ""


def run_path(
    path: str, shape: Shape, batches: dict[int, tuple[dict[str, Any], Any]], args: Any, dev: Device
) -> PathReport:
    """Build a fresh model for ``path``, set it up as the path says, and measure every batch size."""
    every_layer, cut_tiles, _, nf4 = PATH_SETTINGS[path]
    report = PathReport(path)
    if nf4:
        report.skipped = qlora_unavailable(dev, args.tiny)
        if report.skipped:
            return report
    dev.reset()
    model = build_model(shape, dev.device)
    if nf4:
        report.quantized_linears = quantize_nf4(model, dev.device)
    if cut_tiles:
        enable_tile_cut(model)
    peft_model, report.trainable = add_lora(model, args.preset, args.rank)
    hf_model = peft_model.get_base_model()
    if every_layer:
        report.wrapped_layers = checkpoint_every_layer(hf_model)
    else:
        enable_hf_checkpointing(hf_model)
    peft_model.train()
    dev.reset()
    report.weights_gib = dev.allocated()
    skip_from: int | None = None
    for size in args.batches:
        if skip_from is not None:
            report.rows.append(Row(path, size, oom=True, note=f"not run: batch {skip_from} ran out of memory"))
            continue
        batch = cut_padded_tiles(batches[size][0]) if cut_tiles else batches[size][0]
        print(f"  {path} batch {size} ...", file=sys.stderr, flush=True)
        row = measure(peft_model, report, (batch, batches[size][1]), size, args, dev)
        report.rows.append(row)
        if row.oom:
            skip_from = size
    del peft_model, hf_model, model
    dev.reset()
    return report


# -- output ------------------------------------------------------------------------------------------------------
def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(reports: Sequence[PathReport]) -> str:
    """The results table: path, batch, tiles, s/step, samples/s, peak allocated / reserved GiB, OOM."""
    header = (
        f"{'path':<16} {'batch':>5} {'tiles':>5} {'s/step':>8} {'samples/s':>10} "
        f"{'peak alloc GiB':>15} {'peak resv GiB':>14} {'OOM':>4}"
    )
    lines = [header, "-" * len(header)]
    for report in reports:
        if report.skipped:
            lines.append(f"{report.path:<16} skipped: {report.skipped}")
            continue
        for row in report.rows:
            lines.append(
                f"{row.path:<16} {row.batch:>5} {row.tiles or '-':>5} {_num(row.step_s, 3):>8} "
                f"{_num(row.samples_per_s, 2):>10} {_num(row.peak_allocated_gib, 2):>15} "
                f"{_num(row.peak_reserved_gib, 2):>14} {'yes' if row.oom else 'no':>4}"
                + (f"  ({row.note})" if row.note and row.note != "out of memory" else "")
            )
    return "\n".join(lines)


def format_setup(reports: Sequence[PathReport]) -> str:
    """Per path: what it does, its trainable parameters, weights in memory, and the checkpointing check."""
    lines = []
    for report in reports:
        lines.append(f"{report.path}: {PATH_NOTES[report.path]}")
        if report.skipped:
            lines.append(f"  skipped: {report.skipped}")
            continue
        wrapped = ", ".join(f"{c} {n}" for c, n in report.wrapped_layers.items()) or "none"
        recomputed = ", ".join(f"{c} {n}" for c, n in report.recomputed.items()) or "not checked"
        extra = f", {report.quantized_linears} linear layers in NF4" if report.quantized_linears else ""
        lines.append(
            f"  trainable {report.trainable:,}{extra}; model in memory {_num(report.weights_gib, 2)} GiB; layers "
            f"checkpointed beyond HF's flag: {wrapped}; layers recomputed in backward: {recomputed}"
        )
    return "\n".join(lines)


def _find(reports: Sequence[PathReport], path: str, batch: int) -> Row | None:
    return next((r for p in reports if p.path == path for r in p.rows if r.batch == batch), None)


def check_targets(reports: Sequence[PathReport], tiny: bool, cuda: bool, rank: int) -> list[str]:
    """One line per target: met, NOT MET, or why it was not evaluated."""
    why = ""
    if tiny:
        why = "not evaluated: --tiny model"
    elif not cuda:
        why = "not evaluated: no CUDA device"
    elif rank != 32:
        why = f"not evaluated: --rank {rank}"
    lines = []
    for target in TARGETS:
        report = next((p for p in reports if p.path == target.path), None)
        row = _find(reports, target.path, target.batch)
        if why:
            verdict = why
        elif report is None or row is None:
            verdict = f"not measured (path {target.path} at batch {target.batch} was not run)"
        elif report.skipped:
            verdict = f"not measured ({report.skipped})"
        elif row.oom or row.peak_allocated_gib is None or row.samples_per_s is None:
            verdict = "NOT MET (out of memory)"
        else:
            verdict = target.verdict(row)
        lines.append(f"{target.describe()}: {verdict}")
    return lines


def environment(dev: Device) -> dict[str, str]:
    """Card, library versions and the allocator setting."""
    import peft
    import transformers

    env = {
        "device": dev.name,
        "python": platform.python_version(),
        "torch": dev.torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "PYTORCH_CUDA_ALLOC_CONF": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
    }
    try:
        import bitsandbytes

        env["bitsandbytes"] = bitsandbytes.__version__
    except Exception:  # absent or broken: the qlora row says so
        env["bitsandbytes"] = "not available"
    return env


# -- command line ------------------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return sorted(set(values))


def _paths(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [p for p in chosen if p not in PATHS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown path(s) {', '.join(unknown) or text!r}; the paths are {', '.join(PATHS)}"
        )
    return [p for p in PATHS if p in chosen]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tiny", action="store_true", help="a tiny Mllama (CPU, seconds): the same code path")
    parser.add_argument("--batches", type=_int_list, default=[1, 4, 8], help="batch sizes (default 1,4,8)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--json", type=Path, help="write every number to this JSON file")
    parser.add_argument("--paths", type=_paths, default=list(PATHS), help=f"subset of {','.join(PATHS)}")
    parser.add_argument("--preset", default="paper", help="LoRA preset (medbench.training.presets; default paper)")
    parser.add_argument("--rank", type=int, default=32, help="LoRA rank (default 32)")
    parser.add_argument("--seq", type=int, default=256, help="tokens per sample (default 256)")
    parser.add_argument("--answer-tokens", type=int, default=128, help="labelled tokens per sample (default 128)")
    args = parser.parse_args(argv)
    presets.check_preset(args.preset)
    if args.steps < 1 or args.warmup < 0:
        raise UsageError(f"--steps must be >= 1 and --warmup >= 0 (got {args.steps}, {args.warmup})")
    if args.rank < 1:
        raise UsageError(f"--rank must be >= 1 (got {args.rank})")
    if not 1 <= args.answer_tokens <= args.seq - 2:
        raise UsageError(
            f"--answer-tokens must be between 1 and --seq - 2 = {args.seq - 2} (BOS and the image token are never "
            f"labels); got {args.answer_tokens}"
        )
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every path at every batch size; the whole record (also printed)."""
    import torch

    dev = Device(torch)
    if not dev.cuda and not args.tiny:
        raise UsageError("the 11B run needs a CUDA GPU (its bf16 weights alone are 19.9 GiB); use --tiny on a CPU")
    threads = torch.get_num_threads()
    if not dev.cuda:
        # The tiny model's ops are too small to gain from threads, and OpenMP threads spinning on a shared host
        # slowed its steps many-fold (seconds instead of ~0.1 s); restored on the way out.
        torch.set_num_threads(1)
    try:
        return _run(args, dev)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, dev: Device) -> dict[str, Any]:
    """:func:`run` on ``dev``: build the batches once, run every path, print, write the JSON."""
    shape = model_shape(args.tiny)
    processor = image_processor(shape)
    batches = {size: make_batch(shape, processor, size, args.seq, args.answer_tokens) for size in args.batches}
    env = environment(dev)
    print(" | ".join(f"{k} {v}" for k, v in env.items() if v), flush=True)
    print(
        f"model: {'tiny Mllama' if args.tiny else 'Llama-3.2-11B-Vision architecture'} (random bf16 weights), "
        f"{shape.image_px}x{shape.image_px} images ({shape.tile_px} px tiles, 4 max), seq {args.seq} "
        f"({args.answer_tokens} labelled), LoRA preset {args.preset!r} r={args.rank}, "
        f"{args.warmup} warm-up + {args.steps} timed steps",
        flush=True,
    )
    reports = []
    for path in args.paths:
        print(f"path {path}", file=sys.stderr, flush=True)
        reports.append(run_path(path, shape, batches, args, dev))
    print(format_setup(reports))
    print(format_table(reports))
    targets = check_targets(reports, args.tiny, dev.cuda, args.rank)
    print("targets:")
    for line in targets:
        print(f"  {line}")
    record = {
        "environment": env,
        "settings": {
            "tiny": args.tiny,
            "preset": args.preset,
            "rank": args.rank,
            "seq": args.seq,
            "answer_tokens": args.answer_tokens,
            "image_px": shape.image_px,
            "tile_px": shape.tile_px,
            "batches": args.batches,
            "steps": args.steps,
            "warmup": args.warmup,
        },
        "paths": [asdict(r) for r in reports],
        "targets": targets,
    }
    if args.json:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--json {args.json}: cannot write it ({exc}); pass a writable path") from exc
        print(f"wrote {args.json}")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except MedbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
