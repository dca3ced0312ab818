"""Where LoRA goes: placement presets as full module paths, and exact trainable-parameter counts per component.

A preset is a regular expression over the **full** module paths ``named_modules()`` gives in transformers 5.x (e.g.
``model.language_model.layers.3.cross_attn.q_proj``), handed to ``peft.LoraConfig(target_modules=<regex>)``; peft
matches it with ``re.fullmatch``. Bare suffixes such as ``["q_proj", "v_proj"]`` are never used: on Mllama, Gemma 3
and LLaVA the vision tower's attention layers carry the same names as the language model's, so a suffix list silently
adapts the vision tower too. No preset wraps ``lm_head``, an embedding, a convolution or a norm.

The presets (the same names for every family):

* ``all-linear``: vision tower + projector + language model: every linear layer peft's ``"all-linear"`` wraps (peft
  leaves out only ``lm_head``; on Gemma 3 the unused SigLIP head is left out too, see below). 134,725,632
  trainable parameters for the 11B Mllama at rank 32 (1.2469 %).
* ``paper``: vision tower + language model, attention and MLP, **no projector**. 134,348,800 at rank 32 = 1.2434 %
  of base + LoRA: exactly the paper's "1.24 % (134M)" (and Unsloth's default placement). The paper's text says the
  projector is adapted too, but its parameter count does not allow it (with the projector it would print 1.25 %).
* ``llm-only``: the language model alone: self-attention, cross-attention (Mllama) and MLP of every layer; the
  vision tower and the projector stay frozen. 104,857,600 at rank 32 (LLaMA-Factory's default ``lora_target: all``).
* ``no-vision``: Table 3's "LoRA w/o vision encoder FT": the full recipe with only the vision encoder's adapters
  removed, i.e. language model **+ projector**. Table 3 drops exactly one column ("Vision Encoder FT") and the paper
  lists the projector among the adapted modules separately from the vision encoder (§3.3, "the vision encoder,
  multimodal projector, and the LLM"), so the projector keeps its adapter; this also keeps ``no-vision`` distinct
  from ``llm-only``. 105,234,432 at rank 32.

Family layouts (checked on the tiny models and on meta-built default configs):

* ``mllama``: vision ``model.vision_model`` (32 local + 8 global layers: ``self_attn.{q,k,v,o}_proj``,
  ``mlp.fc1/fc2``), projector ``model.multi_modal_projector`` (one linear), language ``model.language_model``
  (``self_attn`` or ``cross_attn`` ``{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj``).
* ``qwen2_5_vl``: vision ``model.visual.blocks`` (``attn.qkv``, ``attn.proj``, ``mlp.{gate,up,down}_proj``),
  projector ``model.visual.merger.mlp.{0,2}`` (inside ``model.visual``, so it is told apart from the tower first).
* ``gemma3``: vision ``model.vision_tower.encoder.layers`` (SigLIP). The SigLIP pooling head is left out: Gemma 3
  reads the tower's ``last_hidden_state``, so the head never affects the output, and its attention is an
  ``nn.MultiheadAttention`` whose ``out_proj`` LoRA cannot reach. The projector holds a bare weight matrix
  (``mm_input_projection_weight``), not an ``nn.Linear``, so no preset can adapt it: ``no-vision`` equals
  ``llm-only`` there.
* ``llava``: vision ``model.vision_tower.encoder.layers`` (CLIP), projector
  ``model.multi_modal_projector.linear_{1,2}``. (LLaVA-1.5 reads the second-to-last CLIP layer, so the last
  layer's adapters get no gradient; they are counted.)

Counts are LoRA's ``r * (in_features + out_features)`` per wrapped linear layer, read back from peft's own
``get_peft_model`` on a copy of the model; the share is of base + LoRA parameters, as peft's
``print_trainable_parameters`` reports it. torch, transformers and peft are imported inside functions.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medbench.errors import UsageError

#: The parts of a vision-language model a count is split into ("other": anything else, e.g. ``lm_head``).
COMPONENTS: tuple[str, ...] = ("vision", "projector", "language", "other")

#: preset -> the components it puts LoRA adapters on.
PRESET_COMPONENTS: dict[str, tuple[str, ...]] = {
    "all-linear": ("vision", "projector", "language"),
    "paper": ("vision", "language"),
    "llm-only": ("language",),
    "no-vision": ("projector", "language"),
}

#: preset -> one line saying what it adapts (printed by :func:`format_counts`).
PRESET_DESCRIPTIONS: dict[str, str] = {
    "all-linear": "vision tower + projector + language model",
    "paper": "vision tower + language model, no projector (the paper's 1.24 %)",
    "llm-only": "language model only",
    "no-vision": "projector + language model (Table 3's 'w/o vision encoder FT')",
}

_LLM = r"model\.language_model\.layers\.\d+\."
_LLAMA_LIKE_LLM = _LLM + r"(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)"
_ENCODER = r"model\.vision_tower\.encoder\.layers\.\d+\.(?:self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12])"


@dataclass(frozen=True)
class Layout:
    """Where one family's parts live, as full module paths (transformers 5.x names).

    ``prefixes``: component -> module-path prefix, tried in order (first hit wins), to split a count by component.
    ``targets``: component -> regex of the linear layers LoRA may wrap in it (absent: nothing there can be wrapped).
    """

    prefixes: tuple[tuple[str, str], ...]
    targets: Mapping[str, str]

    def component(self, path: str) -> str:
        """Which component the module (or parameter) at ``path`` belongs to; "other" when none."""
        for component, prefix in self.prefixes:
            if path == prefix or path.startswith(prefix + "."):
                return component
        return "other"


#: family (a config's ``model_type``) -> its layout.
LAYOUTS: dict[str, Layout] = {
    "mllama": Layout(
        prefixes=(
            ("projector", "model.multi_modal_projector"),
            ("vision", "model.vision_model"),
            ("language", "model.language_model"),
        ),
        targets={
            "vision": r"model\.vision_model\.(?:transformer|global_transformer)\.layers\.\d+\."
            r"(?:self_attn\.[qkvo]_proj|mlp\.fc[12])",
            "projector": r"model\.multi_modal_projector",
            "language": _LLM + r"(?:(?:self_attn|cross_attn)\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)",
        },
    ),
    "qwen2_5_vl": Layout(
        prefixes=(
            ("projector", "model.visual.merger"),  # before "model.visual": the merger sits inside it
            ("vision", "model.visual"),
            ("language", "model.language_model"),
        ),
        targets={
            "vision": r"model\.visual\.blocks\.\d+\.(?:attn\.(?:qkv|proj)|mlp\.(?:gate|up|down)_proj)",
            "projector": r"model\.visual\.merger\.mlp\.[02]",  # mlp.1 is the GELU between them
            "language": _LLAMA_LIKE_LLM,
        },
    ),
    "gemma3": Layout(
        prefixes=(
            ("projector", "model.multi_modal_projector"),
            ("vision", "model.vision_tower"),
            ("language", "model.language_model"),
        ),
        targets={"vision": _ENCODER, "language": _LLAMA_LIKE_LLM},  # the projector has no nn.Linear
    ),
    "llava": Layout(
        prefixes=(
            ("projector", "model.multi_modal_projector"),
            ("vision", "model.vision_tower"),
            ("language", "model.language_model"),
        ),
        targets={
            "vision": _ENCODER,
            "projector": r"model\.multi_modal_projector\.linear_[12]",
            "language": _LLAMA_LIKE_LLM,
        },
    ),
}

#: family -> transformers class building the whole model from its config.
MODEL_CLASSES: dict[str, str] = {
    "mllama": "MllamaForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "gemma3": "Gemma3ForConditionalGeneration",
    "llava": "LlavaForConditionalGeneration",
}

FAMILIES: tuple[str, ...] = tuple(LAYOUTS)


def _preset_regex(layout: Layout, preset: str) -> str:
    """One regex (alternatives in a non-capturing group) of every target of ``preset``'s components in ``layout``."""
    parts = [layout.targets[c] for c in PRESET_COMPONENTS[preset] if c in layout.targets]
    return "(?:" + "|".join(parts) + ")"


#: family -> preset -> ``target_modules`` regex of full module paths.
PRESETS: dict[str, dict[str, str]] = {
    family: {preset: _preset_regex(layout, preset) for preset in PRESET_COMPONENTS}
    for family, layout in LAYOUTS.items()
}


def check_preset(preset: str) -> str:
    """``preset`` if it is one of :data:`PRESET_COMPONENTS`, else a :class:`UsageError` listing the presets."""
    if preset not in PRESET_COMPONENTS:
        raise UsageError(f"unknown LoRA preset {preset!r}; the presets are {', '.join(PRESET_COMPONENTS)}")
    return preset


def check_family(family: str) -> str:
    """``family`` if a layout is known for it, else a :class:`UsageError` listing the families."""
    if family not in LAYOUTS:
        raise UsageError(
            f"no LoRA presets for model family {family!r} (the config's model_type); "
            f"the families are {', '.join(FAMILIES)}"
        )
    return family


def family_of(model: Any) -> str:
    """The family of a model (or config): its ``config.model_type``, checked by :func:`check_family`."""
    config = getattr(model, "config", model)
    return check_family(str(getattr(config, "model_type", None)))


def lora_config(family: str, preset: str, rank: int = 32, alpha: int | None = None, dropout: float = 0.05) -> Any:
    """A ``peft.LoraConfig`` putting rank-``rank`` adapters where ``preset`` says on a ``family`` model.

    The paper states only the rank (32); ``alpha`` defaults to 2 x rank and ``dropout`` to 0.05 (the training
    config's recorded choices). Bad values are a :class:`UsageError`.
    """
    check_family(family)
    check_preset(preset)
    alpha = 2 * rank if alpha is None else alpha
    if rank < 1 or alpha < 1:
        raise UsageError(f"LoRA rank and alpha must be >= 1 (got rank {rank}, alpha {alpha})")
    if not 0.0 <= dropout < 1.0:
        raise UsageError(f"LoRA dropout must be in [0, 1) (got {dropout})")
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=PRESETS[family][preset],
        bias="none",
        task_type="CAUSAL_LM",
    )


def matched_modules(model: Any, family: str, preset: str) -> dict[str, list[str]]:
    """Component -> the full paths of the modules ``preset`` wraps in ``model`` (every component a key).

    A :class:`UsageError` when a component the preset adapts (and the family has linear layers in) matches nothing:
    the model's module names are not the layout medbench knows, and training would silently skip that part.
    """
    layout = LAYOUTS[check_family(family)]
    check_preset(preset)
    import torch

    pattern = re.compile(PRESETS[family][preset])
    found: dict[str, list[str]] = {c: [] for c in COMPONENTS}
    for path, module in model.named_modules():
        if pattern.fullmatch(path):
            if not isinstance(module, torch.nn.Linear):  # bitsandbytes' 4-bit layers are nn.Linear too
                raise UsageError(
                    f"LoRA preset {preset!r} for {family} matches {path}, a {type(module).__name__} and not a linear "
                    "layer: the model's layout is not the one medbench knows (transformers 5.x)"
                )
            found[layout.component(path)].append(path)
    missing = [c for c in PRESET_COMPONENTS[preset] if c in layout.targets and not found[c]]
    if missing:
        raise UsageError(
            f"LoRA preset {preset!r} matches no {' or '.join(missing)} module of this {type(model).__name__} "
            f"(expected paths like {layout.targets[missing[0]]!r}); its module names are not the {family} layout "
            "medbench knows (transformers 5.x): check the model family and the transformers version"
        )
    return found


@dataclass(frozen=True)
class Counts:
    """Trainable LoRA parameters of one preset on one model, split by component (every :data:`COMPONENTS` key).

    ``share`` is ``total_trainable / (base_params + total_trainable)``, as peft's ``print_trainable_parameters``.
    """

    family: str
    preset: str
    rank: int
    trainable: Mapping[str, int]
    modules: Mapping[str, int]
    total_trainable: int
    base_params: int
    share: float


def count_params(model: Any, family: str, preset: str, rank: int = 32) -> Counts:
    """Apply ``preset`` at ``rank`` with peft's ``get_peft_model`` to a copy of ``model`` and count what trains.

    ``model`` is left as it was (the adapters go on a deep copy), so build it on the ``meta`` device
    (:func:`build_meta_model`) or use a tiny one: copying a loaded full-size model would double its memory.
    """
    matched_modules(model, family, preset)  # clear error before peft's own "target modules not found"
    config = lora_config(family, preset, rank)
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer

    layout = LAYOUTS[family]
    base_params = sum(p.numel() for p in model.parameters())
    with warnings.catch_warnings():  # transformers' deprecation notices from inside peft are noise here
        warnings.simplefilter("ignore", FutureWarning)
        # low_cpu_mem_usage: the adapters are created on the base layers' device (meta: no memory, no init time)
        peft_model = get_peft_model(copy.deepcopy(model), config, low_cpu_mem_usage=True)
    prefix = "base_model.model."  # where peft puts the wrapped model
    trainable = dict.fromkeys(COMPONENTS, 0)
    modules = dict.fromkeys(COMPONENTS, 0)
    for name, param in peft_model.named_parameters():
        if param.requires_grad:
            trainable[layout.component(name.removeprefix(prefix))] += param.numel()
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer):
            modules[layout.component(name.removeprefix(prefix))] += 1
    total = sum(trainable.values())
    return Counts(
        family=family,
        preset=preset,
        rank=rank,
        trainable=trainable,
        modules=modules,
        total_trainable=total,
        base_params=base_params,
        share=total / (base_params + total),
    )


def format_counts(counts: Counts) -> str:
    """A small table: wrapped modules, trainable parameters and their share of base + LoRA per component."""
    whole = counts.base_params + counts.total_trainable
    lines = [
        f"LoRA preset {counts.preset!r} on {counts.family} at rank {counts.rank}: "
        f"{PRESET_DESCRIPTIONS.get(counts.preset, counts.preset)}",
        f"{'component':<10} {'modules':>8} {'trainable':>14} {'share':>9}",
    ]
    for component in COMPONENTS:
        lines.append(
            f"{component:<10} {counts.modules[component]:>8,} {counts.trainable[component]:>14,} "
            f"{counts.trainable[component] / whole:>9.4%}"
        )
    lines.append(f"{'total':<10} {sum(counts.modules.values()):>8,} {counts.total_trainable:>14,} {counts.share:>9.4%}")
    lines.append(f"base model parameters: {counts.base_params:,} (share = trainable / (base + trainable))")
    return "\n".join(lines)


def _config_from_folder(config_file: Path) -> Any:
    """The transformers config in ``config_file``, checked to be of a known family; :class:`UsageError` naming
    the file otherwise."""
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{config_file}: not a readable JSON config ({exc}); download it again") from exc
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type not in LAYOUTS:
        raise UsageError(
            f"{config_file}: model_type {model_type!r} has no LoRA presets; the families are {', '.join(FAMILIES)}"
        )
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(config_file.parent)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{config_file}: transformers cannot read this {model_type} config ({exc})") from exc


def build_meta_model(model: str | None = None) -> Any:
    """The model's architecture on the ``meta`` device (no weights are read, allocated or downloaded).

    ``None``: Llama 3.2 11B Vision (``MllamaConfig()`` defaults with the vision tower's ``image_size`` 560, the
    released checkpoint's). A local folder with ``config.json`` (or the path of a ``config.json``): that config.
    Anything else is a :class:`UsageError`: no hub access is assumed, so a hub ID must be downloaded first.
    """
    import torch
    import transformers

    if model is None:
        config = transformers.MllamaConfig(vision_config={"image_size": 560})
    else:
        path = Path(model)
        config_file = path / "config.json" if path.is_dir() else path
        if path.is_dir() and not config_file.is_file():
            raise UsageError(f"{path} has no config.json; pass a model folder holding the model's config.json")
        if not (config_file.is_file() and config_file.name == "config.json"):
            raise UsageError(
                f"--model {model!r} is not a local model folder with a config.json, and medbench does not reach "
                f"the Hugging Face hub here: download the model's config.json first (e.g. `hf download {model} "
                "config.json --local-dir DIR`) and pass --model DIR"
            )
        config = _config_from_folder(config_file)
    model_class = getattr(transformers, MODEL_CLASSES[family_of(config)])
    with torch.device("meta"):
        return model_class(config)


def main_count_params(preset: str, model: str | None, rank: int) -> int:
    """``medbench train count-params``: print :func:`format_counts` of ``preset`` at ``rank`` on ``model``'s
    architecture (see :func:`build_meta_model`); returns the exit code 0."""
    check_preset(preset)  # before the slow build
    if rank < 1:
        raise UsageError(f"--rank must be >= 1 (got {rank})")
    meta = build_meta_model(model)
    print(format_counts(count_params(meta, family_of(meta), preset, rank)))
    return 0
