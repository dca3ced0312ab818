"""Offline test fixtures: tiny random models that load and run like the real checkpoints medbench evaluates, for
medbench's own tests, for tests of code built on it, and for trying the Hugging Face path without downloads.

* :func:`build_tiny_model` saves a tiny image-text-to-text model of a family in :data:`FAMILIES` (``mllama``,
  ``qwen2_5_vl``, ``gemma3``, ``llava``): config, weights, tokenizer, processor and chat template, in about a
  second on a CPU. :func:`build_tiny_lora` saves a random LoRA adapter for one, :func:`build_tiny_models` all of
  them (with adapters), :func:`to_hub_layout` rewrites a folder in the older hub layout.
* :func:`build_tiny_judge` saves a tiny causal LM judge whose reply is scripted, for ``--judge hf:<folder>``.
* :func:`main` / :func:`configure_parser`: ``medbench testing tiny-model [--family F] [--lora DIR] OUT``.

The weights are random: outputs are gibberish, deterministic for a seed. Importing this package is cheap: torch,
transformers, tokenizers and peft are imported by the functions that use them.
"""

from medbench.testing.cli import cmd_tiny_model, configure_parser, main
from medbench.testing.families import FAMILIES
from medbench.testing.judge import build_tiny_judge
from medbench.testing.vlms import build_tiny_lora, build_tiny_model, build_tiny_models, family_seed, to_hub_layout

__all__ = [
    "FAMILIES",
    "build_tiny_judge",
    "build_tiny_lora",
    "build_tiny_model",
    "build_tiny_models",
    "cmd_tiny_model",
    "configure_parser",
    "family_seed",
    "main",
    "to_hub_layout",
]
