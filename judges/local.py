"""``--judge hf:<path-or-hub-id>``: the same judge prompts through a transformers causal LM on this machine, for
data that must not leave the hospital.

Each prompt is one user turn in the tokenizer's chat template (plain text when the tokenizer has none), decoded
greedily (the checkpoint's sampling settings are ignored) in left-padded batches of ``batch_size`` prompts sorted
by length; only the newly generated text is returned. A batch that fails (a CUDA out-of-memory error is first
retried with half the batch) comes back as failed replies naming the error — never raised, never a score.

The cache scope of a local judge is ``local:<weights digest>``, so judgements of another checkpoint, or of an
edited one at the same path, are never reused. Nothing is sent anywhere: hub ids are used from the local cache
(downloaded only when the hub is reachable, as for the models under test).
"""

from __future__ import annotations

import logging
from typing import Any

from medbench import filehash
from medbench.judges.core import JudgeReply
from medbench.models import hf_families
from medbench.models.hf import _is_oom, _torch_settings, parse_options

log = logging.getLogger(__name__)

PREFIX = "hf:"


class LocalJudge:
    """A local transformers causal LM as a judge backend (see the module docstring)."""

    temperature = 0.0

    def __init__(
        self,
        ref: str,
        *,
        batch_size: int = 8,
        max_new_tokens: int = 1024,
        device: str = "auto",
        dtype: str = "auto",
        revision: str | None = None,
    ) -> None:
        name = PREFIX + ref
        opts = parse_options(name, {"device": device, "dtype": dtype, "batch_size": batch_size})
        self.ref = ref
        self.batch_size = opts.batch_size or 8
        self.max_new_tokens = max_new_tokens
        self.model_dir, self.revision = hf_families.resolve(ref, revision, what="model", marker="config.json")
        self.model = name if self.revision is not None else PREFIX + str(self.model_dir)
        self._weights = hf_families.weights_digest(self.model_dir)
        self._dtype, self._device = _torch_settings(opts)
        self._tokenizer, self._lm, self._generation = self._load()

    def _load(self) -> tuple[Any, Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        tokenizer.padding_side = "left"  # decoder-only batches: pad on the left so every prompt ends together
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        device_map = None if self._device == "cpu" else {"": self._device}
        lm = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=self._dtype, device_map=device_map)
        lm.eval()
        source = lm.generation_config
        generation = GenerationConfig(
            bos_token_id=source.bos_token_id,
            eos_token_id=source.eos_token_id if source.eos_token_id is not None else tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            do_sample=False,
            num_beams=1,
            max_new_tokens=self.max_new_tokens,
        )
        return tokenizer, lm, generation

    @property
    def cache_scope(self) -> str:
        return "local:" + self._weights[:16]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, device={self._device!r})"

    def describe(self) -> dict[str, Any]:
        import torch
        import transformers

        return {
            "backend": "local-transformers",
            "name": "hf",
            "model": self.model,
            "revision": self.revision,
            "weights_digest": {"algorithm": filehash.ALGORITHM, "value": self._weights},
            "architecture": type(self._lm).__name__,
            "chat_template": bool(getattr(self._tokenizer, "chat_template", None)),
            "temperature": self.temperature,
            "batch_size": self.batch_size,
            "max_new_tokens": self.max_new_tokens,
            "dtype": str(self._dtype).replace("torch.", ""),
            "device": self._device.split(":")[0],
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }

    def _render(self, prompt: str) -> str:
        if getattr(self._tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}]
            return str(self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return prompt

    def complete_many(self, prompts: list[str]) -> list[JudgeReply]:
        """One reply per prompt, in order; a failed batch gives failed replies (see the module docstring)."""
        texts = [self._render(p) for p in prompts]
        lengths = [len(self._tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        replies: dict[int, JudgeReply] = {}
        start, size = 0, self.batch_size
        while start < len(order):
            chunk = order[start : start + size]
            failure = None
            try:
                outputs: list[str | None] = list(self._generate([texts[i] for i in chunk]))
            except Exception as exc:
                if _is_oom(exc) and size > 1:
                    size = max(1, size // 2)
                    log.warning("local judge: out of memory; retrying with batch size %d", size)
                    self._free_memory()
                    continue
                failure = f"local judge {self.model}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                log.warning("%s", failure)
                outputs = [None] * len(chunk)
            for i, text in zip(chunk, outputs, strict=True):
                if text is None:
                    replies[i] = JudgeReply(ok=False, error=failure, server_model=self.model, attempts=1)
                elif text.strip():
                    replies[i] = JudgeReply(ok=True, text=text, server_model=self.model, attempts=1)
                else:
                    error = "blank completion (the model generated no text)"
                    replies[i] = JudgeReply(ok=False, error=error, server_model=self.model, attempts=1)
            start += len(chunk)
        return [replies[i] for i in range(len(texts))]

    def _generate(self, texts: list[str]) -> list[str]:
        import torch

        # Chat templates already carry the BOS token; plain prompts get the tokenizer's special tokens.
        templated = bool(getattr(self._tokenizer, "chat_template", None))
        batch = self._tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not templated)
        batch = batch.to(self._lm.device)
        with torch.inference_mode():
            generated = self._lm.generate(**batch, generation_config=self._generation)
        new_tokens = generated[:, batch["input_ids"].shape[1] :]
        return [str(t) for t in self._tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def _free_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
