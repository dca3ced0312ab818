"""What a run is asked to do: :class:`RunConfig`, the one place its options and their allowed values live."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medbench.errors import UsageError
from medbench.provenance import redact_urls, stable_hash
from medbench.stats import DEFAULT_RESAMPLES

DEFAULT_MODELS = ("prior", "yes")


@dataclass
class RunConfig:
    """What a run is asked to do: the same settings as ``medbench run``'s flags and a config file's keys."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    tasks: list[str] = field(default_factory=list)
    output: Path = Path("runs")
    data_dir: Path | None = None
    demo: bool = False
    split: str = "test"
    limit: int | None = None
    closed_rule: str = "yesno"
    protocol: str = "strict"
    prompt: str = "role"
    image_size: int = 512
    full: bool = False
    seed: int = 0
    resamples: int = DEFAULT_RESAMPLES
    batch_size: int | None = None
    verify_images: bool = True
    bertscore_model: str | None = None
    bertscore_layers: int | None = None
    cache: Path | None = None  # None: default_cache_path()
    no_cache: bool = False
    model_args: dict[str, dict[str, str]] = field(default_factory=dict)
    judge: str | None = None  # --judge: a preset (deepseek), another name with judge_base_url + judge_model, hf:<path>
    judge_base_url: str | None = None
    judge_model: str | None = None
    judge_api_key_env: str | None = None  # the variable's name; the key itself is read from the environment only
    judge_concurrency: int = 32  # the most judge requests in flight (AIMD: halved on HTTP 429, raised again)
    judge_max_retries: int = 6
    judge_timeout: float = 600.0
    config_file: Path | None = None  # --config FILE the settings came from (flags override it)

    def validate(self) -> None:
        """Refuse option values that would crash later or quietly mean something else (exit 2, naming the option)."""
        for name, (least, meaning) in MINIMUMS.items():
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                option = "--" + name.replace("_", "-")
                raise UsageError(f"{option} must be a whole number >= {least} ({meaning}), not {value!r}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["output"] = str(self.output)
        data["data_dir"] = str(self.data_dir) if self.data_dir else None
        data["cache"] = str(self.cache) if self.cache else None
        data["config_file"] = str(self.config_file) if self.config_file else None
        return redact_urls(data)  # a URL may carry credentials (user:pass@host, ?api_key=...)

    def resolved(self) -> dict[str, dict[str, Any]]:
        """The settings split in two: ``numbers`` (what can change a result: hashed into :meth:`numbers_sha256`) and
        ``runtime`` (where files go, how fast, how patient: never part of any hash)."""
        data = self.to_json()
        return {
            "numbers": {k: data[k] for k in NUMBER_SETTINGS},
            "runtime": {k: v for k, v in data.items() if k not in NUMBER_SETTINGS},
        }

    def numbers_sha256(self) -> str:
        """sha256 of the settings that can change a number (not the output path, cache, batch size, ...)."""
        return stable_hash(self.resolved()["numbers"])


#: Whole-number settings and their least allowed value: checked by :meth:`RunConfig.validate` (the Python API and
#: config files) and by the command line's argument types, from this one table.
MINIMUMS: dict[str, tuple[int, str]] = {
    "resamples": (1, "bootstrap resamples for the 95% CIs"),
    "seed": (0, "the bootstrap seed"),
    "image_size": (0, "N x N pixels, or 0 to keep the original size"),
    "limit": (1, "samples per task"),
    "batch_size": (1, "requests per model call, or auto"),
    "bertscore_layers": (1, "the BERTScore model's layer"),
    "judge_concurrency": (1, "judge requests in flight"),
    "judge_max_retries": (0, "retries per judge request"),
}

#: RunConfig fields that can change a reported number. The rest (output, cache, batch size, image verification,
#: headline protocol — every protocol is computed —, judge concurrency/retries/timeout, key variable) cannot.
NUMBER_SETTINGS = (
    "models",
    "tasks",
    "data_dir",
    "demo",
    "split",
    "limit",
    "closed_rule",
    "prompt",
    "image_size",
    "full",
    "seed",
    "resamples",
    "bertscore_model",
    "bertscore_layers",
    "model_args",
    "judge",
    "judge_base_url",
    "judge_model",
)
