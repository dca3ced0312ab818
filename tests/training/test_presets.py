"""LoRA placement presets (medbench.training.presets): exact 11B counts, full-path targets, per-component splits.

Every expected number here is derived by hand from the architecture (LoRA on a linear layer in -> out at rank r
adds r * (in + out) parameters), never copied from the function's output. Wrapped paths are read back from peft's
own ``get_peft_model``, so a regex that peft matches differently from medbench would fail here too.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from medbench.errors import UsageError
from medbench.training import presets
from medbench.training.presets import (
    PRESET_COMPONENTS,
    PRESETS,
    Counts,
    build_meta_model,
    count_params,
    format_counts,
    lora_config,
    main_count_params,
    matched_modules,
)

pytest.importorskip("peft")
torch = pytest.importorskip("torch")

# transformers' deprecation notice, raised from inside peft's get_peft_model
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

FAMILIES = ("mllama", "qwen2_5_vl", "gemma3", "llava")
PRESET_LIST = ("all-linear", "paper", "llm-only", "no-vision")

#: The test's own idea of where each family's parts live (prefixes of full module paths, transformers 5.x).
PARTS: dict[str, dict[str, str]] = {
    "mllama": {
        "vision": "model.vision_model.",
        "projector": "model.multi_modal_projector",
        "language": "model.language_model.",
    },
    "qwen2_5_vl": {
        "vision": "model.visual.blocks.",
        "projector": "model.visual.merger.",
        "language": "model.language_model.",
    },
    "gemma3": {
        "vision": "model.vision_tower.",
        "projector": "model.multi_modal_projector.",
        "language": "model.language_model.",
    },
    "llava": {
        "vision": "model.vision_tower.",
        "projector": "model.multi_modal_projector.",
        "language": "model.language_model.",
    },
}


def part_of(family: str, path: str) -> str:
    """The component ``path`` is in, by :data:`PARTS`; "other" for lm_head, embeddings and the like."""
    for part, prefix in PARTS[family].items():
        if path.startswith(prefix):
            return part
    return "other"


def lora(n_in: int, n_out: int, r: int = 32) -> int:
    """LoRA's trainable parameters on one linear layer: A is r x in, B is out x r."""
    return r * (n_in + n_out)


def wrapped(model: Any, family: str, preset: str, rank: int = 4) -> dict[str, Any]:
    """Full path -> base linear layer of every module peft's get_peft_model wraps with ``preset`` (on a copy)."""
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer

    peft_model = get_peft_model(copy.deepcopy(model), lora_config(family, preset, rank), low_cpu_mem_usage=True)
    return {
        name.removeprefix("base_model.model."): module.get_base_layer()
        for name, module in peft_model.named_modules()
        if isinstance(module, LoraLayer)
    }


# --- the real 11B Llama 3.2 Vision architecture, on the meta device --------------------------------------------


@pytest.fixture(scope="module")
def mllama_11b() -> Any:
    return build_meta_model(None)


@pytest.fixture(scope="module")
def counts_11b(mllama_11b: Any) -> dict[str, Counts]:
    return {preset: count_params(mllama_11b, "mllama", preset, 32) for preset in PRESET_LIST}


# The 11B architecture by hand (MllamaConfig() defaults, vision image_size 560; see gpu-probe.md).
HIDDEN, MLP, KV = 4096, 14336, 8 * 128  # text: 32 query heads of 128, 8 key/value heads
TEXT_LAYERS = 40  # 32 self-attention + 8 cross-attention layers: the same q/k/v/o and MLP shapes
V_HIDDEN, V_MLP, V_LAYERS = 1280, 5120, 32 + 8  # 32 local + 8 global vision layers
PROJ_IN = V_HIDDEN * (1 + 5)  # the projector reads the last layer plus 5 intermediate layers: 7680 -> 4096

LANGUAGE_11B = TEXT_LAYERS * (
    2 * lora(HIDDEN, HIDDEN)  # q, o
    + 2 * lora(HIDDEN, KV)  # k, v
    + 2 * lora(HIDDEN, MLP)  # gate, up
    + lora(MLP, HIDDEN)  # down
)
VISION_11B = V_LAYERS * (4 * lora(V_HIDDEN, V_HIDDEN) + lora(V_HIDDEN, V_MLP) + lora(V_MLP, V_HIDDEN))
PROJECTOR_11B = lora(PROJ_IN, HIDDEN)


def test_the_11b_model_is_llama_3_2_vision(mllama_11b: Any) -> None:
    # HF's published total for Llama-3.2-11B-Vision; a wrong image_size (448) would change the position embeddings
    assert sum(p.numel() for p in mllama_11b.parameters()) == 10_670_220_835
    assert next(mllama_11b.parameters()).device.type == "meta"  # no weights allocated


def test_the_hand_derivation_gives_the_published_figures() -> None:
    assert VISION_11B + PROJECTOR_11B + LANGUAGE_11B == 134_725_632  # peft all-linear, measured on the H100 too
    assert VISION_11B + LANGUAGE_11B == 134_348_800  # the paper's "134M, 1.24%"


@pytest.mark.parametrize(
    ("preset", "vision", "projector", "language"),
    [
        ("all-linear", VISION_11B, PROJECTOR_11B, LANGUAGE_11B),
        ("paper", VISION_11B, 0, LANGUAGE_11B),
        ("llm-only", 0, 0, LANGUAGE_11B),
        ("no-vision", 0, PROJECTOR_11B, LANGUAGE_11B),
    ],
)
def test_11b_counts_per_component(
    counts_11b: dict[str, Counts], preset: str, vision: int, projector: int, language: int
) -> None:
    c = counts_11b[preset]
    assert dict(c.trainable) == {"vision": vision, "projector": projector, "language": language, "other": 0}
    assert c.total_trainable == vision + projector + language
    assert c.base_params == 10_670_220_835
    assert c.share == pytest.approx(c.total_trainable / (c.base_params + c.total_trainable))
    # 40 vision layers x 6 linears, one projector, 40 text layers x 7 linears
    expected_modules = {
        "vision": 240 * bool(vision),
        "projector": 1 * bool(projector),
        "language": 280,
        "other": 0,
    }
    assert dict(c.modules) == expected_modules


def test_the_two_headline_figures(counts_11b: dict[str, Counts]) -> None:
    assert counts_11b["all-linear"].total_trainable == 134_725_632
    assert counts_11b["paper"].total_trainable == 134_348_800
    assert round(100 * counts_11b["paper"].share, 4) == 1.2434  # the paper's 1.24 %, as peft prints it
    assert round(100 * counts_11b["all-linear"].share, 4) == 1.2469
    assert counts_11b["llm-only"].total_trainable == 104_857_600
    assert counts_11b["no-vision"].total_trainable == 105_234_432


@pytest.mark.parametrize("preset", PRESET_LIST)
def test_11b_wrapped_paths_stay_in_their_components(mllama_11b: Any, preset: str) -> None:
    # Guards the shared-suffix pitfall: q/k/v/o_proj exist in the vision tower too, so a suffix list adapts it.
    paths = wrapped(mllama_11b, "mllama", preset)
    parts = {part_of("mllama", p) for p in paths}
    assert parts == set(PRESET_COMPONENTS[preset])
    assert not any("lm_head" in p or "embed" in p for p in paths)
    if preset in ("llm-only", "no-vision"):
        assert not any(p.startswith("model.vision_model") for p in paths)
    if preset == "paper":
        assert "model.multi_modal_projector" not in paths
    # the cross-attention layers (3, 8, ..., 38) are adapted like the self-attention ones
    assert "model.language_model.layers.38.cross_attn.k_proj" in paths
    assert "model.language_model.layers.37.self_attn.k_proj" in paths


def test_all_linear_is_what_peft_calls_all_linear_on_mllama(mllama_11b: Any) -> None:
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    cfg = LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")
    theirs = get_peft_model(copy.deepcopy(mllama_11b), cfg, low_cpu_mem_usage=True)
    names = {n.removeprefix("base_model.model.") for n, m in theirs.named_modules() if isinstance(m, LoraLayer)}
    assert names == set(wrapped(mllama_11b, "mllama", "all-linear"))


def test_counting_leaves_the_model_unwrapped(mllama_11b: Any) -> None:
    # count_params works on a copy: the module fixture must stay a plain Mllama for the other tests
    count_params(mllama_11b, "mllama", "llm-only", 8)
    assert not any("lora_" in name for name, _ in mllama_11b.named_modules())
    assert all(p.requires_grad for p in mllama_11b.parameters())


def test_format_counts_is_a_table_per_component(counts_11b: dict[str, Counts]) -> None:
    text = format_counts(counts_11b["paper"])
    assert "'paper' on mllama at rank 32" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:7]}
    assert rows["vision"] == ["240", f"{VISION_11B:,}", "0.2730%"]
    assert rows["projector"] == ["0", "0", "0.0000%"]
    assert rows["total"] == ["520", "134,348,800", "1.2434%"]
    assert "10,670,220,835" in text


# --- every family: the tiny models and the default (full-size) configs on meta --------------------------------


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, Any]:
    from medbench.testing.families import BUILDERS

    torch.manual_seed(0)
    return {family: BUILDERS[family]()[0] for family in FAMILIES}


def default_meta_model(family: str) -> Any:
    """``family``'s transformers default config (a full-size architecture) built on the meta device."""
    import transformers

    config, model = {
        "mllama": ("MllamaConfig", "MllamaForConditionalGeneration"),
        "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"),
        "gemma3": ("Gemma3Config", "Gemma3ForConditionalGeneration"),
        "llava": ("LlavaConfig", "LlavaForConditionalGeneration"),
    }[family]
    with torch.device("meta"):
        return getattr(transformers, model)(getattr(transformers, config)())


def expected_all_linear(model: Any, family: str) -> set[str]:
    """What ``all-linear`` must wrap: every nn.Linear but lm_head, and on Gemma 3 but the SigLIP pooling head
    (unused by Gemma 3; its attention is an nn.MultiheadAttention)."""
    return {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and name != "lm_head"
        and not (family == "gemma3" and name.startswith("model.vision_tower.head."))
    }


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("preset", PRESET_LIST)
def test_tiny_models_presets_wrap_and_split_by_component(tiny_models: dict[str, Any], family: str, preset: str) -> None:
    model = tiny_models[family]
    paths = wrapped(model, family, preset, rank=4)
    assert paths, f"{preset} wraps nothing on {family}"
    parts = {part_of(family, p) for p in paths}
    expected_parts = set(PRESET_COMPONENTS[preset])
    if family == "gemma3":
        expected_parts.discard("projector")  # a bare weight matrix, no nn.Linear to wrap
    assert parts == expected_parts
    assert not any("lm_head" in p or "embed" in p for p in paths)
    assert all(isinstance(m, torch.nn.Linear) for m in paths.values())
    if preset == "all-linear":
        assert set(paths) == expected_all_linear(model, family)

    # the split: the test's own classification and r * (in + out) of the base layers peft wrapped
    by_part = dict.fromkeys(("vision", "projector", "language", "other"), 0)
    modules = dict.fromkeys(by_part, 0)
    for path, base in paths.items():
        by_part[part_of(family, path)] += lora(base.in_features, base.out_features, 4)
        modules[part_of(family, path)] += 1
    c = count_params(model, family, preset, 4)
    assert (dict(c.trainable), dict(c.modules)) == (by_part, modules)
    assert c.base_params == sum(p.numel() for p in model.parameters())


def test_tiny_mllama_by_hand(tiny_models: dict[str, Any]) -> None:
    # 64 wide, MLP 128, one 32-wide kv head; vision 64 / 128 with 2 local + 1 global layers; projector 128 -> 64
    text_layer = 2 * lora(64, 64, 4) + 2 * lora(64, 32, 4) + 2 * lora(64, 128, 4) + lora(128, 64, 4)
    vision_layer = 4 * lora(64, 64, 4) + 2 * lora(64, 128, 4)
    c = count_params(tiny_models["mllama"], "mllama", "all-linear", 4)
    assert dict(c.trainable) == {
        "vision": 3 * vision_layer,
        "projector": lora(128, 64, 4),
        "language": 2 * text_layer,
        "other": 0,
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_default_configs_on_meta_have_the_known_layout(family: str) -> None:
    # The full-size layouts (72B-class Qwen2.5-VL default, Gemma 3 4B, LLaVA 7B, Mllama) match like the tiny ones.
    model = default_meta_model(family)
    for preset in PRESET_LIST:
        found = matched_modules(model, family, preset)
        assert {k for k, v in found.items() if v} == set(PRESET_COMPONENTS[preset]) - (
            {"projector"} if family == "gemma3" else set()
        )
        assert all(part_of(family, p) == part for part, paths in found.items() for p in paths)
    everything = {p for paths in matched_modules(model, family, "all-linear").values() for p in paths}
    assert everything == expected_all_linear(model, family)


# --- errors --------------------------------------------------------------------------------------------------


def test_preset_names_match_the_training_config() -> None:
    from medbench.training.config import PRESET_NAMES

    assert tuple(PRESET_COMPONENTS) == PRESET_NAMES == PRESET_LIST
    assert set(PRESETS) == set(FAMILIES)


def test_a_bad_preset_lists_the_presets(tiny_models: dict[str, Any]) -> None:
    for call in (
        lambda: lora_config("mllama", "vision-only"),
        lambda: count_params(tiny_models["mllama"], "mllama", "vision-only"),
        lambda: main_count_params("vision-only", None, 32),
    ):
        with pytest.raises(UsageError, match="unknown LoRA preset 'vision-only'") as info:
            call()
        assert all(name in str(info.value) for name in PRESET_LIST)


def test_bad_family_rank_and_dropout_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="the families are mllama, qwen2_5_vl, gemma3, llava"):
        lora_config("bert", "paper")
    with pytest.raises(UsageError, match="rank"):
        lora_config("mllama", "paper", rank=0)
    with pytest.raises(UsageError, match="dropout"):
        lora_config("mllama", "paper", dropout=1.0)
    with pytest.raises(UsageError, match="--rank"):
        main_count_params("paper", None, 0)


def test_lora_config_carries_the_preset_regex() -> None:
    cfg = lora_config("qwen2_5_vl", "no-vision", rank=16)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (16, 32, 0.05)  # alpha 2 x rank by default
    assert cfg.target_modules == PRESETS["qwen2_5_vl"]["no-vision"]
    assert re.fullmatch(cfg.target_modules, "model.visual.merger.mlp.2")
    assert not re.fullmatch(cfg.target_modules, "model.visual.merger.mlp.1")  # the GELU between the two linears
    assert not re.fullmatch(cfg.target_modules, "model.visual.blocks.0.attn.qkv")
    assert lora_config("mllama", "paper", rank=8, alpha=8).lora_alpha == 8


def test_a_model_of_another_layout_is_refused(tiny_models: dict[str, Any]) -> None:
    # e.g. a renamed module tree in another transformers version: no silent "vision LoRA on nothing"
    with pytest.raises(UsageError, match="matches no vision module of this LlavaForConditionalGeneration"):
        count_params(tiny_models["llava"], "mllama", "paper")
    # a path that names a non-linear module: medbench's message, not peft's "Target module ... is not supported"
    with pytest.raises(UsageError, match=r"matches model\.multi_modal_projector, a LlavaMultiModalProjector"):
        count_params(tiny_models["llava"], "mllama", "all-linear")


# --- build_meta_model and the command ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_config_dir(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Any]) -> Path:
    out = tmp_path_factory.mktemp("qwen_config")
    tiny_models["qwen2_5_vl"].config.save_pretrained(out)  # config.json only: no weights needed
    return out


def test_build_meta_model_from_a_local_config(tiny_config_dir: Path, tiny_models: dict[str, Any]) -> None:
    for where in (tiny_config_dir, tiny_config_dir / "config.json"):
        meta = build_meta_model(str(where))
        assert type(meta).__name__ == "Qwen2_5_VLForConditionalGeneration"
        assert next(meta.parameters()).device.type == "meta"
        assert sum(p.numel() for p in meta.parameters()) == sum(
            p.numel() for p in tiny_models["qwen2_5_vl"].parameters()
        )


def test_build_meta_model_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"download the model's config\.json first"):
        build_meta_model("meta-llama/Llama-3.2-11B-Vision-Instruct")
    with pytest.raises(UsageError, match=r"has no config\.json"):
        build_meta_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UsageError, match=r"config\.json: not a readable JSON config"):
        build_meta_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UsageError, match="model_type 'bert' has no LoRA presets; the families are mllama"):
        build_meta_model(str(tmp_path))


def test_main_count_params_prints_the_table(tiny_config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_count_params("no-vision", str(tiny_config_dir), 4) == 0
    out = capsys.readouterr().out
    assert "LoRA preset 'no-vision' on qwen2_5_vl at rank 4" in out
    # tiny Qwen2.5-VL merger: 256 -> 256 -> 64 at rank 4; no vision block adapted
    assert re.search(rf"projector\s+2\s+{lora(256, 256, 4) + lora(256, 64, 4):,}\s", out)
    assert re.search(r"vision\s+0\s+0\s", out)


def test_family_is_read_from_the_config(tiny_models: dict[str, Any]) -> None:
    assert [presets.family_of(tiny_models[f]) for f in FAMILIES] == list(FAMILIES)
