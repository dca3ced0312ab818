"""Tiny, randomly initialised vision-language models of the four families medbench evaluates, built offline.

Each builder writes a Hugging Face model directory (``config.json``, ``model.safetensors``, generation config,
tokenizer, image processor, chat template) that loads with ``AutoModelForImageTextToText`` like the real
checkpoints: ``mllama`` (LLaMA 3.2 Vision), ``qwen2_5_vl`` (Qwen2.5-VL), ``gemma3`` (Gemma 3) and ``llava``
(LLaVA-1.5). Nothing is downloaded: configs are written by hand, the tokenizer is a tiny byte-level BPE trained
on a few sentences, and the image processors are the PIL-backend classes (no torchvision needed).

Traps handled here (the adapter under test must cope with real checkpoints the same way):

* Mllama zero-initialises its tanh gates and Gemma3 its image projection, so a fresh model ignores the image;
  both are opened here so that the image actually changes the output.
* The Qwen2.5-VL processor cannot be built without torchvision; the directory is written with the stock
  ``processor_class`` (as the real checkpoint has) using medbench's image-only fallback class.
* Every generation config asks for sampling (``do_sample=True, temperature=0.6, top_p=0.9``) as the real
  LLaMA 3.2 Vision Instruct one does: the adapter must still decode greedily and deterministically.
* Linear layers are >= 64 wide and multiples of 32 (bitsandbytes' CPU 4-bit kernel needs that), and the model
  vocabulary is the tokenizer's rounded up to 64, so generated ids can lie past the tokenizer (they decode to "").
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

CORPUS = [
    "The chest X-ray shows no acute cardiopulmonary abnormality.",
    "Axial CT of the abdomen demonstrates a small hypodense lesion in the liver.",
    "MRI brain: no evidence of acute infarct or hemorrhage.",
    "What abnormality is seen in this image? Answer: pleural effusion.",
    "Is there a fracture? yes no. Describe the findings in the image.",
    "You are an experienced radiologist. Answer the question about the medical image with a word or phrase.",
    "user assistant system model The answer is: normal study.",
]

FAMILIES = ("mllama", "qwen2_5_vl", "gemma3", "llava")


def _tokenizer(special_tokens: list[str], **named: Any) -> Any:
    """A byte-level BPE (never emits <unk>) with ``special_tokens`` first, wrapped as a fast HF tokenizer."""
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
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named)


def _vocab(tok: Any) -> int:
    return -(-len(tok) // 64) * 64


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


def _mllama() -> tuple[Any, Any]:
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
    tok = _tokenizer(specials, bos_token=specials[0], eos_token="<|eot_id|>", pad_token=specials[2])
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
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
            "max_num_tiles": 1,
            "supported_aspect_ratios": [[1, 1]],
            "intermediate_layers_indices": [0],
            "vision_output_dim": 128,  # hidden_size * (1 + len(intermediate_layers_indices))
        },
        text_config={
            "vocab_size": _vocab(tok),
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "intermediate_size": 128,
            "cross_attention_layers": [1],
            "max_position_embeddings": 512,
            "bos_token_id": ids["<|begin_of_text|>"],
            "eos_token_id": [ids["<|end_of_text|>"], ids["<|eot_id|>"]],
            "pad_token_id": ids["<|finetune_right_pad_id|>"],
        },
        image_token_index=ids["<|image|>"],
    )
    model = MllamaForConditionalGeneration(cfg)
    with torch.no_grad():  # the tanh gates start at 0: the image would be ignored
        for name, param in model.named_parameters():
            if name.endswith("gate"):
                param.fill_(0.5)
    image_processor = MllamaImageProcessorPil(size={"height": tile, "width": tile}, max_image_tiles=1)
    return model, MllamaProcessor(image_processor=image_processor, tokenizer=tok, chat_template=MLLAMA_TEMPLATE)


def _qwen2_5_vl() -> tuple[Any, Any]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from medbench.models.hf_families import load_qwen_image_only_class

    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    tok = _tokenizer(specials, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
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
        text_config={
            "vocab_size": _vocab(tok),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 512,
            "max_window_layers": 2,
            # head_dim 32: the mrope sections must sum to head_dim // 2
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
            "pad_token_id": ids["<|endoftext|>"],
        },
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
    tok = _tokenizer(
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
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    image_size, patch, mm_tokens = 28, 7, 4  # 4x4 patches pooled to 2x2 = 4 soft tokens per image
    cfg = Gemma3Config(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch,
        },
        text_config={
            "vocab_size": _vocab(tok),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "query_pre_attn_scalar": 32,
            "sliding_window": 64,
            "max_position_embeddings": 512,
            "pad_token_id": ids["<pad>"],
            "eos_token_id": [ids["<eos>"], ids["<end_of_turn>"]],
            "bos_token_id": ids["<bos>"],
        },
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
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    tok = _tokenizer(specials, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    image_size, patch = 28, 14  # 2x2 patches (+CLS, dropped by the "default" strategy) -> 4 image tokens
    cfg = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch,
            "projection_dim": 64,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": _vocab(tok),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 512,
            "bos_token_id": ids["<s>"],
            "eos_token_id": ids["</s>"],
            "pad_token_id": ids["<pad>"],
        },
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


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "mllama": _mllama,
    "qwen2_5_vl": _qwen2_5_vl,
    "gemma3": _gemma3,
    "llava": _llava,
}


def build(family: str, out_dir: Path, seed: int = 0) -> Path:
    """Build the tiny ``family`` model and save it (model + processor) into ``out_dir``."""
    import torch
    from transformers import GenerationConfig

    torch.manual_seed(seed)
    model, processor = BUILDERS[family]()
    text = model.config.get_text_config()
    # As in the real LLaMA 3.2 Vision Instruct checkpoint: sampling by default.
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        pad_token_id=processor.tokenizer.pad_token_id,
        do_sample=True,
        temperature=0.6,
        top_p=0.9,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    if family == "qwen2_5_vl":  # look like the real checkpoint: the stock processor class
        for name in ("processor_config.json", "tokenizer_config.json"):
            path = out_dir / name
            data = json.loads(path.read_text())
            data["processor_class"] = "Qwen2_5_VLProcessor"
            path.write_text(json.dumps(data, indent=2))
    return out_dir


def to_hub_layout(model_dir: Path) -> Path:
    """Rewrite a saved directory in the older layout the hub checkpoints ship (e.g. Qwen/Qwen2.5-VL-7B-Instruct):
    ``preprocessor_config.json`` (image processor + processor_class) and ``chat_template.json`` instead of
    ``processor_config.json`` and ``chat_template.jinja``."""
    processor = json.loads((model_dir / "processor_config.json").read_text())
    image = {**processor.pop("image_processor"), "processor_class": processor["processor_class"]}
    (model_dir / "preprocessor_config.json").write_text(json.dumps(image, indent=2))
    (model_dir / "processor_config.json").unlink()
    template = (model_dir / "chat_template.jinja").read_text()
    (model_dir / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    (model_dir / "chat_template.jinja").unlink()
    return model_dir


def build_lora(model_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """A LoRA adapter (r=4, all linear layers) for the model in ``model_dir``, with random (non-zero) weights so
    that it visibly changes the model's outputs; saved with ``save_pretrained`` like a trained adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in 5.x: not ours to act on
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, config)
    with torch.no_grad():  # peft's random init is small; make the adapter matter
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


def build_all(root: Path, families: tuple[str, ...] = FAMILIES) -> dict[str, tuple[Path, Path]]:
    """Every family under ``root/<family>`` with its adapter under ``root/<family>-lora``."""
    out = {}
    for i, family in enumerate(families):
        model_dir = build(family, root / family, seed=i)
        out[family] = (model_dir, build_lora(model_dir, root / f"{family}-lora", seed=100 + i))
    return out


if __name__ == "__main__":
    import sys

    for fam, (m, a) in build_all(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny_vlms")).items():
        print(fam, m, a)
