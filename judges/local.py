"""``--judge hf:<path-or-hub-id>``: the same judge prompts through a transformers causal LM on this machine, for
data that must not leave the hospital.

Each prompt is one user turn in the tokenizer's chat template (plain text when the tokenizer has none), decoded
greedily (the checkpoint's sampling settings are ignored) in left-padded batches of ``batch_size`` prompts sorted
by length; only the newly generated text is returned. A batch that fails (one that runs out of memory is first
retried at half its size, down to a single prompt: :func:`medbench.models.hf_runtime.run_in_batches`) comes back
as failed replies naming the error — never raised, never a score.

The cache scope of a local judge is ``local:<weights digest>``, so judgements of another checkpoint, or of an
edited one at the same path, are never reused. Nothing is sent anywhere: hub ids are used from the local cache
(downloaded only when the hub is reachable, as for the models under test).
"""

from __future__ import annotations

import logging
from typing import Any

from medbench import filehash
from medbench.judges.core import JudgeReply
from medbench.models import hf_runtime

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
        device = hf_runtime.check_device(name, device)
        dtype = hf_runtime.check_dtype(name, dtype)
        self.ref = ref
        self.batch_size = hf_runtime.positive_int(name, "batch_size", batch_size)
        self.max_new_tokens = max_new_tokens
        self.model_dir, self.revision = hf_runtime.resolve(ref, revision, what="model", marker="config.json")
        self.model = name if self.revision is not None else PREFIX + str(self.model_dir)
        self._weights = hf_runtime.weights_digest(self.model_dir)
        self._dtype, self._device = hf_runtime.device_and_dtype(device, dtype)
        self._tokenizer, self._lm, self._generation = self._load()

    def _load(self) -> tuple[Any, Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = hf_runtime.left_padded(AutoTokenizer.from_pretrained(self.model_dir))
        device_map = hf_runtime.device_map(self._device)
        lm = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=self._dtype, device_map=device_map)
        lm.eval()
        # Greedy whatever the checkpoint asks for; padding with the id the batches are padded with.
        generation = hf_runtime.greedy_generation_config(
            lm.generation_config, tokenizer, pad_token_id=tokenizer.pad_token_id, max_new_tokens=self.max_new_tokens
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
            "dtype": hf_runtime.dtype_name(self._dtype),
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
        replies, _ = hf_runtime.run_in_batches(
            [texts[i] for i in order],
            self._replies,
            self.batch_size,
            label=f"local judge {self.model}",
            on_failure=self._failed,
        )
        by_prompt = dict(zip(order, replies, strict=True))
        return [by_prompt[i] for i in range(len(texts))]

    def _replies(self, texts: list[str]) -> list[JudgeReply]:
        replies = []
        for text in self._generate(texts):
            if text.strip():
                replies.append(JudgeReply(ok=True, text=text, server_model=self.model, attempts=1))
            else:
                error = "blank completion (the model generated no text)"
                replies.append(JudgeReply(ok=False, error=error, server_model=self.model, attempts=1))
        return replies

    def _failed(self, texts: list[str], exc: Exception) -> list[JudgeReply]:
        """A batch that failed (or ran out of memory with one prompt): a failed reply for each of its prompts."""
        failure = f"local judge {self.model}: {hf_runtime.first_line(exc)}"
        log.warning("%s", failure)
        return [JudgeReply(ok=False, error=failure, server_model=self.model, attempts=1) for _ in texts]

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
