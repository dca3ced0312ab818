"""Typed training configs: the paper's recipe as defaults, TOML files, and ``key=value`` overrides.

``TrainConfig.load("stage1")`` reads a shipped config (``training/configs/<name>.toml``) or a TOML file by path;
``overrides=["optim.lr=1e-4", "lora.rank=16"]`` change single fields (typed by the field: a wrong key or value is a
:class:`~medbench.errors.UsageError` naming it). ``resolved()`` is what the run card records.

The paper's numbers (LLaMA32-Med, §3.3 and Appendix B): LoRA rank 32 on both stages; stage 1 (ROCOv2 captions)
3 epochs at lr 2e-4, stage 2 (SLAKE + VQA-RAD + PathVQA) 3 epochs at lr 4e-5; AdamW, weight decay 0.01, cosine
schedule; images 512x512; text up to 1,024 tokens; 4-bit NF4 for QLoRA. **Not stated by the paper, chosen here
and recorded**: LoRA alpha 64 (2 x rank, the usual choice) and dropout 0.05; per-device batch 2 with 4 gradient
accumulation steps (an effective batch of 8, what one 48 GB A6000 holds for the 11B model at 512 px); warmup 3% of
the steps; gradient clipping at 1.0; seed 0.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from medbench.configfile import toml_module
from medbench.errors import UsageError

PRESET_NAMES = ("all-linear", "paper", "llm-only", "no-vision")


@dataclass
class LoraSettings:
    """Where LoRA goes and its shape (presets: :mod:`medbench.training.presets`)."""

    preset: str = "paper"
    rank: int = 32
    alpha: int = 64  # not in the paper: 2 x rank
    dropout: float = 0.05  # not in the paper


@dataclass
class DataSettings:
    """Which task plugins' train splits feed a stage, and how samples become text."""

    tasks: list[str] = field(default_factory=lambda: ["rocov2"])
    split: str = "train"
    data_dir: str | None = None  # None: $MEDBENCH_DATA or the pinned Hugging Face mirrors
    demo: bool = False  # the bundled demo set (CI, the debug config)
    # stage 2 mixes its tasks by concatenating every train sample and shuffling with the seed each epoch
    mixing: str = "concat-shuffle"
    limit: int | None = None  # first N samples per task (debugging)
    prompt: str = "role"  # role | generic: the same templates as evaluation (Table 3's "generic prompt")
    image_size: int = 512
    max_length: int = 1024


@dataclass
class OptimSettings:
    """Optimiser and schedule."""

    lr: float = 2e-4
    epochs: int = 3
    weight_decay: float = 0.01
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03  # not in the paper
    batch_size: int = 2  # per device; not in the paper
    grad_accum: int = 4  # not in the paper
    max_grad_norm: float = 1.0  # not in the paper
    seed: int = 0


@dataclass
class QuantSettings:
    """QLoRA: the frozen base in 4-bit NF4 with double quantisation and bf16 compute (bitsandbytes)."""

    enabled: bool = False
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "bfloat16"


@dataclass
class TrainConfig:
    """One training stage."""

    name: str = "stage1"
    stage: int = 1
    base: str = "meta-llama/Llama-3.2-11B-Vision-Instruct"
    # stage 2: "previous" continues the stage-1 adapter found at <output>/../stage1 (the paper's recipe), a path
    # continues that adapter, "none" starts a fresh one (Table 3's "w/o stage 1")
    init_adapter: str = "none"
    freeze_vision: bool = False  # Table 3's "w/o vision encoder FT" (the no-vision preset)
    gradient_checkpointing: bool = True
    checkpoint_every: int = 200  # optimiser steps between checkpoints
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    quant: QuantSettings = field(default_factory=QuantSettings)

    @classmethod
    def load(cls, source: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
        """A shipped config by name (``stage1``, ``stage2``, ``stage1-qlora``, ``stage2-qlora``, ``debug``) or a
        TOML file by path, then ``section.key=value`` overrides; validated."""
        text, where = _read(source)
        try:
            doc = toml_module().loads(text)
        except ValueError as exc:
            raise UsageError(f"{where}: not valid TOML ({exc})") from exc
        config = cls()
        _apply(config, doc, where)
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
            _set(config, key.strip(), _parse_value(value.strip()), f"override {item!r}")
        config.validate()
        return config

    def validate(self) -> None:
        """Refuse settings that cannot train (each message names the key)."""
        checks = [
            (self.stage in (1, 2), "stage must be 1 or 2"),
            (self.lora.preset in PRESET_NAMES, f"lora.preset must be one of {', '.join(PRESET_NAMES)}"),
            (self.lora.rank >= 1 and self.lora.alpha >= 1, "lora.rank and lora.alpha must be >= 1"),
            (0.0 <= self.lora.dropout < 1.0, "lora.dropout must be in [0, 1)"),
            (self.optim.lr > 0 and self.optim.epochs >= 1, "optim.lr must be > 0 and optim.epochs >= 1"),
            (self.optim.batch_size >= 1 and self.optim.grad_accum >= 1, "optim.batch_size/grad_accum must be >= 1"),
            (self.optim.scheduler in ("cosine", "linear", "constant"), "optim.scheduler: cosine, linear or constant"),
            (0.0 <= self.optim.warmup_ratio < 1.0, "optim.warmup_ratio must be in [0, 1)"),
            (self.data.prompt in ("role", "generic"), "data.prompt must be role or generic"),
            (self.data.mixing == "concat-shuffle", "data.mixing: only concat-shuffle is implemented"),
            (self.data.image_size >= 1 and self.data.max_length >= 16, "data.image_size/max_length too small"),
            (bool(self.data.tasks), "data.tasks must name at least one task"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (self.quant.quant_type in ("nf4", "fp4"), "quant.quant_type must be nf4 or fp4"),
        ]
        failed = [message for ok, message in checks if not ok]
        if failed:
            raise UsageError(f"training config {self.name!r}: " + "; ".join(failed))

    def resolved(self) -> dict[str, Any]:
        """Every setting, as the run card records it."""
        return dataclasses.asdict(self)

    def sha256(self) -> str:
        from medbench.provenance import stable_hash

        return stable_hash(self.resolved())


def shipped() -> list[str]:
    """The names of the configs shipped with medbench (``debug`` is the two-stage tiny run of ``medbench train
    debug``; the others are one stage each)."""
    folder = resources.files("medbench.training").joinpath("configs")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read(source: str | Path) -> tuple[str, str]:
    path = Path(source)
    if path.suffix == ".toml" or path.exists():
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise UsageError(f"{path}: cannot be read ({exc})") from exc
    name = str(source)
    if name == "debug":  # both stages of the tiny CPU run (medbench.training.recipe.debug), not one stage's config
        raise UsageError("the debug config holds two stages: run it with `medbench train debug [--output DIR]`")
    if name not in shipped():
        raise UsageError(
            f"no training config {name!r}: shipped configs are {', '.join(shipped())}, or give a .toml path"
        )
    return resources.files("medbench.training").joinpath("configs", f"{name}.toml").read_text(encoding="utf-8"), name


def _apply(target: Any, doc: dict[str, Any], where: str, prefix: str = "") -> None:
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            section = getattr(target, key, None)
            if section is None or not dataclasses.is_dataclass(section):
                raise UsageError(f"{where}: unknown section [{name}]")
            _apply(section, value, where, f"{name}.")
        else:
            _set(target, key, value, where, full=name)


def _set(target: Any, key: str, value: Any, where: str, *, full: str | None = None) -> None:
    """Set ``key`` (dotted for nested sections) with the field's type checked."""
    head, _, rest = key.partition(".")
    if rest:
        section = getattr(target, head, None)
        if section is None or not dataclasses.is_dataclass(section):
            raise UsageError(f"{where}: unknown setting {key!r}")
        _set(section, rest, value, where, full=full or key)
        return
    fields = {f.name: f for f in dataclasses.fields(target)}
    name = full or key
    if key not in fields or dataclasses.is_dataclass(getattr(target, key)):
        raise UsageError(f"{where}: unknown setting {name!r}; known: {', '.join(fields)}")
    setattr(target, key, _typed(fields[key], value, where, name))


def _typed(spec: dataclasses.Field[Any], value: Any, where: str, name: str) -> Any:
    kind = str(spec.type)
    optional = "None" in kind
    if value is None or (optional and value == "none"):
        if optional:
            return None
        raise UsageError(f"{where}: {name} cannot be empty")
    wanted: tuple[type, ...]
    if kind.startswith("list"):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{where}: {name} must be a list of names, got {value!r}")
        return list(value)
    if kind.startswith("bool"):
        wanted = (bool,)
    elif kind.startswith("int"):
        wanted = (int,)
    elif kind.startswith("float"):
        wanted = (int, float)
    else:
        wanted = (str,)
    if isinstance(value, bool) and bool not in wanted:
        raise UsageError(f"{where}: {name} must be {kind}, got {value!r}")
    if not isinstance(value, wanted):
        raise UsageError(f"{where}: {name} must be {kind}, got {value!r}")
    return float(value) if wanted == (int, float) else value


def _parse_value(text: str) -> Any:
    """An override's value: JSON (numbers, true/false, quoted strings, lists) or else the bare text."""
    try:
        return json.loads(text)
    except ValueError:
        return text
