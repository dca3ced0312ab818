"""The four families' tiny random models, made in memory (saving them is :mod:`medbench.testing.vlms`).

Each builder makes a model and processor that behave like the real checkpoints': ``mllama`` (LLaMA 3.2 Vision),
``qwen2_5_vl`` (Qwen2.5-VL), ``gemma3`` (Gemma 3) and ``llava`` (LLaVA-1.5). Nothing is downloaded: configs are
written by hand, the tokenizer is a tiny byte-level BPE trained on a few sentences, and the image processors are
the PIL-backend classes (no torchvision needed). torch, transformers and tokenizers are imported inside functions.

Traps handled here (medbench's adapter must cope with real checkpoints the same way):

* Mllama zero-initialises its tanh gates and Gemma3 its image projection, so a fresh model ignores the image;
  both are opened here so that the image actually changes the output.
* The Qwen2.5-VL processor cannot be built without torchvision; it is made with medbench's image-only class
  (:func:`medbench.models.hf_runtime.load_qwen_image_only_class`).
* Linear layers are >= 64 wide and multiples of 32 (bitsandbytes' CPU 4-bit kernel needs that), and the model
  vocabulary is the tokenizer's rounded up to 64, so generated ids can lie past the tokenizer (they decode to "").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The sentences the tiny tokenizers are trained on (medical words, and the chat templates' role names).
CORPUS = [
    "The chest X-ray shows no acute cardiopulmonary abnormality.",
    "Axial CT of the abdomen demonstrates a small hypodense lesion in the liver.",
    "MRI brain: no evidence of acute infarct or hemorrhage.",
    "What abnormality is seen in this image? Answer: pleural effusion.",
    "Is there a fracture? yes no. Describe the findings in the image.",
    "You are an experienced radiologist. Answer the question about the medical image with a word or phrase.",
    "user assistant system model The answer is: normal study.",
]


def _tokenizer(special_tokens: list[str], **named: Any) -> tuple[Any, dict[str, Any]]:
    """A byte-level BPE (never emits <unk>) with ``special_tokens`` first, wrapped as a fast HF tokenizer, and
    the ids of ``special_tokens``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, **named)
    return wrapped, {t: wrapped.convert_tokens_to_ids(t) for t in special_tokens}


def _vocab(tok: Any) -> int:
    return -(-len(tok) // 64) * 64


#: What every family's tiny language model has (64 wide, 2 layers of 2 heads sharing 1 key/value head).
_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 512,
}
#: What the tiny SigLIP (Gemma 3) and CLIP (LLaVA) vision towers have.
_VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}


def _text_config(tok: Any, **family: Any) -> dict[str, Any]:
    """A family's ``text_config``: :data:`_TEXT`, the tokenizer's vocabulary (rounded up), and ``family``'s own."""
    return {"vocab_size": _vocab(tok), **_TEXT, **family}


# Simplified but faithful chat templates: the user turn's content is a list of {"type": "image"|"text"} items.
def _content(image: str) -> str:
    return (
        "{%- if message['content'] is string -%}{{ message['content'] }}"
        "{%- else -%}{%- for c in message['content'] -%}"
        "{%- if c['type'] == 'image' -%}" + image + "{%- elif c['type'] == 'text' -%}{{ c['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
    )


MLLAMA_TEMPLATE = (
    "{{- bos_token -}}{%- for message in messages -%}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>{{ '\\n\\n' }}" + _content("<|image|>") + "<|eot_id|>"
    "{%- endfor -%}{%- if add_generation_prompt -%}"
    "<|start_header_id|>assistant<|end_header_id|>{{ '\\n\\n' }}{%- endif -%}"
)
QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' -%}<|im_start|>system{{ '\\n' }}You are a helpful assistant."
    "<|im_end|>{{ '\\n' }}{%- endif -%}"
    "{%- for message in messages -%}<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    + _content("<|vision_start|><|image_pad|><|vision_end|>")
    + "<|im_end|>{{ '\\n' }}{%- endfor -%}{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}"
)
GEMMA3_TEMPLATE = (
    "{{- bos_token -}}{%- for message in messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "<start_of_turn>{{ role }}{{ '\\n' }}" + _content("<start_of_image>") + "<end_of_turn>{{ '\\n' }}"
    "{%- endfor -%}{%- if add_generation_prompt -%}<start_of_turn>model{{ '\\n' }}{%- endif -%}"
)
LLAVA_TEMPLATE = (
    "{%- for message in messages -%}{{ message['role'].upper() ~ ': ' }}"
    + _content("<image>{{ '\\n' }}")
    + "{{ ' ' }}{%- endfor -%}{%- if add_generation_prompt -%}ASSISTANT:{%- endif -%}"
)


#: LLaMA 3.2 Vision's own tile layouts (rows x columns of tiles, at most 4 tiles).
MLLAMA_ASPECT_RATIOS = [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]


def _mllama(tiles: int = 1) -> tuple[Any, Any]:
    """LLaMA 3.2 Vision: 28-px tiles (one; or up to 4 in the real layouts with ``tiles=4``, where the processor pads
    every image to 4 tiles as the real one does), a cross-attention layer, gates opened."""
    import torch
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessorPil,
        MllamaProcessor,
    )

    specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|finetune_right_pad_id|>",
        "<|image|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
    ]
    tok, ids = _tokenizer(specials, bos_token=specials[0], eos_token="<|eot_id|>", pad_token=specials[2])
    tile = 28
    cfg = MllamaConfig(
        vision_config={
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_global_layers": 1,
            "attention_heads": 2,
            "intermediate_size": 128,
            "image_size": tile,
            "patch_size": 14,
            "max_num_tiles": tiles,
            "supported_aspect_ratios": [[1, 1]] if tiles == 1 else MLLAMA_ASPECT_RATIOS,
            "intermediate_layers_indices": [0],
            "vision_output_dim": 128,  # hidden_size * (1 + len(intermediate_layers_indices))
        },
        text_config=_text_config(
            tok,
            cross_attention_layers=[1],
            bos_token_id=ids["<|begin_of_text|>"],
            eos_token_id=[ids["<|end_of_text|>"], ids["<|eot_id|>"]],
            pad_token_id=ids["<|finetune_right_pad_id|>"],
        ),
        image_token_index=ids["<|image|>"],
    )
    model = MllamaForConditionalGeneration(cfg)
    with torch.no_grad():  # the tanh gates start at 0: the image would be ignored
        for name, param in model.named_parameters():
            if name.endswith("gate"):
                param.fill_(0.5)
    image_processor = MllamaImageProcessorPil(size={"height": tile, "width": tile}, max_image_tiles=tiles)
    return model, MllamaProcessor(image_processor=image_processor, tokenizer=tok, chat_template=MLLAMA_TEMPLATE)


def _qwen2_5_vl() -> tuple[Any, Any]:
    """Qwen2.5-VL: windowed vision attention, mrope, at most 4 image tokens; the image-only processor."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from medbench.models.hf_runtime import load_qwen_image_only_class

    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    tok, ids = _tokenizer(specials, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    cfg = Qwen2_5_VLConfig(
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
            "out_hidden_size": 64,
        },
        text_config=_text_config(
            tok,
            max_window_layers=2,
            # head_dim 32: the mrope sections must sum to head_dim // 2
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
            pad_token_id=ids["<|endoftext|>"],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    # At most 56x56 pixels: 4x4 patches, merged 2x2 -> up to 4 image tokens; fewer for elongated images.
    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56})
    processor = load_qwen_image_only_class()(
        image_processor=image_processor, tokenizer=tok, chat_template=QWEN_TEMPLATE
    )
    return model, processor


def _gemma3() -> tuple[Any, Any]:
    """Gemma 3: a SigLIP tower pooled to 4 soft tokens per image, the projection opened."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    specials = [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    ]
    tok, ids = _tokenizer(
        specials,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    image_size, patch, mm_tokens = 28, 7, 4  # 4x4 patches pooled to 2x2 = 4 soft tokens per image
    cfg = Gemma3Config(
        vision_config={"model_type": "siglip_vision_model", **_VISION, "image_size": image_size, "patch_size": patch},
        text_config=_text_config(
            tok,
            head_dim=32,
            query_pre_attn_scalar=32,
            sliding_window=64,
            pad_token_id=ids["<pad>"],
            eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]],
            bos_token_id=ids["<bos>"],
        ),
        mm_tokens_per_image=mm_tokens,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
    )
    model = Gemma3ForConditionalGeneration(cfg)
    import torch

    with torch.no_grad():  # zero-initialised projection: the image would be ignored
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.02)
    image_processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tok, chat_template=GEMMA3_TEMPLATE, image_seq_length=mm_tokens
    )
    return model, processor


def _llava() -> tuple[Any, Any]:
    """LLaVA-1.5: a CLIP tower, 4 image tokens (the CLS token dropped)."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    tok, ids = _tokenizer(specials, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    image_size, patch = 28, 14  # 2x2 patches (+CLS, dropped by the "default" strategy) -> 4 image tokens
    cfg = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            **_VISION,
            "image_size": image_size,
            "patch_size": patch,
            "projection_dim": 64,
        },
        text_config=_text_config(
            tok,
            model_type="llama",
            bos_token_id=ids["<s>"],
            eos_token_id=ids["</s>"],
            pad_token_id=ids["<pad>"],
        ),
        image_token_index=ids["<image>"],
        image_seq_length=(image_size // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(cfg)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    return model, processor


#: family (``model_type``) -> a function making its random model and processor, in memory.
BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "mllama": _mllama,
    "qwen2_5_vl": _qwen2_5_vl,
    "gemma3": _gemma3,
    "llava": _llava,
}

#: The families with a tiny model, in the order their default seeds follow (0, 1, 2, 3).
FAMILIES: tuple[str, ...] = tuple(BUILDERS)

#: Other layouts of a family, built on request only (never part of the every-family tests): ``mllama-4tiles`` has
#: the real checkpoint's 4 tiles and tile layouts, for the fast path's valid-tile trimming.
VARIANTS: dict[str, Callable[[], tuple[Any, Any]]] = {"mllama-4tiles": lambda: _mllama(tiles=4)}
