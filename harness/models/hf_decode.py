"""How the ``hf:`` adapter runs the decode steps after the prefill (option ``decode``).

Short-answer VQA generates ~16 tokens after a prefill of the image and a ~64-token prompt, and each of those decode
steps is one token per sequence through every layer: on a GPU it is bound by kernel launches and reading the
weights, not by arithmetic, so the prefill's compute is not the whole cost. The three settings:

* ``dynamic`` (the default): transformers' growing key/value cache, every step run op by op from Python.
* ``static``: the key/value cache allocated once per batch at its full length (prompt + new tokens; transformers
  keeps the longest length seen, so later batches reuse the shape) instead of grown by a concatenation per step and
  layer; steps still run op by op (transformers would compile a static-cache decode on CUDA by itself: switched
  off here, so that ``static`` means only the cache).
* ``compiled``: the static cache, and the decode step compiled with ``torch.compile`` through transformers' own
  path (``generation_config.compile_config``, mode ``reduce-overhead``: on CUDA a step is replayed as a CUDA graph
  instead of ~1,000 kernel launches from Python). The prefill is not compiled (its shapes change with every batch).
  The first batch of each new batch size pays the compilation (~40 s for the tiny Mllama on a 2-core CPU; on a GPU
  ``benchmarks/gpu_eval_throughput.py`` reports it apart from the throughput).

Neither is bit-identical by construction: with the static cache attention spans the cache's whole length (the
unused part masked), and compiled kernels fuse and round differently. In float32 on the tiny models every family
gives the default's greedy outputs (``tests/models/test_hf_decode.py``); in bf16 on the 11B model the benchmark
measures the agreement rather than assuming it. So the setting is part of the model's identity: the prediction
cache never serves one setting's outputs as another's.
"""

from __future__ import annotations

from typing import Any

#: ``decode`` values; the first is the default.
DECODES = ("dynamic", "static", "compiled")
#: The static cache's length is rounded up to a multiple of this: every batch of short-answer VQA (an image's tokens
#: and a prompt, plus 16-64 new tokens) then has the same cache shape, so the compiled step is not compiled (and its
#: CUDA graph not recorded) again for each new prompt length. Attention over the unused, masked part costs little
#: next to reading the weights at every step.
CACHE_STEP = 256


def apply(config: Any, decode: str) -> Any:
    """``config`` (a transformers ``GenerationConfig``) set up for ``decode``, in place, and returned."""
    if decode not in DECODES:
        raise ValueError(f"decode must be one of {', '.join(DECODES)}, not {decode!r}")
    if decode == "dynamic":
        return config
    config.cache_implementation = "static"
    if decode == "static":
        config.disable_compile = True
        config.compile_config = None
        return config
    from transformers import CompileConfig

    compile_config = CompileConfig()  # transformers' defaults: inductor, reduce-overhead, shapes made dynamic on
    # a recompile (so a smaller last batch compiles once more, not once per size)
    # Compile off CUDA too (transformers compiles on CUDA only unless asked): the CPU tests run the compiled step.
    compile_config._compile_all_devices = True  # type: ignore[assignment]  # (a None class default)
    config.disable_compile = False
    config.compile_config = compile_config
    return config


def size_cache(config: Any, decode: str, prompt_tokens: int) -> Any:
    """``config`` (one batch's copy, with its ``max_new_tokens``) given a static cache of ``prompt_tokens`` plus
    the new tokens rounded up to :data:`CACHE_STEP`; unchanged for ``dynamic``."""
    if decode != "dynamic":
        need = prompt_tokens + int(config.max_new_tokens)
        config.max_cache_len = -(-need // CACHE_STEP) * CACHE_STEP
    return config
