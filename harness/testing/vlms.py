"""Tiny random vision-language checkpoints saved as Hugging Face model folders, and LoRA adapters for them.

A saved folder (``config.json``, ``model.safetensors``, generation config, tokenizer, image processor, chat
template) loads with ``AutoModelForImageTextToText`` and :mod:`medbench.models.hf` like the real checkpoint of its
family, in about a second on a CPU. Like the real LLaMA 3.2 Vision Instruct checkpoint, every generation config asks
for sampling (``do_sample=True, temperature=0.6, top_p=0.9``): medbench must still decode greedily.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medbench.errors import UsageError
from medbench.testing.families import BUILDERS, FAMILIES, VARIANTS

#: Written last by :func:`build_tiny_models`: what a complete build in that folder holds.
RECORD = "tiny_models.json"

#: What the first LoRA adapter's seed is offset by from its model's (the models take seeds 0, 1, 2, 3).
LORA_SEED_OFFSET = 100


def family_seed(family: str) -> int:
    """``family``'s place in :data:`FAMILIES` (its default seed; 0 for a :data:`VARIANTS` layout), or a
    :class:`UsageError` naming the families."""
    if family in VARIANTS:
        return 0
    if family not in BUILDERS:
        raise UsageError(f"no tiny model of family {family!r}; the families are {', '.join(FAMILIES)}")
    return FAMILIES.index(family)


def build_tiny_model(family: str, out_dir: Path, seed: int = 0) -> Path:
    """Build the tiny ``family`` model (one of :data:`FAMILIES` or :data:`VARIANTS`) with random weights from
    ``seed`` and save it,
    with its processor, into ``out_dir`` (created; files already there are overwritten). Returns ``out_dir``.

    The same family and seed give the same files byte for byte, so a rebuild with another seed changes only
    ``model.safetensors`` (what a fine-tuning run overwriting its output folder does).
    """
    family_seed(family)  # checked before the heavy imports
    import torch
    from transformers import GenerationConfig

    torch.manual_seed(seed)
    model, processor = (BUILDERS.get(family) or VARIANTS[family])()
    text = model.config.get_text_config()
    model.generation_config = GenerationConfig(  # as in the real LLaMA 3.2 Vision Instruct: sampling by default
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
    if family == "qwen2_5_vl":  # look like the real checkpoint: name the stock processor class
        for name in ("processor_config.json", "tokenizer_config.json"):
            path = out_dir / name
            data = json.loads(path.read_text())
            data["processor_class"] = "Qwen2_5_VLProcessor"
            path.write_text(json.dumps(data, indent=2))
    return out_dir


def to_hub_layout(model_dir: Path) -> Path:
    """Rewrite a saved folder in place in the older layout some hub checkpoints ship (e.g.
    Qwen/Qwen2.5-VL-7B-Instruct): ``preprocessor_config.json`` (image processor + processor_class) and
    ``chat_template.json`` instead of ``processor_config.json`` and ``chat_template.jinja``. Returns ``model_dir``."""
    processor = json.loads((model_dir / "processor_config.json").read_text())
    image = {**processor.pop("image_processor"), "processor_class": processor["processor_class"]}
    (model_dir / "preprocessor_config.json").write_text(json.dumps(image, indent=2))
    (model_dir / "processor_config.json").unlink()
    template = (model_dir / "chat_template.jinja").read_text()
    (model_dir / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    (model_dir / "chat_template.jinja").unlink()
    return model_dir


def build_tiny_lora(model_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """A LoRA adapter (r=4, every linear layer) for the model saved in ``model_dir``, with random non-zero weights
    from ``seed`` so that it visibly changes the model's outputs, saved with ``save_pretrained`` into ``out_dir``
    like a trained adapter (its config records ``model_dir`` as the base). Returns ``out_dir``."""
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
    # peft keeps the module names it matched in a set, which it saves in hash order (a new order in every
    # process): sorted, the adapter's files, and so its fingerprint, are the same on every build.
    saved: Any = peft_model.peft_config["default"]  # a LoraConfig
    saved.target_modules = sorted(saved.target_modules)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


def build_tiny_models(
    root: Path, families: Sequence[str] = FAMILIES, *, reuse: bool = False
) -> dict[str, tuple[Path, Path]]:
    """family -> (model folder ``root/<family>``, LoRA adapter folder ``root/<family>-lora``) for each of
    ``families``. A family's seeds are its place in :data:`FAMILIES` (and that plus :data:`LORA_SEED_OFFSET` for
    its adapter), whichever families are asked for.

    ``reuse``: keep what an earlier call with ``reuse`` built in ``root`` for the same families (it writes
    :data:`RECORD` last, so an interrupted build is redone): test modules can share one build per session.
    """
    record = root / RECORD
    wanted = list(families)
    out = {family: (root / family, root / f"{family}-lora") for family in wanted}
    if reuse and record.is_file() and json.loads(record.read_text()).get("families") == wanted:
        return out
    for family, (model_dir, adapter_dir) in out.items():
        seed = family_seed(family)
        build_tiny_model(family, model_dir, seed=seed)
        build_tiny_lora(model_dir, adapter_dir, seed=LORA_SEED_OFFSET + seed)
    root.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"families": wanted}))
    return out
