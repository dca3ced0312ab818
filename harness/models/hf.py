"""Hugging Face image-text-to-text models (``AutoModelForImageTextToText``), optionally with a PEFT LoRA adapter.

Names: ``hf:<hub-id-or-path>[+lora:<adapter>]``, and the paper's models ``llama32``, ``llama32med`` (LLaMA 3.2
Vision + the LLaMA32-Med LoRA adapter, from ``--model-arg llama32med.adapter=PATH`` or
``MEDBENCH_LLAMA32MED_ADAPTER``), ``qwen25vl``, ``gemma3`` and ``llava``. Options (``--model-arg NAME.KEY=VALUE``):
``revision``, ``dtype`` (auto: bf16 on CUDA, fp32 elsewhere), ``device`` (auto), ``batch_size`` (int or auto),
``adapter``/``lora``, ``max_new_tokens`` (overrides the runner's per-task value), ``fast`` (default true: the fast
path of :mod:`medbench.models.hf_fast`, the same outputs; false: the naive Hugging Face path, for comparison),
``vision_tiles`` (Mllama: ``all``, the default, as the model computes; ``valid``: the vision encoder skips padded
tiles, faster but **not** the same outputs — see :mod:`medbench.models.hf_fast`), ``decode`` (``dynamic``, the
default; ``static``: a key/value cache allocated once; ``compiled``: that cache and the decode step compiled, CUDA
graphs on a GPU — see :mod:`medbench.models.hf_decode`), ``quant`` (``none``; ``nf4`` or
``fp4``: the base in 4-bit with double quantisation and the run's compute dtype, as QLoRA trains it; CUDA only).

Every request gets the family's own chat template (user turn: the image, then the prompt), greedy decoding and
only the newly generated text back. Hub models are used from the local cache; when the hub is reachable a missing
model is downloaded, otherwise a :class:`UsageError` says how to fetch it. torch, transformers and peft are imported
only when a model is created.

Creating a model checks everything that can be checked without its weights (options, model and adapter folders,
model_type, weight files present, adapter base) and fingerprints the checkpoint by content; the weights are loaded
on the first ``generate`` and dropped by ``release``. What it shares with the local judge and the training recipe
(device and dtype, out-of-memory batching, greedy decoding, processor, chat) is :mod:`medbench.models.hf_runtime`.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from medbench import filehash
from medbench.errors import UsageError
from medbench.models import hf_decode, hf_families, hf_fast, hf_inputs, hf_runtime
from medbench.models.base import Model
from medbench.schema import MAX_NEW_TOKENS, Request

log = logging.getLogger(__name__)

LLAMA32 = "meta-llama/Llama-3.2-11B-Vision-Instruct"
QWEN25VL = "Qwen/Qwen2.5-VL-7B-Instruct"
GEMMA3 = "google/gemma-3-4b-it"
LLAVA = "llava-hf/llava-1.5-7b-hf"
LLAMA32MED_ENV = "MEDBENCH_LLAMA32MED_ADAPTER"

OPTIONS = (
    "revision",
    "dtype",
    "device",
    "batch_size",
    "adapter",
    "lora",
    "max_new_tokens",
    "fast",
    "vision_tiles",
    "decode",
    "quant",
)


@dataclass(frozen=True)
class Options:
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int | None = None  # None: auto
    adapter: str | None = None
    max_new_tokens: int | None = None
    fast: bool = True
    vision_tiles: str = "all"
    decode: str = "dynamic"  # dynamic | static | compiled: how the decode steps run (hf_decode)
    quant: str = "none"  # none | nf4 | fp4: the base in 4-bit (bitsandbytes, double quantisation), as QLoRA trains


def parse_options(name: str, options: dict[str, Any]) -> Options:
    """Check and convert ``--model-arg`` values (strings from the command line, or Python values)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"model {name}: unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    adapters = {str(options[k]) for k in ("adapter", "lora") if options.get(k) not in (None, "")}
    if len(adapters) > 1:
        raise UsageError(f"model {name}: adapter and lora name different adapters ({', '.join(sorted(adapters))})")
    dtype = hf_runtime.check_dtype(name, options.get("dtype"))
    device = hf_runtime.check_device(name, options.get("device"))
    batch = options.get("batch_size")
    tokens = options.get("max_new_tokens")
    fast = options.get("fast", True)
    if isinstance(fast, str) and fast.lower() in ("true", "false", "1", "0"):
        fast = fast.lower() in ("true", "1")
    if not isinstance(fast, bool):
        raise UsageError(f"model {name}: fast must be true or false, not {fast!r}")
    tiles = str(options.get("vision_tiles") or "all")
    if tiles not in hf_fast.VISION_TILES:
        raise UsageError(f"model {name}: vision_tiles must be one of {', '.join(hf_fast.VISION_TILES)}, not {tiles!r}")
    decode = str(options.get("decode") or hf_decode.DECODES[0])
    if decode not in hf_decode.DECODES:
        raise UsageError(f"model {name}: decode must be one of {', '.join(hf_decode.DECODES)}, not {decode!r}")
    quant = str(options.get("quant") or "none")
    if quant not in ("none", *hf_runtime.QUANT_TYPES):
        raise UsageError(f"model {name}: quant must be none, {', '.join(hf_runtime.QUANT_TYPES)}; not {quant!r}")
    return Options(
        revision=str(options["revision"]) if options.get("revision") else None,
        dtype=dtype,
        device=device,
        batch_size=None if batch in (None, "", "auto") else hf_runtime.positive_int(name, "batch_size", batch),
        adapter=adapters.pop() if adapters else None,
        max_new_tokens=None if tokens in (None, "") else hf_runtime.positive_int(name, "max_new_tokens", tokens),
        fast=fast,
        vision_tiles=tiles,
        decode=decode,
        quant=quant,
    )


class HFModel(Model):
    """An ``AutoModelForImageTextToText`` checkpoint with its processor, optionally with a LoRA adapter."""

    uses_images: ClassVar[bool] = True

    def __init__(self, name: str, model_ref: str, **options: Any) -> None:
        """Check everything that can be checked without the weights, and fingerprint them; nothing heavy is loaded
        (the weights come on the first :meth:`generate`), so a run can create all its models up front and stop
        at once on a bad option, a missing adapter or an incomplete checkpoint."""
        super().__init__(name, **options)
        opts = parse_options(name, options)
        self._opts = opts
        self.model_ref = model_ref
        self.model_dir, self.revision = hf_families.resolve(
            model_ref, opts.revision, what="model", marker="config.json"
        )
        if opts.revision and self.revision is None:
            raise UsageError(f"model {name}: revision applies to hub ids; {self.model_dir} is a local folder")
        self.model_type = hf_families.read_model_type(self.model_dir)
        hf_families.check_supported(self.model_dir, self.model_type)
        hf_families.check_weights(self.model_dir)
        self.adapter_dir: Path | None = None
        self.adapter_revision: str | None = None
        self._adapter_config: dict[str, Any] = {}
        if opts.adapter:
            self.adapter_dir, self.adapter_revision = hf_families.resolve(
                opts.adapter, None, what="adapter", marker="adapter_config.json"
            )
            self._adapter_config = hf_families.read_adapter_config(self.adapter_dir)
            self._check_adapter_base()
        if opts.vision_tiles != "all" and self.model_type not in hf_fast.TRIMMED:
            raise UsageError(f"model {name}: vision_tiles applies to {', '.join(hf_fast.TRIMMED)} only")
        self._dtype, self._device = hf_runtime.device_and_dtype(opts.device, opts.dtype)
        if opts.quant != "none" and not self._device.startswith("cuda"):
            raise UsageError(
                f"model {name}: quant={opts.quant} loads the base in 4-bit with bitsandbytes, which needs a CUDA GPU; "
                f"this run's device is {self._device} (drop quant to evaluate the 16-bit base)"
            )
        self.batch_size = opts.batch_size or (16 if self._device.startswith("cuda") else 4)
        self.new_tokens: int | None = 0
        # The processor is small and quick to load, and loading it checks the chat template and image processor.
        self.processor = hf_runtime.load_processor(self.model_dir, self.model_type)
        # Greedy whatever the checkpoint's generation_config asks for (LLaMA 3.2 samples at T=0.6).
        self.generation = hf_runtime.greedy_generation_config(
            hf_families.generation_config(self.model_dir), self.processor.tokenizer
        )
        hf_decode.apply(self.generation, opts.decode)
        self._architecture = hf_families.architecture(self.model_type)
        self._model: Any = None  # loaded by the first generate, dropped by release
        self._prefetch = hf_fast.Prefetch(self._inputs, threading.Lock())
        self._weights_bytes = 0  # GPU memory allocated once the model is loaded (the automatic batch size's base)
        # Last: the only step that reads the weights (once; later runs find the digests in the digest cache).
        self._weights = hf_families.weights_digest(self.model_dir)
        self._adapter_digest = hf_families.adapter_digest(self.adapter_dir) if self.adapter_dir else None

    # -- loading ------------------------------------------------------------------------------------------------
    def _check_adapter_base(self) -> None:
        """The adapter's recorded base model must be of this model's type (readable without loading either)."""
        base, base_type = hf_families.adapter_base_type(self._adapter_config)
        if base_type is not None and base_type != self.model_type:
            raise UsageError(
                f"adapter {self._opts.adapter} was trained on {base} ({base_type}) and does not fit the base model "
                f"{self.model_ref} ({self.model_type}); use it with the base it was trained on"
            )

    @property
    def model(self) -> Any:
        """The loaded model (with its adapter), loaded on first use."""
        if self._model is None:
            self._model = self._load_model()
        return self._model

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory now."""
        return self._model is not None

    def load(self) -> None:
        """Load the weights now (the runner does, outside its generation timing, when something is to generate)."""
        self.model  # noqa: B018 - the property loads them

    def release(self) -> None:
        """Drop the weights and free their memory; the next :meth:`generate` loads them again."""
        if self._model is None:
            return
        self._model = None
        self._prefetch.close()
        hf_runtime.release_memory()

    def _load_model(self) -> Any:
        log.info("loading %s from %s", self.name, self.model_dir)
        quant = self._opts.quant
        model = hf_runtime.load_model(
            self.model_dir,
            label=self.name,
            model_type=self.model_type,
            dtype=self._dtype,
            device=self._device,
            quantization=None if quant == "none" else hf_runtime.four_bit(quant, compute_dtype=self._dtype),
            oom_hint=f"use a larger GPU, or bf16 if this is float32 (--model-arg {self.name}.dtype=bf16)",
        )
        if self.adapter_dir is not None:
            model = self._attach_adapter(model)
        return self.prepare(model)

    def prepare(self, model: Any) -> Any:
        """Make a loaded ``model`` (with its adapter) ready to generate the way this adapter's options say: eval
        mode, greedy decoding, the fast path's changes. (A benchmark that builds its model itself calls it too.)"""
        model.eval()
        model.generation_config = self.generation
        if self._opts.fast:
            hf_fast.share_images(model, self.model_type)
        if self._opts.vision_tiles == "valid":
            hf_fast.install(model, self.model_type)
        if self._device.startswith("cuda"):
            import torch

            self._weights_bytes = torch.cuda.memory_allocated(self._device)
        return model

    def _attach_adapter(self, model: Any) -> Any:
        from peft import PeftModel
        from peft.utils import get_peft_model_state_dict, load_peft_weights

        assert self.adapter_dir is not None
        adapter = self._opts.adapter
        ours = f"{self.model_ref} ({self.model_type})"
        base = self._adapter_config.get("base_model_name_or_path") or None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = PeftModel.from_pretrained(model, str(self.adapter_dir))
            except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
                raise UsageError(
                    f"adapter {adapter} (trained on {base or 'an unrecorded base'}) does not fit the base model "
                    f"{ours}: {hf_families.first_line(exc)}"
                ) from exc
        problems = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
        saved = len(load_peft_weights(str(self.adapter_dir), device="cpu"))
        used = len(get_peft_model_state_dict(model))
        if saved > used:
            problems.append(f"{saved - used} of its {saved} tensors match no module of the base model")
        if problems:
            raise UsageError(
                f"adapter {adapter} (trained on {base or 'an unrecorded base'}) does not fit the base model {ours}: "
                f"{problems[0][:300]}"
            )
        for w in caught:  # pass on what peft said, minus library-internal deprecation notices
            if not issubclass(w.category, (DeprecationWarning, FutureWarning)):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return model

    # -- generation ---------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[Request]) -> list[str]:
        """Outputs in batches of :attr:`batch_size` (read per chunk, so a value set after creation applies),
        halving it on out-of-memory. The first call loads the weights."""
        if requests:
            self.model  # noqa: B018 - load now, outside the out-of-memory retry below (a load OOM is not a batch's)
        outputs = [""] * len(requests)
        groups: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(self._opts.max_new_tokens or request.max_new_tokens, []).append(i)
        fast = self._opts.fast
        for max_new_tokens, indices in groups.items():
            if fast:  # an image's questions together, as generate_all orders them too (outputs go back to their slots)
                indices = [indices[k] for k in hf_fast.batching_order([requests[i] for i in indices])]
            try:
                texts, self.batch_size = hf_runtime.run_in_batches(
                    [requests[i] for i in indices],
                    partial(self._generate_batch, max_new_tokens=max_new_tokens),
                    self.batch_size,
                    label=self.name,
                    ahead=self._prefetch.submit if fast else None,
                    grow=self._grow if fast and self._opts.batch_size is None else None,
                )
            except Exception as exc:  # run_in_batches retries smaller batches; what reaches here is one request's
                if not hf_runtime.is_oom(exc):
                    raise
                raise UsageError(
                    f"{self.name}: out of memory generating a single request on {self._device} "
                    f"({self._dtype}); use a smaller --image-size, a lower max_new_tokens or a larger GPU"
                ) from exc
            finally:
                self._prefetch.discard()
            for i, text in zip(indices, texts, strict=True):
                outputs[i] = text
        return outputs

    def order(self, requests: Sequence[Request]) -> list[int]:
        """The fast path's batching order (an image's questions together, :func:`hf_fast.batching_order`), or the
        default by prompt length for ``fast=false``."""
        return hf_fast.batching_order(requests) if self._opts.fast else super().order(requests)

    def _inputs(self, requests: Sequence[Request]) -> Any:
        """The processor's batch for ``requests`` (images opened and resized, chat template, tokens), on the CPU;
        on the fast path perhaps with each distinct image's pixels only, gathered by :meth:`_on_device`."""
        if self._opts.fast:  # each distinct image opened and processed once (the same tensors: hf_inputs)
            hf_inputs.share_processing(self.processor, self.model_type)
            images = hf_inputs.open_images(requests)
        else:
            images = [r.image.open(r.image_size) for r in requests]
        inputs = hf_runtime.batch_inputs(self.processor, images, [r.prompt for r in requests])
        return hf_fast.trim_tiles(inputs) if self._opts.vision_tiles == "valid" else inputs

    def _on_device(self, inputs: Any) -> Any:
        """A batch from :meth:`_inputs` on the model's device and dtype, every question's pixels gathered there (the
        fast path builds and copies each distinct image's once: :func:`hf_inputs.expand`)."""
        return hf_inputs.expand(inputs.to(self._device, dtype=self._dtype))

    def _grow(self, size: int, done: int) -> int:
        """The automatic batch size after a batch of ``done`` at ``size`` (:func:`hf_fast.next_batch_size`; CUDA)."""
        if not self._device.startswith("cuda"):
            return size
        import torch

        peak = torch.cuda.max_memory_allocated(self._device)
        total = torch.cuda.get_device_properties(self._device).total_memory
        return hf_fast.next_batch_size(size, done, peak, self._weights_bytes, total)

    def _generate_batch(self, requests: Sequence[Request], max_new_tokens: int) -> list[str]:
        import torch

        inputs = self._prefetch.take(requests) if self._opts.fast else None
        if inputs is None:
            with self._prefetch.lock:
                inputs = self._inputs(requests)
        inputs = self._on_device(inputs)
        if self._device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self._device)
        config = copy.deepcopy(self.generation)
        config.max_new_tokens = max_new_tokens
        hf_decode.size_cache(config, self._opts.decode, int(inputs["input_ids"].shape[1]))
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=config)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        pad = self.generation.pad_token_id
        # Generated tokens, not the padding after a sequence ended: the throughput report's new tokens/s.
        count = int((new_tokens != pad).sum()) if pad is not None else int(new_tokens.numel())
        self.new_tokens = (self.new_tokens or 0) + count
        with self._prefetch.lock:  # the next batch's tokenizer work may be running in the background
            texts = self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [text.strip() for text in texts]

    # -- identity -----------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        import peft
        import torch
        import transformers

        hub = self.revision is not None
        per_kind = dict(MAX_NEW_TOKENS)  # what requests carry by default (each carries its own value)
        if self._opts.max_new_tokens:  # overrides every request's value
            per_kind = {"vqa": self._opts.max_new_tokens, "caption": self._opts.max_new_tokens}
        # No model name: the same weights, adapter and settings under another name produce the same outputs.
        return {
            "class": type(self).__qualname__,
            "model": {
                "id": self.model_ref if hub else str(self.model_dir),
                "path": None if hub else str(self.model_dir),  # hub snapshots: the cache path is per machine
                "revision": self.revision,
                "model_type": self.model_type,
                "architecture": self._architecture,
                "weights_digest": {"algorithm": filehash.ALGORITHM, "value": self._weights},
            },
            "adapter": None
            if self.adapter_dir is None
            else {
                "id": self._opts.adapter if self.adapter_revision else str(self.adapter_dir),
                "path": None if self.adapter_revision else str(self.adapter_dir),
                "revision": self.adapter_revision,
                "digest": {"algorithm": filehash.ALGORITHM, "value": self._adapter_digest},
            },
            "dtype": hf_runtime.dtype_name(self._dtype),
            "quantization": None
            if self._opts.quant == "none"
            else {"type": self._opts.quant, "double_quant": True, "library": "bitsandbytes"},
            "device": self._device.split(":")[0],
            "generation": {
                "do_sample": False,
                "num_beams": 1,
                "repetition_penalty": 1.0,
                "max_new_tokens": per_kind,
                "eos_token_id": self.generation.eos_token_id,
                **hf_fast.describe(self._opts.fast, self._opts.vision_tiles),
                "decode": self._opts.decode,
            },
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
            },
        }


def _adapter_from_spec(name: str) -> tuple[str, str | None]:
    if not name.startswith("hf:") or len(name) <= 3:
        raise UsageError(f"model {name!r}: expected hf:<hub-id-or-path>[+lora:<adapter-path>]")
    base, sep, adapter = name[3:].partition("+lora:")
    if not base or (sep and not adapter):
        raise UsageError(f"model {name!r}: expected hf:<hub-id-or-path>[+lora:<adapter-path>]")
    return base, adapter or None


def _with_adapter(name: str, adapter: str | None, options: dict[str, Any]) -> dict[str, Any]:
    given = options.get("adapter") or options.get("lora")
    if adapter and given and str(given) != adapter:
        raise UsageError(f"model {name}: the name gives adapter {adapter} but the options give {given}")
    if adapter:
        options = {k: v for k, v in options.items() if k != "lora"} | {"adapter": adapter}
    return options


def from_spec(name: str, **options: Any) -> Model:
    """``hf:<hub-id-or-path>[+lora:<adapter>]``."""
    base, adapter = _adapter_from_spec(name)
    return HFModel(name, base, **_with_adapter(name, adapter, options))


def llama32(name: str, **options: Any) -> Model:
    """LLaMA 3.2 11B Vision Instruct, zero-shot (the paper's baseline)."""
    return HFModel(name, LLAMA32, **options)


def llama32med(name: str, **options: Any) -> Model:
    """LLaMA 3.2 11B Vision Instruct + the LLaMA32-Med LoRA adapter (never run without the adapter)."""
    adapter = options.get("adapter") or options.get("lora") or os.environ.get(LLAMA32MED_ENV)
    if not adapter:
        raise UsageError(
            f"model {name} needs its LoRA adapter: pass `--model-arg {name}.adapter=/path/to/adapter` or set "
            f"{LLAMA32MED_ENV}=/path/to/adapter (a PEFT folder with adapter_config.json). "
            f"Use `llama32` for the zero-shot base model."
        )
    return HFModel(name, LLAMA32, **_with_adapter(name, str(adapter), options))


def qwen25vl(name: str, **options: Any) -> Model:
    """Qwen2.5-VL 7B Instruct."""
    return HFModel(name, QWEN25VL, **options)


def gemma3(name: str, **options: Any) -> Model:
    """Gemma 3 4B instruction-tuned."""
    return HFModel(name, GEMMA3, **options)


def llava(name: str, **options: Any) -> Model:
    """LLaVA-1.5 7B (llava-hf conversion)."""
    return HFModel(name, LLAVA, **options)
