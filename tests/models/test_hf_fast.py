"""The hf: adapter's fast path (medbench issue 14) against its naive path, on tiny models on the CPU: the same greedy
outputs on every family, each batch's images encoded once per generation, batch 1 == batch N; Mllama with the real
4-tile layout: why padded tiles are computed by default, and the opt-in valid-tiles path (exact embeddings, 1 tile
encoded); the background preparation of the next batch and the automatic batch size."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from PIL import Image

from medbench import registry
from medbench.errors import UsageError
from medbench.models import hf_fast
from medbench.models.hf_runtime import batch_inputs
from medbench.prompts import render_prompt
from medbench.schema import Request
from medbench.tasks.base import LoadOptions, locate
from medbench.testing import FAMILIES, build_tiny_model, build_tiny_models

sys.path.insert(0, str(Path(__file__).parent))
from test_hf import run

MAX_NEW_TOKENS = 6


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Mllama with the real checkpoint's 4 tiles: a 28-px square image fills 1 tile, a 56-px one 4."""
    return build_tiny_model("mllama-4tiles", tmp_path_factory.mktemp("mllama4") / "model")


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    return build_tiny_models(tmp_path_factory.getbasetemp() / "tiny_vlms", reuse=True)  # shared with test_hf.py


def requests(sizes: list[int | None], tasks: tuple[str, ...] = ("slake", "vqa_rad", "pathvqa")) -> list[Request]:
    """Demo VQA requests, the i-th image opened at ``sizes[i % len(sizes)]`` px (None: its own size)."""
    out: list[Request] = []
    for name in tasks:
        task = registry.get_task(name)
        for s in task.load(locate(task, "test", data_dir=None, demo=True), "test", LoadOptions()).samples[:4]:
            size = sizes[len(out) % len(sizes)]
            prompt = render_prompt("role", task.kind, s.question)
            out.append(Request(s.id, name, task.kind, prompt, s.question, s.image, size, MAX_NEW_TOKENS))
    return out


def create(path: Path, **options: Any) -> Any:
    return registry.create_model(f"hf:{path}", device="cpu", **options)


def generated(model: Any, reqs: list[Request]) -> tuple[list[str], list[list[int]]]:
    """Outputs (in request order), and every new token id of each generated row, padding included (in the order the
    model generated them), through ``generate``."""
    return run(model, reqs, cut_at_eos=False)


def vision_tiles(model: Any) -> list[int]:
    """Hook the vision encoder; the list gets the tile count of every call."""
    seen: list[int] = []
    (vision,) = [m for m in model.model.modules() if type(m).__name__ == "MllamaVisionModel"]

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        seen.append(pixels.shape[2])

    vision.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def test_trim_tiles_cuts_the_tile_axis_to_the_most_valid_tiles(tiled: Path) -> None:
    model = create(tiled)
    small, large = (Image.new("RGB", (n, n), (120, 30, 200)) for n in (28, 56))
    inputs = batch_inputs(model.processor, [small, small], ["a", "bb"])
    assert tuple(inputs["pixel_values"].shape[2:3]) == (4,)  # padded to 4, as the real processor does
    assert inputs["aspect_ratio_mask"].tolist() == [[[1, 0, 0, 0]], [[1, 0, 0, 0]]]
    trimmed = hf_fast.trim_tiles(inputs)
    assert trimmed["pixel_values"].shape[2] == 1 and trimmed["aspect_ratio_mask"].shape[-1] == 1
    assert trimmed["cross_attention_mask"].shape[-1] == 1
    mixed = batch_inputs(model.processor, [small, large], ["a", "bb"])
    assert hf_fast.trim_tiles(mixed)["pixel_values"].shape[2] == 4  # one image fills 4 tiles: nothing to cut


@pytest.mark.parametrize("sizes", [[28], [28, 56], [None]], ids=["one-tile", "mixed", "original-size"])
def test_mllama_fast_path_gives_the_naive_outputs(tiled: Path, sizes: list[int | None]) -> None:
    reqs = requests(sizes)
    naive, fast = create(tiled, fast="false", batch_size="4"), create(tiled, batch_size="4")
    naive_tiles, fast_tiles = vision_tiles(naive), vision_tiles(fast)
    naive_texts, naive_ids = generated(naive, reqs)
    fast_texts, fast_ids = generated(fast, reqs)
    assert fast_texts == naive_texts
    assert sorted(fast_ids) == sorted(naive_ids)  # batched in another order (by prompt length), same rows
    assert set(naive_tiles) == set(fast_tiles) == {4}  # every image padded to 4 tiles, as the model computes
    assert len(fast_tiles) == len(naive_tiles) == 3  # 12 requests in batches of 4: one encoder call per batch


def test_valid_tiles_only_encodes_the_valid_tiles_and_is_recorded(tiled: Path) -> None:
    reqs = requests([28])
    trimmed = create(tiled, vision_tiles="valid", batch_size="4")
    seen = vision_tiles(trimmed)
    texts, _ = generated(trimmed, reqs)
    assert len(texts) == len(reqs) and set(seen) == {1} and len(seen) == 3  # 1 valid tile of 4, once per batch
    assert trimmed.describe()["generation"]["vision_tiles"] == "valid"
    assert trimmed.fingerprint() != create(tiled).fingerprint()  # never served as the model's own outputs
    mixed = create(tiled, vision_tiles="valid", batch_size="2")
    seen = vision_tiles(mixed)
    generated(mixed, requests([28, 56]))
    assert 4 in seen and set(seen) <= {1, 4}  # a batch holding a 56-px image keeps its 4 tiles


def test_padded_tiles_change_mllama_outputs_so_skipping_them_is_not_the_default(tiled: Path) -> None:
    # Why vision_tiles=valid is opt-in: the model's vision mask blocks only padding-to-padding attention, and text
    # before <|image|> attends uniformly to every vision token, so padded tiles enter the logits. If transformers
    # ever masks them fully, this fails: then trimming may become the default (the embedding slicing is exact:
    # the next test checks it with the vision encoder alone).
    naive, trimmed = create(tiled, fast="false"), create(tiled, vision_tiles="valid")
    trimmed.load()
    reqs = requests([28])[:4]
    images = [r.image.open(r.image_size) for r in reqs]
    padded = batch_inputs(naive.processor, images, [r.prompt for r in reqs])
    cut = hf_fast.trim_tiles(batch_inputs(trimmed.processor, images, [r.prompt for r in reqs]))
    assert cut["pixel_values"].shape[2] == 1
    with torch.inference_mode():
        want = naive.model(**padded).logits
        got = trimmed.model(**cut).logits
    assert float((got - want).abs().max()) > 1e-3


def test_the_sliced_tile_embeddings_are_exact(tiled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With a vision mask that blocks every padded key, the valid tile's encoder output must be the padded run's.
    import transformers.models.mllama.modeling_mllama as mllama

    def key_mask(aspect_ratio_mask: Any, num_patches: int, target_length: int, dtype: Any) -> Any:
        batch, tiles = aspect_ratio_mask.shape
        valid = aspect_ratio_mask.view(batch, tiles, 1).to(dtype).repeat(1, 1, target_length)
        valid[:, :, num_patches:] = 0
        blocked = (1 - valid).reshape(batch, 1, 1, tiles * target_length) * torch.finfo(dtype).min
        return blocked.expand(batch, 1, tiles * target_length, tiles * target_length)

    monkeypatch.setattr(mllama, "_prepare_aspect_ratio_attention_mask", key_mask)
    naive, trimmed = create(tiled, fast="false"), create(tiled, vision_tiles="valid")
    trimmed.load()
    images = [Image.new("RGB", (28, 28), c) for c in ((120, 30, 200), (20, 130, 20))]
    padded = batch_inputs(naive.processor, images, ["a", "b"])
    cut = hf_fast.trim_tiles(batch_inputs(trimmed.processor, images, ["a", "b"]))
    keys = ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")
    (vision_a,) = [m for m in naive.model.modules() if type(m).__name__ == "MllamaVisionModel"]
    (vision_b,) = [m for m in trimmed.model.modules() if type(m).__name__ == "MllamaVisionModel"]
    with torch.inference_mode():
        want = vision_a(**{k: padded[k] for k in keys}).last_hidden_state[:, :, :1]
        got = vision_b(**{k: cut[k] for k in keys}).last_hidden_state
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6), float((got - want).abs().max())


def test_fast_mllama_batch_1_equals_batch_n(tiled: Path) -> None:
    reqs = requests([28, 56, None])
    one, many = generated(create(tiled, batch_size="1"), reqs), generated(create(tiled, batch_size="5"), reqs)
    assert one[0] == many[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_fast_equals_naive(families: dict[str, tuple[Path, Path]], family: str) -> None:
    reqs = requests([512, None], tasks=("slake", "vqa_rad"))
    path = families[family][0]
    naive = generated(create(path, fast="false", batch_size="3"), reqs)
    fast = generated(create(path, batch_size="3"), reqs)
    assert fast[0] == naive[0]


def test_the_path_is_part_of_the_identity_and_the_option_is_checked(tiled: Path) -> None:
    naive, fast = create(tiled, fast="false"), create(tiled)
    assert naive.describe()["generation"]["path"] == "naive"
    assert fast.describe()["generation"]["path"] == "fast"
    assert fast.describe()["generation"]["vision_tiles"] == "all"
    assert naive.fingerprint() != fast.fingerprint()  # a comparison of the two paths generates both
    with pytest.raises(UsageError, match="fast must be true or false"):
        create(tiled, fast="maybe")
    with pytest.raises(UsageError, match="vision_tiles must be one of"):
        create(tiled, vision_tiles="some")


def test_prefetch_hands_over_only_the_batch_it_built() -> None:
    built: list[list[int]] = []
    lock = threading.Lock()

    def build(items: Any) -> Any:
        assert lock.locked()  # every build holds the tokenizer lock
        built.append(list(items))
        if items == [9]:
            raise ValueError("bad image")
        return [x * 10 for x in items]

    prefetch = hf_fast.Prefetch(build, lock)
    a, b = [1, 2], [3]
    prefetch.submit(a)
    assert prefetch.take(list(a)) == [10, 20]  # equal lists of the same objects
    prefetch.submit(a)
    assert prefetch.take(b) is None and prefetch.take(a) is None  # not what was asked for: dropped, built in place
    bad = [9]
    prefetch.submit(bad)
    with pytest.raises(ValueError, match="bad image"):  # raised where building in place would raise it
        prefetch.take(bad)
    prefetch.close()


def test_next_batch_size_follows_the_measured_footprint() -> None:
    gib = 2**30
    # 20 GiB of weights, a batch of 32 peaked 8 GiB above them: 0.25 GiB per sample; 80 GiB x 0.85 - 20 fits 192
    assert hf_fast.next_batch_size(32, 32, 28 * gib, 20 * gib, 80 * gib) == 64  # at most doubling
    assert hf_fast.next_batch_size(128, 128, 52 * gib, 20 * gib, 80 * gib) == 192
    assert hf_fast.next_batch_size(16, 16, 78 * gib, 20 * gib, 80 * gib) == 16  # full: never below what just ran
    assert hf_fast.next_batch_size(256, 256, 21 * gib, 20 * gib, 80 * gib, limit=300) == 300
    assert hf_fast.next_batch_size(1, 0, 0, 0, 0) == 1


def test_a_multi_model_run_frees_each_model_before_the_next_loads(
    families: dict[str, tuple[Path, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Guards GPU memory in `medbench run --models a,b`: a's weights must be gone (not merely unreferenced by the
    # adapter) when b loads, or two models' weights would share the GPU.
    import gc
    import weakref

    from medbench.cli import main
    from medbench.models import hf

    alive_at_load: list[list[bool]] = []
    loaded: list[weakref.ref[Any]] = []
    real = hf.HFModel._load_model

    def spy(self: Any) -> Any:
        gc.collect()
        alive_at_load.append([ref() is not None for ref in loaded])
        model = real(self)
        loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(hf.HFModel, "_load_model", spy)
    models = f"hf:{families['mllama'][0]},hf:{families['llava'][0]}"
    args = ["run", "--demo", "--models", models, "--tasks", "vqa_rad", "--limit", "2", "--no-cache"]
    assert main([*args, "--output", str(tmp_path / "run")]) == 0
    assert alive_at_load == [[], [False]]  # the first model's weights were collected before the second loaded


def shared_image_requests(folder: Path, per_image: int = 3) -> list[Request]:
    """Two different random images (written to ``folder``), each asked ``per_image`` differently worded questions,
    as SLAKE asks several per image. (The demo set's images are copies of one picture.)"""
    import numpy as np

    from medbench.schema import ImageRef

    rng = np.random.default_rng(0)
    out = []
    template = requests([None], tasks=("vqa_rad",))[0]
    for i in range(2):
        path = folder / f"image{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        for k, wording in enumerate(("", " Answer briefly.", " Look closely.", " One word.")[:per_image]):
            prompt = template.prompt + wording
            out.append(Request(f"i{i}-q{k}", "vqa_rad", "vqa", prompt, prompt, ImageRef("file", str(path)), None, 6))
    return out


def interleaved(reqs: list[Request]) -> list[Request]:
    """:func:`shared_image_requests`' questions with the two images alternating (what batching must regroup)."""
    return [reqs[0], reqs[3], reqs[1], reqs[4], reqs[2], reqs[5]]


def encoded_rows(model: Any) -> list[int]:
    """Hook the vision encoder's patch embedding (inside the once-per-image wrapper): rows it really computes."""
    seen: list[int] = []
    convs = [m for n, m in model.model.named_modules() if n.endswith("patch_embedding") and "vision" in n]
    convs[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    return seen


@pytest.mark.parametrize("family", ["mllama", "gemma3", "llava"])
def test_an_image_shared_by_several_questions_is_encoded_once_with_the_same_outputs(
    families: dict[str, tuple[Path, Path]], family: str, tmp_path: Path
) -> None:
    reqs = shared_image_requests(tmp_path)  # 2 images x 3 questions, mixed order below
    reqs = interleaved(reqs)
    path = families[family][0]
    naive, fast = create(path, fast="false", batch_size="6"), create(path, batch_size="6")
    naive_rows, fast_rows = encoded_rows(naive), encoded_rows(fast)
    assert generated(fast, reqs)[0] == generated(naive, reqs)[0]
    assert sum(fast_rows) * 3 == sum(naive_rows) > 0  # 2 images' rows encoded instead of 6 questions' rows


def test_qwen_encodes_an_image_shared_by_several_questions_once(
    families: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    reqs = shared_image_requests(tmp_path)
    reqs = interleaved(reqs)
    path = families["qwen2_5_vl"][0]
    naive, fast = create(path, fast="false", batch_size="6"), create(path, batch_size="6")
    patches: dict[str, list[int]] = {"naive": [], "fast": []}
    for key, model in (("naive", naive), ("fast", fast)):
        model.load()
        (embed,) = [m for n, m in model.model.named_modules() if n.endswith("visual.patch_embed")]
        embed.register_forward_pre_hook(lambda _m, args, key=key: patches[key].append(args[0].shape[0]))
    assert generated(fast, reqs)[0] == generated(naive, reqs)[0]
    assert sum(patches["fast"]) * 3 == sum(patches["naive"]) > 0  # 2 images' patches instead of 6


def test_batching_order_groups_the_questions_of_an_image(tmp_path: Path) -> None:
    reqs = shared_image_requests(tmp_path)
    mixed = interleaved(reqs)
    order = hf_fast.batching_order(mixed)
    images = [mixed[i].image for i in order]
    assert images[:3] == [mixed[0].image] * 3 and images[3:] == [mixed[1].image] * 3


def test_the_run_batches_an_images_questions_together_on_the_fast_path(
    families: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    # generate_all batches in the model's order: the fast path's keeps an image's questions in one run batch (so
    # its image is encoded once); fast=false keeps the prompt-length order.
    reqs = shared_image_requests(tmp_path)
    mixed = interleaved(reqs)
    path = families["llava"][0]
    fast, naive = create(path), create(path, fast="false")
    assert [mixed[i].image for i in fast.order(mixed)] == [reqs[0].image] * 3 + [reqs[3].image] * 3
    lengths = [len(mixed[i].prompt) for i in naive.order(mixed)]
    assert lengths == sorted(lengths)
