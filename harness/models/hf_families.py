"""The Hugging Face image-text-to-text checkpoints medbench evaluates: which families, where a checkpoint comes
from (a folder, the local hub cache, or a download), whether it is complete, and what identifies it (content
digests). What runs them (device, batches, processor, chat) is :mod:`medbench.models.hf_runtime`, which also
re-exports the public functions here that other code needs (:func:`resolve`, :func:`weights_digest`,
:func:`adapter_digest`, :func:`generation_config`).

Everything heavy (transformers) is imported inside functions. The four families evaluated in the paper's
setting are ``mllama`` (LLaMA 3.2 Vision, LLaMA32-Med), ``qwen2_5_vl``, ``gemma3`` and ``llava``; any other
``model_type`` that ``AutoModelForImageTextToText`` can load runs through the same generic path.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from medbench import filehash
from medbench.errors import UsageError

log = logging.getLogger(__name__)

#: model_type -> what the family is; the families tested on tiny models in medbench's own test-suite.
FAMILIES: dict[str, str] = {
    "mllama": "LLaMA 3.2 Vision (MllamaForConditionalGeneration)",
    "qwen2_5_vl": "Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration)",
    "gemma3": "Gemma 3 (Gemma3ForConditionalGeneration)",
    "llava": "LLaVA-1.5 (LlavaForConditionalGeneration)",
}

#: What a hub download fetches: the transformers checkpoint, not the original/ consolidated copies.
_HUB_IGNORE = ["original/*", "*.pth", "*.gguf", "*.onnx", "*.msgpack", "*.h5", "*.ckpt"]

#: What is not part of the checkpoint transformers loads from a folder, so not in its fingerprint: the README,
#: hidden files and folders (.git, .gitattributes, the .cache/ of `hf download --local-dir`), Meta's original/
#: consolidated copy, and what a Trainer leaves in its output_dir besides the final model (checkpoint-N/
#: folders with optimizer state, runs/ logs). Every other file, in any subfolder, is hashed by content.
CHECKPOINT_EXCLUDE = ("readme.md", ".*", "*/.*", "original", "checkpoint-*", "runs")

#: The weight files ``from_pretrained`` looks for in a folder, in its order of preference; an index names shards.
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def _digest(folder: Path, what: str) -> str:
    try:
        return filehash.tree_digest(folder, exclude=CHECKPOINT_EXCLUDE)
    except OSError as exc:
        raise UsageError(
            f"{what} {folder}: cannot read {exc.filename or 'a file'} to fingerprint it ({exc.strerror or exc}); "
            "a broken link in a Hugging Face cache snapshot means an incomplete download: download it again"
        ) from exc


def weights_digest(model_dir: Path) -> str:
    """BLAKE3 (:data:`medbench.filehash.ALGORITHM`) over the content of every file of the checkpoint (weights,
    config, generation config, tokenizer, processor, chat template: all change outputs), subfolders included,
    less :data:`CHECKPOINT_EXCLUDE`. Unchanged files are served from the stat-keyed digest cache, so only new or
    rewritten files are read. Hub snapshots are additionally pinned by their commit hash."""
    return _digest(model_dir, "model")


def adapter_digest(adapter_dir: Path) -> str:
    """BLAKE3 over the content of every adapter file (config and weights), as :func:`weights_digest`."""
    return _digest(adapter_dir, "adapter")


def check_weights(model_dir: Path) -> None:
    """A :class:`UsageError` unless ``model_dir`` holds weights ``from_pretrained`` can load: ``model.safetensors``
    or ``pytorch_model.bin``, or an index whose every shard is present (an interrupted download or save leaves
    a config without them)."""
    present = [name for name in _WEIGHT_FILES if (model_dir / name).is_file()]
    if not present:
        inside = sorted(p.name for p in model_dir.iterdir())
        saved = sorted(p.name for p in model_dir.glob("checkpoint-*") if any(p.glob("*.safetensors")))
        hint = f"; a Trainer's checkpoints are in subfolders: pass one of {', '.join(saved)}" if saved else ""
        raise UsageError(
            f"{model_dir} has a config.json but no weights: expected {' or '.join(_WEIGHT_FILES[::2])} (or a sharded "
            f"checkpoint's {_WEIGHT_FILES[1]} with its shards); the folder holds {', '.join(inside) or 'nothing'}"
            f"{hint}. Was the download or save_pretrained interrupted?"
        )
    index = present[0]  # what from_pretrained takes, in its order of preference
    if not index.endswith(".index.json"):
        return
    path = model_dir / index
    try:
        shards = set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path} is not a sharded-checkpoint index (no readable weight_map): {exc}") from exc
    missing = sorted(str(name) for name in shards if not (model_dir / str(name)).is_file())
    if missing:
        raise UsageError(
            f"{model_dir}: {len(missing)} of the {len(shards)} weight shards named in {index} are missing "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}). Was the download interrupted?"
        )


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """``adapter_config.json`` of a PEFT adapter folder, checked to come with adapter weights."""
    path = adapter_dir / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"adapter {adapter_dir}: cannot read {path.name} ({exc})") from exc
    if not isinstance(config, dict):
        raise UsageError(f"{path} is not a PEFT adapter config (a JSON object)")
    if not any((adapter_dir / name).is_file() for name in _ADAPTER_WEIGHT_FILES):
        raise UsageError(
            f"adapter {adapter_dir} has an adapter_config.json but no weights ({' or '.join(_ADAPTER_WEIGHT_FILES)}); "
            "was the adapter saved with save_pretrained?"
        )
    return config


def architecture(model_type: str) -> str:
    """The class ``AutoModelForImageTextToText`` builds for ``model_type`` (known without loading it)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    names = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type]
    return names if isinstance(names, str) else str(names[0])


def generation_config(model_dir: Path) -> Any:
    """The checkpoint's ``GenerationConfig`` as ``from_pretrained`` gives it to the model (``generation_config.json``,
    else derived from ``config.json``), read without loading the weights."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_dir)
    except OSError:  # no generation_config.json: the model derives one from its config
        return GenerationConfig.from_model_config(AutoConfig.from_pretrained(model_dir))
    except ValueError as exc:
        raise UsageError(f"{model_dir}: generation_config.json is invalid ({first_line(exc)})") from exc


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~", "\\")) or os.path.isabs(ref) or bool(re.match(r"[A-Za-z]:", ref))


def resolve(ref: str, revision: str | None, *, what: str, marker: str) -> tuple[Path, str | None]:
    """A local directory for ``ref`` (a path, or a hub id served from the local cache or downloaded when the hub
    is reachable) and the hub commit it came from (None for local paths). ``marker`` must exist in it."""
    local = Path(ref).expanduser()
    if local.is_dir() or _looks_like_path(ref):
        if not (local / marker).is_file():
            raise UsageError(f"{what} {ref}: no {marker} in {local} (expected a Hugging Face {what} directory)")
        return local.resolve(), None
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", ref):
        raise UsageError(f"{what} {ref!r} is neither an existing directory nor a Hugging Face hub id (org/name)")
    from huggingface_hub import snapshot_download

    from medbench.data.hub import hub_offline_reason

    cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now: huggingface_hub reads it once at import
    kwargs: dict[str, Any] = {"revision": revision, "cache_dir": cache_dir, "ignore_patterns": _HUB_IGNORE}
    try:
        path = Path(snapshot_download(ref, local_files_only=True, **kwargs))
        weights = what != "model" or any(p.name.endswith((".safetensors", ".bin")) for p in path.iterdir())
        if (path / marker).is_file() and weights:  # not just a config fetched on its own
            return path, path.name  # snapshots/<commit>
    except Exception:  # not cached: huggingface_hub raises several types for this
        pass
    at = f" at revision {revision}" if revision else ""
    offline = hub_offline_reason()
    if offline:
        raise UsageError(
            f"{what} {ref}{at} is not in the local Hugging Face cache (nor a local folder), and the hub cannot be "
            f"reached ({offline}). "
            f"On a connected machine run `huggingface-cli download {ref}` (or `hf download {ref}`) and copy the "
            "cache here (HF_HOME / HF_HUB_CACHE), or download it to a folder and pass the folder: `hf:/path/to/it`."
        )
    log.warning("downloading %s %s%s from the Hugging Face hub", what, ref, at)
    try:
        path = Path(snapshot_download(ref, **kwargs))
    except Exception as exc:  # gated, missing, network: all mean "not usable here"
        raise UsageError(
            f"cannot download {what} {ref}{at}: {first_line(exc)}. Gated models (LLaMA, Gemma) need "
            "their licence accepted on huggingface.co and `huggingface-cli login`; or pass a local folder."
        ) from exc
    if not (path / marker).is_file():
        raise UsageError(f"{what} {ref}{at} has no {marker}; is it a Hugging Face {what}?")
    return path, path.name


def read_model_type(model_dir: Path) -> str:
    """``model_type`` from ``config.json`` (a :class:`UsageError` if the directory is not a model)."""
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{model_dir} is not a Hugging Face model directory: cannot read {path.name} ({exc})") from exc
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise UsageError(f"{path} has no model_type; is this a Hugging Face transformers checkpoint?")
    return model_type


def check_supported(model_dir: Path, model_type: str) -> None:
    """A :class:`UsageError` unless transformers can load ``model_type`` as an image-text-to-text model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        import transformers

        raise UsageError(
            f"{model_dir}: model_type {model_type!r} is not an image-text-to-text model that transformers "
            f"{transformers.__version__} can load (AutoModelForImageTextToText). medbench is tested with "
            f"{', '.join(FAMILIES)}; other vision-language types work if that class loads them "
            "(a newer transformers may add yours)."
        )


def adapter_base_type(adapter_config: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(base model id/path, its model_type)`` recorded in a PEFT ``adapter_config.json``, where findable.

    The type is read from the base's ``config.json``: a local directory, or the local Hugging Face cache.
    """
    base = adapter_config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        return None, None
    local = Path(base).expanduser()
    if (local / "config.json").is_file():
        try:
            return base, read_model_type(local)
        except UsageError:
            return base, None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(base, "config.json", revision=adapter_config.get("revision"))
    except Exception:  # not a valid repo id, or no cache
        cached = None
    if isinstance(cached, str):
        try:
            return base, read_model_type(Path(cached).parent)
        except UsageError:
            pass
    return base, None


def first_line(exc: BaseException) -> str:
    """``exc`` in one line for a message: its type and the first line of its text (at most 300 characters)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"
