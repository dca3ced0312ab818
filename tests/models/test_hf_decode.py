"""The hf: adapter's decode settings (medbench.models.hf_decode, issue 14): a static key/value cache and a compiled
decode step on every family give the default's greedy outputs on tiny models (float32, CPU), each is really
in effect (the cache allocated, torch.compile called and its graphs run), and the setting is part of the identity."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
import transformers.generation.utils as generation_utils

from medbench.errors import UsageError
from medbench.models import hf_decode
from medbench.testing import FAMILIES, build_tiny_models

sys.path.insert(0, str(Path(__file__).parent))
from test_hf_fast import create, generated, requests


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    return build_tiny_models(tmp_path_factory.getbasetemp() / "tiny_vlms", reuse=True)  # shared with test_hf.py


@pytest.fixture
def static_caches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every static cache generate allocates (one per generate call that uses one)."""
    made: list[int] = []
    real = generation_utils.StaticCache

    class Counted(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(kwargs["max_cache_len"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(generation_utils, "StaticCache", Counted)
    return made


@pytest.mark.parametrize("family", FAMILIES)
def test_a_static_cache_gives_the_default_outputs(
    families: dict[str, tuple[Path, Path]], family: str, static_caches: list[int]
) -> None:
    reqs = requests([512, None], tasks=("slake", "vqa_rad"))
    path = families[family][0]
    dynamic = generated(create(path, batch_size="3"), reqs)
    assert not static_caches
    static = generated(create(path, batch_size="3", decode="static"), reqs)
    assert static_caches  # really in effect (generate would fall back to a dynamic cache silently otherwise)
    assert static == dynamic
    # batches of different prompt lengths get one cache shape (a compiled step is not compiled again per length)
    assert len(set(static_caches)) == 1 and static_caches[0] % hf_decode.CACHE_STEP == 0, static_caches


@pytest.mark.parametrize("family", FAMILIES)
def test_a_compiled_decode_step_gives_the_default_outputs(
    families: dict[str, tuple[Path, Path]], family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~20-40 s each on a 2-core CPU: inductor compiles the tiny model's decode step
    reqs = requests([512, None], tasks=("slake", "vqa_rad"))
    path = families[family][0]
    dynamic = generated(create(path, batch_size="3"), reqs)
    compiled_calls: list[int] = []
    real_compile = torch.compile

    def counting_compile(fn: Any, **kwargs: Any) -> Any:
        compiled = real_compile(fn, **kwargs)

        def call(*args: Any, **kw: Any) -> Any:
            compiled_calls.append(1)
            return compiled(*args, **kw)

        return call

    monkeypatch.setattr(torch, "compile", counting_compile)
    model = create(path, batch_size="3", decode="compiled")
    first = generated(model, reqs)
    assert compiled_calls  # the decode steps ran through the compiled function
    assert first == dynamic
    assert generated(model, reqs) == dynamic  # again, on the graphs compiled for these shapes


def test_the_setting_is_checked_and_part_of_the_identity(families: dict[str, tuple[Path, Path]]) -> None:
    path = families["llava"][0]
    default, static = create(path), create(path, decode="static")
    assert default.describe()["generation"]["decode"] == "dynamic"
    assert static.describe()["generation"]["decode"] == "static"
    assert default.fingerprint() != static.fingerprint() != create(path, decode="compiled").fingerprint()
    with pytest.raises(UsageError, match="decode must be one of dynamic, static, compiled"):
        create(path, decode="graphs")


def test_apply_sets_the_generation_config() -> None:
    from transformers import GenerationConfig

    assert hf_decode.apply(GenerationConfig(), "dynamic").cache_implementation is None
    static = hf_decode.apply(GenerationConfig(), "static")
    # static means the cache only: transformers would otherwise compile a static-cache decode on CUDA by itself
    assert (static.cache_implementation, static.disable_compile, static.compile_config) == ("static", True, None)
    compiled = hf_decode.apply(GenerationConfig(), "compiled")
    assert compiled.cache_implementation == "static" and not compiled.disable_compile
    assert compiled.compile_config.mode == "reduce-overhead" and compiled.compile_config._compile_all_devices
    with pytest.raises(ValueError, match="decode must be one of"):
        hf_decode.apply(GenerationConfig(), "eager")
