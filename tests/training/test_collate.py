"""medbench.training.collate, the label-masking collator (medbench issue 13): for every tiny family the loss sees
exactly the answer and the end-of-turn token(s) closing it, never the prompt, the image tokens or padding; the
prompt part is token for token what the evaluation sends; truncation never cuts the prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from PIL import Image

from medbench.errors import SampleError, UsageError
from medbench.models.hf_runtime import batch_inputs, conversation, load_processor
from medbench.prompts import render_prompt
from medbench.schema import ImageRef
from medbench.scoring.vqa import extract_answer
from medbench.testing.families import MLLAMA_TEMPLATE
from medbench.testing.vlms import build_tiny_model
from medbench.training.collate import IGNORE_INDEX, SEQUENCE_KEYS, Collator, target_text, training_conversation
from medbench.training.data import TrainExample

FAMILIES = ("mllama", "qwen2_5_vl", "gemma3", "llava")

#: What each family's template puts around the answer in the trained span: (before it, the end of turn after it).
#: LLaVA-1.5's "ASSISTANT:" is followed by a space that the first answer token carries, and its template closes the
#: turn with a plain space, so the collator appends </s> (what generation stops on).
AROUND: dict[str, tuple[str, str]] = {
    "mllama": ("", "<|eot_id|>"),
    "qwen2_5_vl": ("", "<|im_end|>"),
    "gemma3": ("", "<end_of_turn>"),
    "llava": (" ", "</s>"),
}

CAPTION = "  Axial CT of the abdomen demonstrates a small hypodense lesion in the liver. "


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family -> its tiny random checkpoint folder (built once for this module)."""
    root = tmp_path_factory.mktemp("collate-vlms")
    return {family: build_tiny_model(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def processors(models: dict[str, Path]) -> dict[str, Any]:
    return {family: load_processor(path, family) for family, path in models.items()}


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> list[TrainExample]:
    """A caption and two VQA examples of different lengths, on images of different sizes and shapes."""
    root = tmp_path_factory.mktemp("collate-images")
    refs = []
    for i, size in enumerate([(300, 120), (64, 64), (90, 200)]):
        path = root / f"img{i}.png"
        Image.new("RGB", size, (40 * i, 200 - 30 * i, 90)).save(path)
        refs.append(ImageRef("file", str(path)))
    return [
        TrainExample("roco-1", "rocov2", "caption", refs[0], render_prompt("role", "caption", None), CAPTION),
        TrainExample("slake-1", "slake", "vqa", refs[1], render_prompt("role", "vqa", "Is there a fracture?"), "yes"),
        TrainExample(
            "rad-7",
            "vqa_rad",
            "vqa",
            refs[2],
            render_prompt("role", "vqa", "What abnormality is seen in this image?"),
            "pleural effusion",
        ),
    ]


def unmasked(labels: torch.Tensor) -> list[int]:
    return labels[labels != IGNORE_INDEX].tolist()


def prompt_ids(processor: Any, ex: TrainExample, image_size: int | None = 512) -> list[int]:
    """The evaluation's tokens for ``ex`` alone (a batch of one: no padding), its image opened as hf.py opens it."""
    image = ex.image.open(image_size) if isinstance(ex.image, ImageRef) else ex.image
    return batch_inputs(processor, [image], [ex.prompt])["input_ids"][0].tolist()


# -- targets and conversations ------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer", ["yes", "no", "pleural effusion", "left lung, lower lobe", " 2 cm ", "CT/MRI"])
def test_vqa_target_reads_back_through_the_evaluations_extraction(answer: str) -> None:
    # Guards the stage-2 format against the scorer: what the model is trained to say is what strict scoring reads.
    target = target_text("vqa", answer)
    assert target == f"The answer is: {answer.strip()}"  # the paper's "Assistant: The answer is: [answer]"
    assert extract_answer(target) == answer.strip()


def test_caption_target_is_the_caption_stripped() -> None:
    assert target_text("caption", CAPTION) == CAPTION.strip()


@pytest.mark.parametrize(("kind", "answer"), [("vqa", "  "), ("caption", ""), ("report", "x")])
def test_blank_answer_or_unknown_kind_is_a_sample_error(kind: str, answer: str) -> None:
    with pytest.raises(SampleError):
        target_text(kind, answer)


def test_training_conversation_is_the_evaluation_conversation_plus_one_assistant_turn() -> None:
    image = Image.new("RGB", (8, 8))
    chat = training_conversation(image, "Describe.", "A chest X-ray.")
    assert chat[:-1] == conversation(image, "Describe.")
    assert chat[-1] == {"role": "assistant", "content": [{"type": "text", "text": "A chest X-ray."}]}


# -- labels ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_unmasked_labels_decode_to_exactly_the_target_and_end_of_turn(
    family: str, processors: dict[str, Any], examples: list[TrainExample]
) -> None:
    # Guards the core promise: the loss sees the answer and its end of turn, nothing of prompt, image or padding.
    processor = processors[family]
    batch = Collator(processor, family)(examples)
    before, eot = AROUND[family]
    for row, ex in enumerate(examples):
        text = processor.tokenizer.decode(unmasked(batch["labels"][row]))
        assert text == before + target_text(ex.kind, ex.answer) + eot, (family, ex.id)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_image_pad_or_other_control_token_is_a_label(
    family: str, processors: dict[str, Any], examples: list[TrainExample]
) -> None:
    processor = processors[family]
    tokenizer = processor.tokenizer
    batch = Collator(processor, family)(examples)
    labels, attention = batch["labels"], batch["attention_mask"]
    assert (labels[attention == 0] == IGNORE_INDEX).all()  # padding never
    specials = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    eot_id = tokenizer.convert_tokens_to_ids(AROUND[family][1])
    image_ids = {processor.image_token_id, tokenizer.convert_tokens_to_ids(processor.image_token)}
    for row in range(len(examples)):
        ids = unmasked(labels[row])
        assert not image_ids & set(ids)
        # the only control token trained is the end of turn, once, last
        assert [i for i in ids if i in specials] == [eot_id] and ids[-1] == eot_id
        assert image_ids & set(batch["input_ids"][row].tolist())  # the image tokens are there, only masked


@pytest.mark.parametrize("family", FAMILIES)
def test_right_padded_and_attention_zero_exactly_on_pads(
    family: str, processors: dict[str, Any], examples: list[TrainExample]
) -> None:
    processor = processors[family]
    batch = Collator(processor, family)(examples)
    width = batch["input_ids"].shape[1]
    lengths = []
    for row in range(len(examples)):
        n = int(batch["attention_mask"][row].sum())
        lengths.append(n)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert (batch["input_ids"][row, n:] == processor.tokenizer.pad_token_id).all()
        # a row ends with its end of turn (the template's trailing newline, if any, is not kept)
        assert batch["input_ids"][row, n - 1] == processor.tokenizer.convert_tokens_to_ids(AROUND[family][1])
        for key in set(SEQUENCE_KEYS) & set(batch) - {"input_ids", "attention_mask"}:
            assert batch[key].shape[:2] == batch["input_ids"].shape, key
            assert not batch[key][row, n:].any(), key  # token types / cross-attention are 0 on pads
    assert len(set(lengths)) == len(examples) and max(lengths) == width  # really padded, to the longest row


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_part_is_token_for_token_what_the_evaluation_sends(
    family: str, processors: dict[str, Any], examples: list[TrainExample]
) -> None:
    # Guards train/eval drift: the user turn, its template rendering and the image tokens equal batch_inputs'.
    processor = processors[family]
    batch = Collator(processor, family)(examples)
    for row, ex in enumerate(examples):
        ids = prompt_ids(processor, ex)
        assert batch["input_ids"][row, : len(ids)].tolist() == ids, ex.id
        assert (batch["labels"][row, : len(ids)] == IGNORE_INDEX).all()
        assert batch["labels"][row, len(ids)] != IGNORE_INDEX  # the answer starts right after the prompt
        bos = processor.tokenizer.bos_token_id
        assert bos is None or batch["input_ids"][row].tolist().count(bos) <= 1  # never a double BOS


def test_qwen_image_size_none_keeps_the_image_as_the_evaluation_does(
    processors: dict[str, Any], examples: list[TrainExample]
) -> None:
    # Qwen's image token count follows the image's shape: unresized, the elongated image gets fewer tokens.
    processor = processors["qwen2_5_vl"]
    resized = Collator(processor, "qwen2_5_vl")(examples[:1])
    original = Collator(processor, "qwen2_5_vl", image_size=None)(examples[:1])
    ids = prompt_ids(processor, examples[0], image_size=None)
    assert original["input_ids"][0, : len(ids)].tolist() == ids
    image_id = processor.image_token_id
    assert (original["input_ids"] == image_id).sum() < (resized["input_ids"] == image_id).sum()


def test_pil_images_are_opened_like_image_refs(processors: dict[str, Any], examples: list[TrainExample]) -> None:
    ex = examples[0]
    with Image.open(ex.image.path) as im:
        as_pil = TrainExample(ex.id, ex.task, ex.kind, im.copy(), ex.prompt, ex.answer)
    collator = Collator(processors["qwen2_5_vl"], "qwen2_5_vl")
    a, b = collator([ex]), collator([as_pil])  # type: ignore[list-item]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_batch_trains_and_the_loss_covers_only_the_labels(
    family: str, models: dict[str, Path], processors: dict[str, Any], examples: list[TrainExample]
) -> None:
    # Guards the batch's keys and conventions against the real model classes: every input accepted in training
    # mode (Gemma 3 needs its token types), labels unshifted (the model shifts them), loss = CE over the labels.
    from transformers import AutoModelForImageTextToText

    batch = Collator(processors[family], family)(examples)
    model = AutoModelForImageTextToText.from_pretrained(models[family], dtype=torch.float32)
    model.train()
    out = model(**batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    expected = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert torch.isfinite(out.loss)
    assert torch.allclose(out.loss, expected, atol=1e-5)
    out.loss.backward()


# -- truncation -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_truncation_cuts_the_answer_never_the_prompt(
    family: str, processors: dict[str, Any], examples: list[TrainExample]
) -> None:
    processor = processors[family]
    caption = examples[0]
    prompt_len = len(prompt_ids(processor, caption))
    full = Collator(processor, family)([caption])
    cut = Collator(processor, family, max_length=prompt_len + 3)([caption])
    assert cut["input_ids"].shape[1] == prompt_len + 3
    assert cut["input_ids"][0].tolist() == full["input_ids"][0, : prompt_len + 3].tolist()
    assert unmasked(cut["labels"][0]) == unmasked(full["labels"][0])[:3]  # the answer's first 3 tokens only
    image_id = processor.image_token_id
    assert (cut["input_ids"] == image_id).sum() == (full["input_ids"] == image_id).sum() > 0
    # check() reports the untruncated length, for the training loop to sort or filter by
    assert Collator(processor, family).check(caption) == full["input_ids"].shape[1]


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_alone_over_max_length_is_a_sample_error_naming_the_example(
    family: str, processors: dict[str, Any], examples: list[TrainExample]
) -> None:
    processor = processors[family]
    ex = examples[1]
    collator = Collator(processor, family, max_length=len(prompt_ids(processor, ex)))
    with pytest.raises(SampleError, match=r"example slake-1: the prompt alone is \d+ tokens") as info:
        collator(examples)
    assert info.value.sample_id == "slake-1"
    with pytest.raises(SampleError):
        collator.check(ex)


# -- bad templates and bad data -------------------------------------------------------------------------------------
def test_template_whose_generation_prompt_is_not_a_prefix_is_a_usage_error(
    models: dict[str, Path], examples: list[TrainExample]
) -> None:
    # Guards the boundary check: a template writing the assistant header differently in the generation prompt
    # would make the collator train on the wrong tokens; it must refuse instead.
    processor = load_processor(models["mllama"], "mllama")
    broken = MLLAMA_TEMPLATE.replace(
        "{%- if add_generation_prompt -%}<|start_header_id|>assistant",
        "{%- if add_generation_prompt -%}<|start_header_id|>model",
    )
    assert broken != MLLAMA_TEMPLATE
    processor.chat_template = broken
    with pytest.raises(UsageError, match="mllama: the chat template does not write the prompt-only conversation"):
        Collator(processor, "mllama")(examples)


def test_template_with_no_end_of_turn_at_all_gets_the_end_of_sequence_token(
    models: dict[str, Path], examples: list[TrainExample]
) -> None:
    # A template closing the assistant turn with nothing (LLaMA's, minus <|eot_id|>): the eos is appended.
    processor = load_processor(models["mllama"], "mllama")
    processor.chat_template = MLLAMA_TEMPLATE.replace("<|eot_id|>", "")
    processor.tokenizer.eos_token = "<|end_of_text|>"
    batch = Collator(processor, "mllama")(examples[1:2])
    assert processor.tokenizer.decode(unmasked(batch["labels"][0])) == "The answer is: yes<|end_of_text|>"


@pytest.mark.parametrize(("field", "text"), [("answer", "yes<|eot_id|>"), ("prompt", "Is it <|image|> normal?")])
def test_control_token_text_in_the_data_is_a_sample_error(
    field: str, text: str, processors: dict[str, Any], examples: list[TrainExample]
) -> None:
    ex = examples[1]
    bad = TrainExample(ex.id, ex.task, ex.kind, ex.image, text if field == "prompt" else ex.prompt, text)
    with pytest.raises(SampleError, match=f"example slake-1: the {field} contains the tokenizer's control token"):
        Collator(processors["mllama"], "mllama")([bad])


def test_blank_answer_in_a_batch_names_the_example(processors: dict[str, Any], examples: list[TrainExample]) -> None:
    ex = examples[2]
    bad = TrainExample(ex.id, ex.task, ex.kind, ex.image, ex.prompt, "   ")
    with pytest.raises(SampleError, match="example rad-7: empty vqa answer") as info:
        Collator(processors["gemma3"], "gemma3")([examples[0], bad])
    assert info.value.sample_id == "rad-7"


def test_bad_batches_and_settings_are_usage_errors(processors: dict[str, Any], examples: list[TrainExample]) -> None:
    collator = Collator(processors["llava"], "llava")
    with pytest.raises(UsageError, match="empty batch"):
        collator([])
    ex = examples[0]
    with pytest.raises(UsageError, match="image must be an ImageRef or a PIL image"):
        collator([TrainExample(ex.id, ex.task, ex.kind, "img.png", ex.prompt, ex.answer)])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="max_length"):
        Collator(processors["llava"], "llava", max_length=1)
