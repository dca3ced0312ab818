"""The runtime medbench's local transformers models share: the Hugging Face image-text-to-text adapter
(:mod:`medbench.models.hf`), the local LLM judge (:mod:`medbench.judges.local`) and the training recipe.

* Where and in what precision: :func:`check_device` and :func:`check_dtype` (option values),
  :func:`device_and_dtype` (``auto``: the GPU when there is one, each torchrun rank its own; bf16 on CUDA, or
  fp16 where the GPU has no bf16; fp32 elsewhere), :func:`device_map` and :func:`dtype_name`.
* Out of memory: :func:`is_oom`, :func:`run_in_batches` (batches halved on out-of-memory) and
  :func:`release_memory`.
* Decoding: :func:`greedy_generation_config` (greedy whatever the checkpoint asks for).
* Inputs: :func:`load_processor`, :func:`left_padded`, :func:`conversation` (the chat every family gets) and
  :func:`batch_inputs`.
* Checkpoints, defined in :mod:`medbench.models.hf_families` and part of this API: :func:`resolve` (a folder, the
  local hub cache, or a download), :func:`weights_digest` and :func:`adapter_digest` (content fingerprints),
  :func:`generation_config`, :func:`first_line`.

torch and transformers are imported inside the functions that need them: importing this module is cheap.
"""

from __future__ import annotations

import gc
import logging
import os
import re
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from medbench.errors import UsageError
from medbench.models.hf_families import adapter_digest, first_line, generation_config, resolve, weights_digest

__all__ = [
    "DTYPES",
    "adapter_digest",
    "batch_inputs",
    "check_device",
    "check_dtype",
    "conversation",
    "device_and_dtype",
    "device_map",
    "dtype_name",
    "first_line",
    "generation_config",
    "greedy_generation_config",
    "is_oom",
    "left_padded",
    "load_processor",
    "load_qwen_image_only_class",
    "positive_int",
    "release_memory",
    "resolve",
    "run_in_batches",
    "weights_digest",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: The ``dtype`` option's spellings -> torch dtype names (``auto`` is :func:`device_and_dtype`'s choice).
DTYPES: dict[str, str] = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}
DTYPES |= {"half": "float16", "fp32": "float32", "float32": "float32", "float": "float32"}

#: Families whose stock processor needs a video processor, which transformers cannot build without torchvision.
_QWEN_PROCESSORS = {"qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen2_vl": "Qwen2VLProcessor"}


# -- where and in what precision ----------------------------------------------------------------------------------
def positive_int(name: str, key: str, value: Any) -> int:
    """``value`` as an integer >= 1, else a :class:`UsageError` naming model ``name``'s option ``key``."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise UsageError(f"model {name}: {key} must be a positive integer, got {value!r}")
    return number


def check_dtype(name: str, value: Any) -> str:
    """The torch dtype name a ``dtype`` option asks for (any spelling in :data:`DTYPES`), or ``"auto"`` when it is
    auto or unset; a :class:`UsageError` naming model ``name`` otherwise."""
    dtype = str(value or "auto").lower()
    if dtype != "auto" and dtype not in DTYPES:
        raise UsageError(f"model {name}: dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES.get(dtype, "auto")


def check_device(name: str, value: Any) -> str:
    """A ``device`` option (auto, cpu, mps, cuda or cuda:N; unset is auto), or a :class:`UsageError`."""
    device = str(value or "auto")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise UsageError(f"model {name}: device must be auto, cpu, mps, cuda or cuda:N; got {device!r}")
    return device


def device_and_dtype(device: str = "auto", dtype: str = "auto") -> tuple[Any, str]:
    """``(torch dtype, device)`` for checked :func:`check_device` / :func:`check_dtype` values.

    ``auto`` device: CUDA, else MPS, else the CPU. Plain ``cuda`` is this process's GPU: ``LOCAL_RANK`` under
    torchrun / accelerate (each rank its own), else the current device. ``auto`` dtype: bf16 on CUDA (fp16 on GPUs
    without bf16), fp32 elsewhere (CPU bf16 matmuls are slow and change the numbers).
    """
    import torch

    if device == "auto":
        mps = getattr(torch.backends, "mps", None)
        device = "cuda" if torch.cuda.is_available() else "mps" if mps and mps.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{os.environ.get('LOCAL_RANK') or torch.cuda.current_device()}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {device} asked for, but torch sees no CUDA GPU (torch {torch.__version__})")
    if dtype == "auto":
        dtype = "float32"
        if device.startswith("cuda"):
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return getattr(torch, dtype), device


#: 4-bit weight types bitsandbytes offers (``quant`` of the ``hf:`` adapter, ``quant.quant_type`` of training).
QUANT_TYPES = ("nf4", "fp4")


def four_bit(quant_type: str = "nf4", double_quant: bool = True, compute_dtype: Any = None) -> Any:
    """transformers' ``BitsAndBytesConfig`` for a 4-bit base: ``quant_type`` weights, double quantisation,
    ``compute_dtype`` (default bf16) matmuls — QLoRA's base, in training and in evaluation alike."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16,
    )


def load_model(
    path: Path,
    *,
    label: str,
    model_type: str,
    dtype: Any,
    device: str,
    quantization: Any = None,
    oom_hint: str = "use a larger GPU",
) -> Any:
    """``AutoModelForImageTextToText.from_pretrained(path)`` on ``device`` in ``dtype`` (4-bit with
    ``quantization``: a :func:`four_bit` config): the one loader of the ``hf:`` adapter and the training recipe.
    What can go wrong is a :class:`UsageError` starting with ``label``: a model type transformers cannot load as
    image-text-to-text, unreadable weight files, a missing quantisation library, or out of memory (``oom_hint``
    says what to do)."""
    from transformers import AutoModelForImageTextToText

    from medbench.models.hf_families import FAMILIES

    kwargs: dict[str, Any] = {"dtype": dtype, "device_map": device_map(device)}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    try:
        return AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except (ValueError, KeyError) as exc:
        raise UsageError(
            f"{label}: model_type {model_type!r} cannot be loaded as an image-text-to-text model by transformers "
            f"(AutoModelForImageTextToText): {first_line(exc)}. medbench is tested with {', '.join(FAMILIES)}; "
            "newer types may need a newer transformers."
        ) from exc
    except OSError as exc:  # unreadable or truncated weight files (checked present beforehand)
        raise UsageError(f"{label}: cannot load the weights in {path}: {first_line(exc)}") from exc
    except ImportError as exc:  # bitsandbytes (4-bit), or another optional library the checkpoint needs
        raise UsageError(f"{label}: {first_line(exc)} (4-bit needs bitsandbytes: pip install 'medbench[hf]')") from exc
    except Exception as exc:
        if not is_oom(exc):
            raise
        bits = " 4-bit" if quantization is not None else ""
        raise UsageError(
            f"{label}: not enough memory on {device} to load the model in {dtype_name(dtype)}{bits}; {oom_hint}"
        ) from exc


def device_map(device: str) -> dict[str, str] | None:
    """``from_pretrained``'s ``device_map`` for ``device``: None on the CPU (its default), else all on that device."""
    return None if device == "cpu" else {"": device}


def dtype_name(dtype: Any) -> str:
    """A torch dtype as recorded in run files: ``bfloat16``, not ``torch.bfloat16``."""
    return str(dtype).replace("torch.", "")


# -- out of memory ------------------------------------------------------------------------------------------------
def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator out-of-memory error (CUDA's own class, or the RuntimeError other
    backends and older torch raise)."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def release_memory() -> None:
    """Free the memory of tensors nothing uses any more: collect first (a model's modules, and a failed batch's
    traceback, are reference cycles that would otherwise wait for a later collection), then hand the CUDA
    allocator's cached blocks back."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_in_batches(
    items: Sequence[T],
    run: Callable[[list[T]], Sequence[R]],
    batch_size: int,
    *,
    label: str,
    on_failure: Callable[[list[T], Exception], Sequence[R]] | None = None,
    ahead: Callable[[list[T]], None] | None = None,
    grow: Callable[[int, int], int] | None = None,
) -> tuple[list[R], int]:
    """``run`` over consecutive batches of at most ``batch_size`` items; ``(results in item order, the batch size
    reached)``; pass the size back on the next call, so that a size found too big is not tried again.

    A batch that runs out of memory (:func:`is_oom`) is freed (:func:`release_memory`) and retried at half its
    size, with a warning naming ``label``; the smaller size holds for the rest. A batch that fails otherwise, or
    runs out of memory with a single item, is given to ``on_failure``, whose results stand for the batch's; without
    ``on_failure`` the exception propagates.

    ``ahead(next_batch)`` is called before each batch runs with the batch expected after it (so its inputs can be
    prepared in the background; a guess the halving makes wrong is simply not used); ``grow(size, done)`` gives the
    size after a batch of ``done`` items succeeded at ``size`` (default: unchanged).
    """
    results: list[R] = []
    size, start = batch_size, 0
    while start < len(items):
        chunk = list(items[start : start + size])
        if ahead is not None and start + len(chunk) < len(items):
            ahead(list(items[start + len(chunk) : start + len(chunk) + size]))
        retry = False
        try:
            outputs = run(chunk)
        except Exception as exc:
            if is_oom(exc) and len(chunk) > 1:
                retry = True  # freed below, outside this block: the traceback here still holds the batch's tensors
            elif on_failure is None:
                raise
            else:
                outputs = on_failure(chunk, exc)
        if retry:
            release_memory()
            size = max(1, len(chunk) // 2)
            log.warning("%s: out of memory at batch size %d; retrying at %d", label, len(chunk), size)
            continue
        if len(outputs) != len(chunk):  # a bug in ``run``: results would be silently misaligned otherwise
            raise ValueError(f"{label}: a batch of {len(chunk)} gave {len(outputs)} results")
        results.extend(outputs)
        start += len(chunk)
        if grow is not None:
            size = max(1, grow(size, len(chunk)))
    return results, size


# -- decoding -----------------------------------------------------------------------------------------------------
def greedy_generation_config(source: Any, tokenizer: Any, *, pad_token_id: int | None = None, **settings: Any) -> Any:
    """A greedy ``GenerationConfig`` (``do_sample=False, num_beams=1``) keeping only the token ids of the
    checkpoint's own config ``source``: whatever it asks for (LLaMA 3.2 Vision samples at T=0.6, Qwen has a
    repetition penalty) is left out, so no sampling flag is merged in or warned about.

    End and padding ids fall back to ``tokenizer``'s where ``source`` has none; ``pad_token_id`` (the id the
    batches are padded with) overrides the padding id. ``settings``: further fields, e.g. ``max_new_tokens``.
    """
    from transformers import GenerationConfig

    pad = pad_token_id if pad_token_id is not None else source.pad_token_id
    return GenerationConfig(
        bos_token_id=source.bos_token_id,
        eos_token_id=source.eos_token_id if source.eos_token_id is not None else tokenizer.eos_token_id,
        pad_token_id=pad if pad is not None else tokenizer.pad_token_id,
        do_sample=False,
        num_beams=1,
        **settings,
    )


# -- inputs -------------------------------------------------------------------------------------------------------
def left_padded(tokenizer: Any) -> Any:
    """``tokenizer``, set up for batched generation: padded on the left (every row's prompt ends where its
    generation starts), with the end-of-sequence token as padding when it has no usable pad token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None or tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@cache
def _qwen_image_only_class(base_name: str) -> Any:
    import transformers
    from transformers import ProcessorMixin

    base: type = getattr(transformers, base_name)

    def __init__(
        self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kw: Any
    ) -> None:
        # What the stock __init__ does, minus the video processor (a torchvision-only dummy class otherwise).
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kw)

    # ProcessorMixin derives its sub-processors from the __init__ signature: image processor + tokenizer only.
    return type(base_name.replace("Processor", "ImageOnlyProcessor"), (base,), {"__init__": __init__})


def load_qwen_image_only_class(model_type: str = "qwen2_5_vl") -> Any:
    """The stock Qwen2(.5)-VL processor class without its video processor: images and text work without
    torchvision (``model_type`` qwen2_5_vl or qwen2_vl)."""
    return _qwen_image_only_class(_QWEN_PROCESSORS[model_type])


def load_processor(model_dir: Path, model_type: str) -> Any:
    """The checkpoint's own processor (chat template, tokenizer, image processor), :func:`left_padded`; a
    :class:`UsageError` when it cannot be loaded or is not an image+text processor with a chat template."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    qwen = model_type in _QWEN_PROCESSORS
    try:
        if qwen and not is_torchvision_available():
            # The stock class cannot even be instantiated without torchvision; images need no video processor.
            processor = load_qwen_image_only_class(model_type).from_pretrained(model_dir)
        else:
            try:
                processor = AutoProcessor.from_pretrained(model_dir)
            except Exception:
                if not qwen:  # e.g. a checkpoint saved without its video processor config
                    raise
                log.info("%s: stock processor failed; using the image-only Qwen processor", model_dir)
                processor = load_qwen_image_only_class(model_type).from_pretrained(model_dir)
    except Exception as exc:
        raise UsageError(f"cannot load the processor of {model_dir} ({model_type}): {first_line(exc)}") from exc
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or not hasattr(processor, "image_processor"):
        raise UsageError(
            f"{model_dir} ({model_type}) has no image+text processor (AutoProcessor gave {type(processor).__name__}); "
            "medbench needs an image-text-to-text model"
        )
    if not getattr(processor, "chat_template", None):
        raise UsageError(f"{model_dir} has no chat template (chat_template.jinja / chat_template.json)")
    left_padded(tokenizer)
    return processor


def conversation(image: Any, text: str) -> list[dict[str, Any]]:
    """The chat every family is sent (mllama, qwen2_5_vl, gemma3, llava and any other): one user turn, the image
    then the prompt text, no system turn. Each family's chat template, from its checkpoint, writes it in that
    family's tokens (Qwen's adds its default system turn itself)."""
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


def batch_inputs(processor: Any, images: list[Any], texts: list[str]) -> Any:
    """Tokenised, left-padded model inputs for a batch of :func:`conversation` s, built by the processor's own chat
    template with the generation prompt (the assistant turn's opening) added.

    ``apply_chat_template`` nests images per sample (what Mllama and Gemma3 need in batches), and skips the
    tokenizer's own BOS when the template already writes it (LLaMA, Gemma), so no sequence gets two.
    """
    return processor.apply_chat_template(
        [conversation(image, text) for image, text in zip(images, texts, strict=True)],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
