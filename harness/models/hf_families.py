"""Per-family quirks of the Hugging Face image-text-to-text models medbench evaluates.

Everything heavy (transformers) is imported inside functions. The four families evaluated in the paper's
setting are ``mllama`` (LLaMA 3.2 Vision, LLaMA32-Med), ``qwen2_5_vl``, ``gemma3`` and ``llava``; any other
``model_type`` that ``AutoModelForImageTextToText`` can load runs through the same generic path.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

from medbench.errors import UsageError

log = logging.getLogger(__name__)

#: model_type -> what the family is; the families tested on tiny models in medbench's own test-suite.
FAMILIES: dict[str, str] = {
    "mllama": "LLaMA 3.2 Vision (MllamaForConditionalGeneration)",
    "qwen2_5_vl": "Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration)",
    "gemma3": "Gemma 3 (Gemma3ForConditionalGeneration)",
    "llava": "LLaVA-1.5 (LlavaForConditionalGeneration)",
}

#: Families whose stock processor needs a video processor, which transformers cannot build without torchvision.
_QWEN_PROCESSORS = {"qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen2_vl": "Qwen2VLProcessor"}


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


@cache
def _qwen_image_only_class(base_name: str) -> type:
    import transformers
    from transformers import ProcessorMixin

    base: type = getattr(transformers, base_name)

    def __init__(self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kw: Any):
        # What the stock __init__ does, minus the video processor (a torchvision-only dummy class otherwise).
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kw)

    # ProcessorMixin derives its sub-processors from the __init__ signature: image processor + tokenizer only.
    return type(base_name.replace("Processor", "ImageOnlyProcessor"), (base,), {"__init__": __init__})


def load_qwen_image_only_class(model_type: str = "qwen2_5_vl") -> type:
    """The stock Qwen2(.5)-VL processor without its video processor: images and text work without torchvision."""
    return _qwen_image_only_class(_QWEN_PROCESSORS[model_type])


def load_processor(model_dir: Path, model_type: str) -> Any:
    """The model's own processor (chat template, tokenizer, image processor), set up for left-padded batches."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    if model_type in _QWEN_PROCESSORS and not is_torchvision_available():
        # The stock class cannot even be instantiated without torchvision; images need no video processor.
        processor = load_qwen_image_only_class(model_type).from_pretrained(model_dir)
    else:
        try:
            processor = AutoProcessor.from_pretrained(model_dir)
        except Exception as exc:
            raise UsageError(f"cannot load the processor of {model_dir} ({model_type}): {_first_line(exc)}") from exc
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or not hasattr(processor, "image_processor"):
        raise UsageError(
            f"{model_dir} ({model_type}) has no image+text processor (AutoProcessor gave {type(processor).__name__}); "
            "medbench needs an image-text-to-text model"
        )
    if not getattr(processor, "chat_template", None):
        raise UsageError(f"{model_dir} has no chat template (chat_template.jinja / chat_template.json)")
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return processor


def conversation(image: Any, text: str) -> list[dict[str, Any]]:
    """One user turn: the image, then the prompt text (the layout every family's template expects)."""
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


def batch_inputs(processor: Any, images: list[Any], texts: list[str]) -> Any:
    """Tokenised, left-padded model inputs for a batch, built by the processor's own chat template.

    ``apply_chat_template`` nests images per sample (what Mllama and Gemma3 need in batches), and skips the
    tokenizer's own BOS when the template already writes it (LLaMA, Gemma), so no sequence gets two.
    """
    return processor.apply_chat_template(
        [conversation(image, text) for image, text in zip(images, texts, strict=True)],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        padding=True,
        return_tensors="pt",
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"
