"""The label-masking collator: training batches whose loss sees only the assistant's answer and the token(s) that
close its turn, never the prompt, the image tokens or the padding.

Train and evaluation prompts cannot drift apart: the user turn is :func:`medbench.models.hf_runtime.conversation`
(the chat the evaluation sends, imported, not copied), its text is the task's prompt template as the runner renders
it (:func:`medbench.prompts.render_prompt`, which :mod:`medbench.training.data` already applies), and the prompt
part of every row is tokenised by the evaluation's own :func:`medbench.models.hf_runtime.batch_inputs`.

Targets (the paper's format, LLaMA32-Med Figure 2): a caption for stage 1, ``The answer is: <answer>`` for stage 2,
which the evaluation's answer extraction reads back (:func:`medbench.scoring.vqa.extract_answer`).

Where the answer starts is found by tokenising the whole conversation and the prompt-only conversation (with the
generation prompt) through the processor's own chat template and checking that the second is a token-for-token
prefix of the first. Where it ends: at the first special token the template writes after the answer (Mllama
``<|eot_id|>``, Qwen ``<|im_end|>``, Gemma ``<end_of_turn>``); whatever the template writes after that (Qwen's and
Gemma's newline) is dropped. A template that closes the assistant turn with no special token at all (LLaVA-1.5's
``ASSISTANT: answer`` followed by a space) gets the tokenizer's end-of-sequence token after the answer, as LLaVA's
own training data has it, so that the model learns to stop where generation stops.

torch and transformers are imported inside the functions that need them: importing this module is cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from medbench.errors import SampleError, UsageError
from medbench.models.hf_runtime import batch_inputs, conversation
from medbench.schema import ImageRef, TaskKind

__all__ = ["IGNORE_INDEX", "SEQUENCE_KEYS", "Collator", "Example", "target_text", "training_conversation"]

log = logging.getLogger(__name__)

#: The label value the cross-entropy loss ignores (PyTorch's and transformers' default ``ignore_index``).
IGNORE_INDEX = -100

#: Model inputs laid out along the token sequence (dimension 1): re-padded and truncated with the input ids.
#: Every other input (``pixel_values``, Mllama's ``aspect_ratio_ids``/``aspect_ratio_mask``, Qwen's
#: ``image_grid_thw``) describes the images and passes through unchanged.
SEQUENCE_KEYS: tuple[str, ...] = (
    "input_ids",
    "attention_mask",
    "token_type_ids",  # Gemma 3: 1 on image soft tokens (its model requires them when training)
    "mm_token_type_ids",  # Qwen2.5-VL: 1 on image pad tokens
    "cross_attention_mask",  # Mllama: (batch, tokens, images, tiles)
)

#: The paper's stage-2 target prefix; ``extract_answer`` strips exactly this.
ANSWER_PREFIX = "The answer is: "


class Example(Protocol):
    """What the collator reads from one example (:class:`medbench.training.data.TrainExample` has it all)."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> str: ...  # vqa | caption

    @property
    def image(self) -> Any: ...  # an ImageRef, or a PIL image

    @property
    def prompt(self) -> str: ...  # the rendered user text, as the evaluation sends it

    @property
    def answer(self) -> str: ...  # the gold answer or caption, not yet formatted as a target


def training_conversation(image: Any, prompt: str, answer: str) -> list[dict[str, Any]]:
    """The evaluation's :func:`conversation` for ``image`` and ``prompt``, then one assistant turn saying
    ``answer`` (the whole reply text, e.g. :func:`target_text`'s)."""
    return [*conversation(image, prompt), {"role": "assistant", "content": [{"type": "text", "text": answer}]}]


def target_text(kind: TaskKind | str, answer: str) -> str:
    """What the model is trained to reply: the caption itself (``caption``) or ``The answer is: <answer>``
    (``vqa``), stripped of surrounding whitespace (chat templates such as LLaMA's trim it anyway, and the
    evaluation strips its extracted answer). A blank answer or an unknown kind is a :class:`SampleError`."""
    text = str(answer).strip()
    if not text:
        raise SampleError(f"empty {kind} answer: nothing to train on; fix or drop this sample")
    if kind == "caption":
        return text
    if kind == "vqa":
        return ANSWER_PREFIX + text
    raise SampleError(f"unknown task kind {kind!r} (expected vqa or caption)")


class Collator:
    """Right-padded training batches for one model family, built by ``processor`` (the checkpoint's own, e.g. from
    :func:`medbench.models.hf_runtime.load_processor`).

    ``examples`` -> ``input_ids``, ``attention_mask``, ``labels`` and the family's image inputs (``pixel_values``
    and, per family, ``cross_attention_mask``/``aspect_ratio_*``, ``image_grid_thw``/``mm_token_type_ids`` or
    ``token_type_ids``), all torch tensors. ``labels`` are the input ids with :data:`IGNORE_INDEX` everywhere except
    the answer tokens and the end-of-turn token closing them. Images (an :class:`ImageRef` or a PIL image) are
    opened as the evaluation opens them: RGB, resized to ``image_size`` x ``image_size`` (0 or None: as they are).

    A row longer than ``max_length`` loses the end of its answer (logged); the prompt, and so the image tokens, is
    never cut: an example whose prompt alone leaves no room for an answer token is a :class:`SampleError` naming
    it. Run :meth:`check` over the examples first to find (and skip) those before training starts.
    """

    def __init__(self, processor: Any, family: str, max_length: int = 1024, image_size: int | None = 512) -> None:
        if max_length < 2:
            raise UsageError(f"collator max_length must be at least 2 tokens, got {max_length}")
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or not getattr(processor, "chat_template", None):
            raise UsageError(
                f"{family}: the collator needs the checkpoint's processor with a tokenizer and chat template"
            )
        if tokenizer.pad_token_id is None or tokenizer.eos_token is None:
            raise UsageError(
                f"{family}: the tokenizer has no pad or end-of-sequence token (load it with load_processor)"
            )
        self.processor = processor
        self.family = family
        self.max_length = max_length
        self.image_size = image_size or None
        self.tokenizer = tokenizer
        self.pad_id: int = int(tokenizer.pad_token_id)
        # Added tokens flagged special: the chat template's control tokens (turn markers, image placeholders).
        self._specials: dict[int, str] = {
            int(i): str(t.content) for i, t in tokenizer.added_tokens_decoder.items() if t.special
        }
        self._image_ids = _image_token_ids(processor, tokenizer)

    # -- public -------------------------------------------------------------------------------------------------
    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        """One training batch from ``examples`` (see the class docstring)."""
        if not examples:
            raise UsageError("the collator was given an empty batch")
        return self._collate(list(examples))

    def check(self, example: Example) -> int:
        """The token count of ``example`` (prompt, image tokens, answer and end of turn) before truncation; a
        :class:`SampleError` if it cannot be trained (prompt too long, blank answer, control tokens in the text)."""
        return self._collate([example], lengths_only=True)["lengths"][0]

    # -- the work -----------------------------------------------------------------------------------------------
    def _collate(self, examples: list[Example], lengths_only: bool = False) -> dict[str, Any]:
        import torch

        images = [self._image(ex) for ex in examples]
        prompts = [self._prompt(ex) for ex in examples]
        closed = [self._target(ex, im, p) for ex, im, p in zip(examples, images, prompts, strict=True)]
        targets = [target for target, _ in closed]
        # The prompt part exactly as the evaluation builds it (left-padded, generation prompt added).
        prompt_batch = batch_inputs(self.processor, images, prompts)
        full_batch = self.processor.apply_chat_template(
            [training_conversation(im, p, t) for im, p, t in zip(images, prompts, targets, strict=True)],
            add_generation_prompt=False,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )
        spans: list[tuple[torch.Tensor, int, int]] = []  # per row: positions of its tokens, prompt length, end
        for row, ex in enumerate(examples):
            prompt_ids = prompt_batch["input_ids"][row][prompt_batch["attention_mask"][row].bool()]
            positions = full_batch["attention_mask"][row].nonzero().flatten()
            full_ids = full_batch["input_ids"][row][positions]
            start = self._answer_start(ex, prompt_ids, full_ids)
            end = self._turn_end(ex, full_ids, start, closed[row][1])
            if start >= self.max_length:
                raise SampleError(
                    f"example {ex.id}: the prompt alone is {start} tokens (image tokens included) but max_length is "
                    f"{self.max_length}, so no answer token would be trained; raise data.max_length or lower "
                    "data.image_size, or drop this sample",
                    sample_id=ex.id,
                )
            spans.append((positions, start, end))
        if lengths_only:
            return {"lengths": [end for _, _, end in spans]}
        for (_, _, end), ex in zip(spans, examples, strict=True):
            if end > self.max_length:
                log.warning(
                    "example %s: %d tokens, truncated to max_length %d (the end of its answer is not trained)",
                    ex.id,
                    end,
                    self.max_length,
                )
        return self._right_padded(full_batch, spans)

    def _right_padded(self, full_batch: Any, spans: list[tuple[Any, int, int]]) -> dict[str, Any]:
        """The batch re-laid: each row's tokens from position 0, cut at its end of turn (and ``max_length``),
        padding after; labels only on the answer span; image inputs as the processor made them."""
        import torch

        lengths = [min(end, self.max_length) for _, _, end in spans]
        width = max(lengths)
        out: dict[str, Any] = {}
        for key, value in full_batch.items():
            if key not in SEQUENCE_KEYS:
                out[key] = value
                continue
            fill = self.pad_id if key == "input_ids" else 0  # attention, token types, cross-attention: 0 on pads
            padded = torch.full((len(spans), width, *value.shape[2:]), fill, dtype=value.dtype)
            for row, ((positions, _, _), n) in enumerate(zip(spans, lengths, strict=True)):
                padded[row, :n] = value[row][positions[:n]]
            out[key] = padded
        labels = torch.full_like(out["input_ids"], IGNORE_INDEX)
        for row, ((_, start, _), n) in enumerate(zip(spans, lengths, strict=True)):
            labels[row, start:n] = out["input_ids"][row, start:n]
        # Belt and braces: an image placeholder id is never a target (Mllama's <|image|> lies past its lm_head).
        if self._image_ids:
            labels[torch.isin(labels, torch.tensor(sorted(self._image_ids)))] = IGNORE_INDEX
        out["labels"] = labels
        return out

    def _answer_start(self, ex: Example, prompt_ids: Any, full_ids: Any) -> int:
        """The prompt's length, after checking that it is a token-for-token prefix of the whole conversation."""
        n = len(prompt_ids)
        head = full_ids[:n]
        if len(head) == n and bool((head == prompt_ids).all()):
            return n
        differ = next((i for i in range(min(n, len(head))) if int(head[i]) != int(prompt_ids[i])), min(n, len(head)))
        decode = self.tokenizer.decode
        raise UsageError(
            f"{self.family}: the chat template does not write the prompt-only conversation (with the generation "
            f"prompt) as a prefix of the conversation with the answer (example {ex.id}, token {differ}: "
            f"prompt has {decode(prompt_ids[differ : differ + 8].tolist())!r}, "
            f"with the answer {decode(full_ids[differ : differ + 8].tolist())!r}), so the answer cannot be located; "
            "fix the checkpoint's chat template"
        )

    def _turn_end(self, ex: Example, full_ids: Any, start: int, end_of_turn: int) -> int:
        """The position just after the ``end_of_turn`` token that closes the answer (the first one after the
        prompt: the data holds none, :meth:`_no_control_tokens` saw to that)."""
        hits = (full_ids[start:] == end_of_turn).nonzero().flatten()
        if len(hits) and int(hits[0]) > 0:  # at least one answer token before it
            return start + int(hits[0]) + 1
        raise UsageError(
            f"{self.family}: the answer of example {ex.id} is not followed by its end-of-turn token "
            f"{self.tokenizer.convert_ids_to_tokens(end_of_turn)!r} once tokenised (after the prompt: "
            f"{self.tokenizer.decode(full_ids[start:].tolist())!r}); fix the checkpoint's chat template"
        )

    # -- one example's inputs -----------------------------------------------------------------------------------
    def _image(self, ex: Example) -> Any:
        """The example's image as the evaluation opens it (:meth:`ImageRef.open`: RGB, bicubic resize)."""
        image = ex.image
        if isinstance(image, ImageRef):
            return image.open(self.image_size)
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise UsageError(f"example {ex.id}: image must be an ImageRef or a PIL image, got {type(image).__name__}")
        rgb = image.convert("RGB")
        if self.image_size:  # what medbench.images.decode_image does to an evaluation image
            rgb = rgb.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return rgb

    def _prompt(self, ex: Example) -> str:
        self._no_control_tokens(ex, "prompt", ex.prompt)
        return ex.prompt

    def _target(self, ex: Example, image: Any, prompt: str) -> tuple[str, int]:
        """The assistant's text (:func:`target_text`) and the id of the token that closes its turn: the first
        special token the chat template writes after the answer, or, when it writes none (LLaVA), the tokenizer's
        end-of-sequence token, appended to the text. Decided on the rendered conversation (no tokenising)."""
        try:
            target = target_text(ex.kind, ex.answer)
        except SampleError as exc:
            raise SampleError(f"example {ex.id}: {exc}", sample_id=ex.id) from None
        self._no_control_tokens(ex, "answer", target)
        rendered = self.processor.apply_chat_template(training_conversation(image, prompt, target), tokenize=False)
        at = rendered.rfind(target)
        if at < 0:
            raise UsageError(
                f"{self.family}: the chat template rewrites the assistant's text (example {ex.id}), so the answer "
                "cannot be located; fix the checkpoint's chat template"
            )
        closing = rendered[at + len(target) :]
        found = [(closing.find(token), token) for token in self._specials.values() if token in closing]
        if not found:
            return target + self.tokenizer.eos_token, int(self.tokenizer.eos_token_id)
        token = min(found, key=lambda hit: (hit[0], -len(hit[1])))[1]  # the earliest; the longest at a tie
        return target, int(self.tokenizer.convert_tokens_to_ids(token))

    def _no_control_tokens(self, ex: Example, what: str, text: str) -> None:
        """A special token's text inside the data would be tokenised as that token (an image placeholder or an
        end of turn in the middle of an answer): refuse the example."""
        found = sorted({token for token in self._specials.values() if token in text})
        if found:
            raise SampleError(
                f"example {ex.id}: the {what} contains the tokenizer's control token(s) {', '.join(found)}; "
                "remove them from the data",
                sample_id=ex.id,
            )


def _image_token_ids(processor: Any, tokenizer: Any) -> set[int]:
    """The ids of the image (and video) placeholder tokens that the processor or tokenizer names."""
    ids: set[int] = set()
    for owner in (processor, tokenizer):
        for name in ("image_token", "video_token", "boi_token", "eoi_token"):
            token = getattr(owner, name, None)
            if isinstance(token, str) and token:
                ids.add(tokenizer.convert_tokens_to_ids(token))
        for name in ("image_token_id", "video_token_id"):
            value = getattr(owner, name, None)
            if isinstance(value, int):
                ids.add(value)
    unk = getattr(tokenizer, "unk_token_id", None)
    return {i for i in ids if isinstance(i, int) and i != unk}
