"""A batch's inputs on the ``hf:`` fast path with each distinct image decoded and processed once.

The three VQA test sets ask 6.4 questions per image, and the fast path batches an image's questions together, so a
batch of 64 holds about 10 distinct images. Built naively, every question's image is decoded and resized (~10 ms
for a 512 px image) and run through the family's image processor (measured on one core of the developer machine:
Mllama's 4 tiles of 560 px ~22 ms, Qwen2.5-VL ~33 ms, Gemma 3's 896 px ~74 ms per image): 2-7 s of CPU for a batch
the GPU generates in well under a second, so the GPU would wait on the CPU (``benchmarks/hf_inputs.py`` measures
it). Here:

* :func:`open_images` opens each distinct ``(image, image_size)`` of a batch once and hands the same image to all
  of its questions;
* :class:`SharedImageProcessor` (installed by :func:`share_processing` in place of the processor's image processor)
  processes each distinct image of a call once, keyed by its pixels (a digest of mode, size and bytes, never a file
  name), and expands the small outputs back to every question (rows of per-image tensors, entries of per-image
  lists). ``pixel_values`` is left with the distinct images only, plus :data:`INDEX` (which row each question's
  pixels are; Qwen2.5-VL: which rows of its flat patch sequence, from ``image_grid_thw``): Mllama's 4 tiles of 560 px
  are 15 MB per image in float32, so a batch of 64 would be ~1 GB to assemble on the CPU and copy to the GPU, where
  10 distinct images are 150 MB. :func:`expand` gathers the rows once the batch is on the device (the ``hf:``
  adapter does it after moving the batch). Only for the families whose processor never reads ``pixel_values``
  (:data:`COMPACT`: Mllama, Qwen2.5-VL, Gemma 3; LLaVA's reads each image's size from it, so its 1.4 MB per image
  are gathered at once, on the CPU). Batch-level padding (the most tiles or images of any item) depends only
  on the distinct items, so the expanded batch equals the processor's own, tensor for tensor
  (``tests/models/test_hf_inputs.py``, every family).
  An output it does not know how to expand, or an input that is not one image per question (several images in a
  question's list; for Mllama, whose image processor reads a flat list as one sample's images, a flat list), goes
  to the wrapped processor as it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

#: The batch key that holds, for each question, its rows of the distinct images' ``pixel_values``.
INDEX = "medbench_pixel_rows"
#: The model types whose processor never reads ``pixel_values`` (transformers 5.17-5.24), so it can stay compact.
COMPACT = ("mllama", "qwen2_5_vl", "gemma3")


def expand(inputs: Any) -> Any:
    """``inputs`` (a processor's batch, on any device) with ``pixel_values`` gathered to every question's rows and
    :data:`INDEX` removed; as it is when there is no :data:`INDEX`."""
    rows = inputs.pop(INDEX, None) if hasattr(inputs, "pop") else None
    if rows is not None:
        inputs["pixel_values"] = inputs["pixel_values"].index_select(0, rows.to(inputs["pixel_values"].device))
    return inputs


def open_images(requests: Sequence[Any]) -> list[Any]:
    """Each request's image (``request.image.open(request.image_size)``), each distinct ``(image, image_size)``
    opened once: its questions get the same image object."""
    opened: dict[tuple[Any, Any], Any] = {}
    out = []
    for r in requests:
        key = (r.image, r.image_size)
        if key not in opened:
            opened[key] = r.image.open(r.image_size)
        out.append(opened[key])
    return out


def share_processing(processor: Any, model_type: str) -> None:
    """Wrap ``processor.image_processor`` in a :class:`SharedImageProcessor` (once: a wrapped one stays as it is),
    compact for the :data:`COMPACT` model types."""
    inner = getattr(processor, "image_processor", None)
    if inner is not None and not isinstance(inner, SharedImageProcessor):
        processor.image_processor = SharedImageProcessor(inner, compact=model_type in COMPACT)


class _Unknown(Exception):
    """An output whose layout is not one of the known per-image layouts."""


class SharedImageProcessor:
    """An image processor that processes each distinct image of a call once (see the module docstring); with
    ``compact``, ``pixel_values`` keeps the distinct images' rows and :data:`INDEX` says whose are whose. Every
    other attribute is the wrapped processor's."""

    def __init__(self, inner: Any, compact: bool = False) -> None:
        self.inner = inner
        self.compact = compact

    def __getattr__(self, name: str) -> Any:  # only for what this class does not define itself
        return getattr(self.__dict__["inner"], name)

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> Any:
        items = list(images) if isinstance(images, (list, tuple)) else None
        # Mllama's image processor reads a flat list as one sample's several images (its processor always nests
        # them, one list per sample): only the nested form is one image per question there.
        flat_is_one_sample = hasattr(self.inner, "max_image_tiles")
        if not items or (flat_is_one_sample and not all(isinstance(item, (list, tuple)) for item in items)):
            return self.inner(images, *args, **kwargs)
        memo: dict[int, Any] = {}  # each image object hashed once (all live during the call: ids are unique)
        keys = [_key(item, memo) for item in items]
        if any(k is None for k in keys):
            return self.inner(images, *args, **kwargs)
        first: dict[Any, int] = {}
        for k in keys:
            first.setdefault(k, len(first))
        if len(first) == len(items):  # nothing repeats
            return self.inner(images, *args, **kwargs)
        distinct = [items[keys.index(k)] for k in first]
        index = [first[k] for k in keys]
        out = self.inner(type(images)(distinct) if isinstance(images, tuple) else distinct, *args, **kwargs)
        try:
            rows = _pixel_rows(out, index, len(distinct))
            expanded = {
                name: _expand(value, index, len(distinct)) for name, value in out.items() if name != "pixel_values"
            }
        except _Unknown:
            return self.inner(images, *args, **kwargs)
        for name, value in expanded.items():
            out[name] = value
        if self.compact:
            out[INDEX] = rows
        else:
            out["pixel_values"] = out["pixel_values"].index_select(0, rows)
        return out


def _key(item: Any, memo: dict[int, Any]) -> Any:
    """The content key of one question's image (or a one-image list, as Mllama and Gemma 3 nest them); None for
    anything else (several images, an unknown type): then nothing is shared. ``memo``: keys by object id."""
    if isinstance(item, (list, tuple)):
        return _key(item[0], memo) if len(item) == 1 and not isinstance(item[0], (list, tuple)) else None
    if id(item) not in memo:
        memo[id(item)] = _content_key(item)
    return memo[id(item)]


def _content_key(item: Any) -> Any:
    from PIL import Image

    if isinstance(item, Image.Image):
        layout: tuple[Any, ...] = ("pil", item.mode, item.size)
    elif hasattr(item, "shape") and hasattr(item, "dtype") and hasattr(item, "tobytes"):  # a numpy array
        layout = ("array", tuple(item.shape), str(item.dtype))
    else:
        return None
    return (*layout, hashlib.blake2b(item.tobytes(), digest_size=16).digest())


def _pixel_rows(out: Any, index: list[int], n: int) -> Any:
    """The rows of ``out["pixel_values"]`` (for ``n`` distinct images) that make every question's, as a tensor."""
    import torch

    pixels = out.get("pixel_values") if hasattr(out, "get") else None
    if not isinstance(pixels, torch.Tensor):
        raise _Unknown("pixel_values")
    grid = out.get("image_grid_thw")
    if grid is None:  # one row (or one block of tiles) per image
        if pixels.shape[0] != n:
            raise _Unknown("pixel_values")
        return torch.tensor(index, dtype=torch.long)
    sizes = [int(s) for s in grid.prod(dim=-1)]  # Qwen: one flat patch sequence, image after image
    if len(sizes) != n or sum(sizes) != pixels.shape[0]:
        raise _Unknown("pixel_values")
    starts = [0]
    for size in sizes[:-1]:
        starts.append(starts[-1] + size)
    return torch.cat([torch.arange(starts[i], starts[i] + sizes[i]) for i in index])


def _expand(value: Any, index: list[int], n: int) -> Any:
    """``value`` (an output for the ``n`` distinct images) for every question, ``index`` mapping each question to
    its distinct image."""
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) > 0 and shape[0] == n:
        return value[index]
    if isinstance(value, list) and len(value) == n:
        return [value[i] for i in index]
    raise _Unknown(type(value).__name__)
