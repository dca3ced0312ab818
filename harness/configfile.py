"""``medbench run --config eval.toml``: the run's settings in a file, with the same keys as the flags.

Keys are the long flag names, with dashes or underscores (``closed-rule`` or ``closed_rule``); flags given on the
command line override the file. ``models`` and ``tasks`` take a list or a comma-separated string, and model
options live in tables (``[model_args."hf:/ckpt"] adapter = "/lora"``, like ``--model-arg``). Every key and value
is checked when the file is read, so a typo stops the run at once with the file, the key and what is allowed.

    models = ["llama32med", "qwen25vl"]
    tasks = "all"
    data_dir = "/data/medvqa"
    closed_rule = "answer_type"
    resamples = 2000

    [model_args.llama32med]
    adapter = "/adapters/llama32med"
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medbench.errors import UsageError

#: key -> (type the file may hold, what to say when it does not)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "models": ((list, str), "a list of model names or a comma-separated string"),
    "tasks": ((list, str), "a list of task names, a comma-separated string, or 'all'"),
    "data_dir": ((str,), "a folder path"),
    "demo": ((bool,), "true or false"),
    "split": ((str,), "a split name such as 'test'"),
    "limit": ((int,), "a whole number >= 1"),
    "output": ((str,), "a folder path"),
    "closed_rule": ((str,), "'yesno' or 'answer_type'"),
    "prompt": ((str,), "'role' or 'generic'"),
    "image_size": ((int,), "a whole number >= 0"),
    "full": ((bool,), "true or false"),
    "protocol": ((str,), "a protocol name"),
    "seed": ((int,), "a whole number >= 0"),
    "resamples": ((int,), "a whole number >= 1"),
    "batch_size": ((int, str), "a whole number >= 1 or 'auto'"),
    "cache": ((str,), "a file path"),
    "no_cache": ((bool,), "true or false"),
    "no_verify_images": ((bool,), "true or false"),
    "bertscore_model": ((str,), "a model id or path"),
    "bertscore_layers": ((int,), "a whole number >= 1"),
    "model_args": ((dict,), "tables of options per model: [model_args.NAME] KEY = VALUE"),
    "judge": ((str,), "a judge name"),
    "judge_base_url": ((str,), "a URL"),
    "judge_model": ((str,), "a model name"),
    "judge_api_key_env": ((str,), "the NAME of an environment variable (never the key itself)"),
    "judge_concurrency": ((int,), "a whole number >= 1"),
    "judge_max_retries": ((int,), "a whole number >= 0"),
    "judge_timeout": ((int, float), "seconds > 0"),
}
KEYS = tuple(_TYPES)
_CHOICES = {"closed_rule": ("yesno", "answer_type"), "prompt": ("role", "generic")}


def toml_module() -> Any:
    """The TOML reader: the standard library's ``tomllib`` (3.11+), else ``tomli`` (the same API)."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # pragma: no cover - Python 3.10

    return tomli


def _toml(path: Path) -> dict[str, Any]:
    tomllib = toml_module()
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot be read ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from exc


def read_config(path: Path) -> dict[str, Any]:
    """The file's settings as ``{key: value}`` with underscore keys, every key and type checked, and model and
    task names checked against the registries. Raises :class:`UsageError` naming the file and the key."""
    data = _toml(path)
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key not in _TYPES:
            raise UsageError(f"--config {path}: unknown key {raw_key!r}; allowed keys: {', '.join(KEYS)}")
        types, meaning = _TYPES[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise UsageError(f"--config {path}: {raw_key} must be {meaning}, not {value!r}")
        out[key] = value
    for key, allowed in _CHOICES.items():
        if key in out and out[key] not in allowed:
            raise UsageError(f"--config {path}: {key} must be one of {', '.join(allowed)}, not {out[key]!r}")
    for key in ("models", "tasks"):
        if isinstance(out.get(key), list):
            if not all(isinstance(item, str) for item in out[key]):
                raise UsageError(f"--config {path}: {key} must be {_TYPES[key][1]}, not {out[key]!r}")
            out[key] = ",".join(out[key])
    _check_names(path, out)
    if "model_args" in out:
        out["model_args"] = _model_args(path, out["model_args"])
    return out


def _check_names(path: Path, settings: Mapping[str, Any]) -> None:
    from medbench.registry import check_model_name, resolve_task_names

    try:
        for name in str(settings.get("models", "")).split(","):
            if name.strip():
                check_model_name(name.strip())
    except UsageError as exc:
        raise UsageError(f"--config {path}: models: {exc}") from None
    try:
        if settings.get("tasks"):
            resolve_task_names(str(settings["tasks"]))
    except UsageError as exc:
        raise UsageError(f"--config {path}: tasks: {exc}") from None


def _model_args(path: Path, tables: Mapping[str, Any]) -> list[str]:
    """``[model_args.NAME]`` tables as ``--model-arg NAME.KEY=VALUE`` items."""
    items = []
    for model, options in tables.items():
        if not isinstance(options, dict):
            raise UsageError(f"--config {path}: model_args.{model} must be a table of KEY = VALUE options")
        for key, value in options.items():
            if isinstance(value, (dict, list)):
                raise UsageError(f"--config {path}: model_args.{model}.{key} must be a string, number or boolean")
            items.append(f"{model}.{key}={str(value).lower() if isinstance(value, bool) else value}")
    return items
