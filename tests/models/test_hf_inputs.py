"""medbench.models.hf_inputs (issue 14): each distinct image of a batch opened and processed once gives the family
processor's own inputs, tensor for tensor, on every family's tiny processor and on the real image processors'
layouts (Mllama's 4 tiles of 560 px, Qwen2.5-VL's flat patches, Gemma 3's 896 px, LLaVA's 336 px); images are told
apart by their pixels, never by name or object identity; what it cannot expand goes to the processor as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import numpy as np
import torch
import transformers
from PIL import Image

from medbench.models import hf_inputs
from medbench.models.hf_runtime import batch_inputs, load_processor
from medbench.schema import ImageRef, Request
from medbench.testing import FAMILIES, build_tiny_models


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    return build_tiny_models(tmp_path_factory.getbasetemp() / "tiny_vlms", reuse=True)  # shared with test_hf.py


def pictures(n: int, size: int = 64, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def assert_same(a: Any, b: Any) -> None:
    assert set(a.keys()) == set(b.keys())
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y), key
        else:
            assert x == y, key


class Counting:
    """An image processor spy: the number of items of every call."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(len(images))
        return self.inner(images, *args, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_batch_with_shared_images_gets_the_processors_own_inputs(
    families: dict[str, tuple[Path, Path]], family: str
) -> None:
    path = families[family][0]
    plain, shared = load_processor(path, family), load_processor(path, family)
    spy = Counting(shared.image_processor)
    shared.image_processor = spy
    hf_inputs.share_processing(shared, family)
    hf_inputs.share_processing(shared, family)  # once only
    assert isinstance(shared.image_processor, hf_inputs.SharedImageProcessor)
    assert shared.image_processor.inner is spy
    a, b, c = pictures(3, size=48)
    images = [a, a, b, a.copy(), c, b]  # a.copy(): another object with a's pixels
    texts = ["what organ is shown", "is it normal", "which side", "where is the lesion", "what modality", "is it"]
    compact = batch_inputs(shared, images, texts)
    if family in hf_inputs.COMPACT:  # the processor passed the row index through
        assert compact[hf_inputs.INDEX].tolist() != []
    if family in ("mllama", "gemma3"):  # one row per image: the 3 distinct images' pixels only, until expanded
        assert compact["pixel_values"].shape[0] == 3 and compact[hf_inputs.INDEX].tolist() == [0, 0, 1, 0, 2, 1]
    assert_same(hf_inputs.expand(compact), batch_inputs(plain, images, texts))
    assert spy.calls == [3]  # the 3 distinct images, processed once


@pytest.mark.parametrize(
    "name, settings",
    [
        ("MllamaImageProcessor", {"size": {"height": 560, "width": 560}, "max_image_tiles": 4}),
        ("Qwen2VLImageProcessor", {}),
        ("Gemma3ImageProcessor", {"size": {"height": 896, "width": 896}}),
        ("CLIPImageProcessor", {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}}),
    ],
)
def test_the_real_image_processors_layouts_expand_exactly(name: str, settings: dict[str, Any]) -> None:
    cls = getattr(transformers, name + "Pil", None) or getattr(transformers, name)
    processor = cls(**settings)
    a, b = pictures(2, size=512, seed=1)
    flat = [a, b, a, a, b]
    nested = [[image] for image in flat]  # as the Mllama and Gemma 3 processors pass them
    # Qwen's processor passes a flat list; Mllama's nests one list per sample (its image processor reads a flat list
    # as one sample's images: checked below); Gemma 3's nests, CLIP's is flat (both forms checked)
    forms = {"Qwen2VLImageProcessor": (flat,), "MllamaImageProcessor": (nested,)}.get(name, (flat, nested))
    for images in forms:
        want = processor(images, return_tensors="pt")
        for compact in (True, False):
            spy = Counting(processor)
            got = hf_inputs.SharedImageProcessor(spy, compact=compact)(images, return_tensors="pt")
            assert (hf_inputs.INDEX in got) == compact
            assert_same(hf_inputs.expand(got), want)
            assert spy.calls == [2], name  # expanded from the 2 distinct images, not processed again as they are


def test_images_are_told_apart_by_pixels_and_anything_else_passes_through() -> None:
    seen: list[Any] = []

    def processor(images: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(images)
        if not isinstance(images, list) or isinstance(images[0], list):
            return {}
        return {"pixel_values": torch.stack([torch.tensor(np.asarray(i), dtype=torch.float32) for i in images])}

    shared = hf_inputs.SharedImageProcessor(processor, compact=True)
    a, b = pictures(2, size=8)
    black, white = Image.new("RGB", (8, 8), (0, 0, 0)), Image.new("RGB", (8, 8), (255, 255, 255))
    out = hf_inputs.expand(shared([a, b.copy(), black, white, b]))
    assert [len(s) for s in seen] == [4]  # b and its copy shared; same size, other pixels: not
    assert torch.equal(out["pixel_values"][1], out["pixel_values"][4])
    assert not torch.equal(out["pixel_values"][2], out["pixel_values"][3])
    seen.clear()
    shared([[a, b], [a, b]])  # two images per question: passed as is
    shared(a)  # not a list
    assert [type(s) for s in seen] == [list, Image.Image] and len(seen[0]) == 2


def test_an_output_it_cannot_expand_goes_to_the_processor_as_it_is() -> None:
    calls: list[int] = []

    def processor(images: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(len(images))
        return {"batch_stat": torch.zeros(7), "pixel_values": torch.zeros(len(images), 2)}  # 7: no image count

    out = hf_inputs.SharedImageProcessor(processor)([*pictures(1), *pictures(1)])
    assert calls == [1, 2] and out["pixel_values"].shape == (2, 2)


def test_open_images_opens_each_image_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = []
    for i, image in enumerate(pictures(2)):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    opened: list[tuple[str, int | None]] = []
    real = ImageRef.open

    def counting(self: ImageRef, size: int | None) -> Image.Image:
        opened.append((Path(self.path).name, size))
        return real(self, size)

    monkeypatch.setattr(ImageRef, "open", counting)
    refs = [ImageRef("file", str(p)) for p in paths]
    reqs = [Request(f"q{i}", "t", "vqa", "p", "q", refs[i % 2], size) for i, size in enumerate([32, 32, 32, 32, 16])]
    images = hf_inputs.open_images(reqs)
    assert sorted(opened) == [("0.png", 16), ("0.png", 32), ("1.png", 32)]
    assert images[0] is images[2] and images[1] is images[3] and images[4] is not images[0]


def test_a_flat_list_is_one_sample_for_mllama_so_it_is_not_shared() -> None:
    cls = getattr(transformers, "MllamaImageProcessorPil", None) or transformers.MllamaImageProcessor
    processor = Counting(cls(size={"height": 56, "width": 56}, max_image_tiles=4))
    (a,) = pictures(1, size=40)
    got = hf_inputs.SharedImageProcessor(processor)([a, a], return_tensors="pt")
    assert processor.calls == [2] and got["pixel_values"].shape[:2] == (1, 2)  # one sample with 2 images, as is


def test_each_image_object_is_hashed_once_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[int] = []
    real = hf_inputs._content_key
    monkeypatch.setattr(hf_inputs, "_content_key", lambda item: hashed.append(1) or real(item))
    a, b = pictures(2, size=8)
    shared = hf_inputs.SharedImageProcessor(lambda images, **kw: {"pixel_values": torch.zeros(len(images), 1)})
    shared([[a], [a], [b], [a]])  # nested, as the Mllama and Gemma 3 processors pass them: new lists, same images
    assert len(hashed) == 2
