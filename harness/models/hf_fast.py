"""The fast path of the ``hf:`` adapter: the naive Hugging Face path's greedy outputs, with less waste around it.

What ``fast`` (the default) changes, checked for the same greedy outputs as ``fast=false`` on every family in
``tests/models/test_hf_fast.py``:

* **An image shared by several questions is encoded once per batch** (:func:`share_images`, every family): SLAKE
  asks ~11 questions per image, PathVQA ~7, VQA-RAD ~2, and the vision encoder is most of the compute (the 11B Mllama:
  ~11 TFLOP for an image's 4 tiles against ~1.3 for a 64-token prompt). The encoder's input rows that are equal
  (same pixels, same tile layout) are computed once and its outputs copied to every question of the image.
* **Batches of similar requests**: :func:`batching_order` puts a chunk's questions on the same image next to each
  other (so that they share a batch), shorter prompts first within an image; outputs go back in the caller's order.
* **Each distinct image of a batch is decoded, resized and processed once** (:mod:`medbench.models.hf_inputs`), and
  for Mllama, Qwen2.5-VL and Gemma 3 only its pixels are copied to the GPU, gathered for every question there.
* **Image decoding and processor work run ahead of the model** in a background thread (:class:`Prefetch`, via
  :func:`medbench.models.hf_runtime.run_in_batches` ``ahead``): the next batch's inputs are built while the current
  one generates, at most one batch ahead.
* **The batch size follows free memory** (``batch_size=auto`` on CUDA): :func:`next_batch_size` grows it from the
  peak memory a batch measured per sample; running out of memory still halves it (the safety net).

The vision features and the cross-attention keys and values of an image are computed once per sample, at the
prefill: transformers' Mllama drops ``pixel_values`` after the first generation step and reads the cached
cross-attention states from then on (a test counts the vision encoder's calls).

**Mllama's padded tiles are part of its computation** (measured here, so not skipped by default). The processor
pads every image to 4 tiles (``pixel_values [batch, images, 4, 3, 560, 560]``) even when one is valid — every
image of 560 px or less — and the encoder computes all 4. Skipping them does *not* give the same outputs, for two
reasons in the model itself (transformers follows Meta's reference code in both): the vision encoder's attention
mask only blocks padding-to-padding attention (``mask @ mask.T``), so the valid tile's patches attend to the
padded tiles' patches; and the text tokens before the ``<|image|>`` token have no valid vision token to attend, so
their cross-attention mask is zeroed and they attend uniformly to every vision token, padded tiles included. On the
tiny 4-tile Mllama the logits move by ~0.15-0.3 (fp32). ``vision_tiles=valid`` (:func:`trim_tiles` + :func:`install`)
runs the encoder on the valid tiles only, for whoever accepts that approximation: about 4x less vision compute at
512 px; it is recorded in the model's identity (the cache never mixes the two) and its outputs must be checked
against the default on real data before use.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from medbench.errors import UsageError

#: The model types whose padded vision tiles ``vision_tiles=valid`` can skip (others run as they are).
TRIMMED = ("mllama",)
#: ``vision_tiles``: ``all`` as the model computes (the default), ``valid`` skipping padded tiles (approximate).
VISION_TILES = ("all", "valid")
#: The share of a GPU's memory the automatic batch size plans to use (the rest: fragmentation, the allocator).
MEMORY_SHARE = 0.85


def describe(fast: bool, vision_tiles: str) -> dict[str, Any]:
    """What :meth:`HFModel.describe` records of the path, and so part of the prediction cache key: approximate
    outputs (``vision_tiles=valid``) are never served as the model's, and a comparison of the two paths generates
    both."""
    return {"path": "fast" if fast else "naive", "vision_tiles": vision_tiles}


# -- Mllama: valid tiles only -------------------------------------------------------------------------------------
def trim_tiles(inputs: Any) -> Any:
    """A copy of ``inputs`` (a processor's Mllama batch, a dict or ``BatchFeature``) with the tile axis cut to the
    most valid tiles of any image in it (the processor puts an image's valid tiles first, so every valid tile is
    kept); ``inputs`` itself when nothing is padded, or for other families (no ``aspect_ratio_mask``)."""
    mask = inputs.get("aspect_ratio_mask") if hasattr(inputs, "get") else None
    if mask is None or "pixel_values" not in inputs:
        return inputs
    keep = max(1, int(mask.sum(dim=-1).max()))
    if keep >= mask.shape[-1]:
        return inputs
    if int(mask[..., keep:].sum()) != 0:
        raise UsageError("aspect_ratio_mask has a valid tile after a padded one: cannot cut the padded tiles")
    out = copy.copy(inputs)  # a shallow copy: the caller's batch keeps its tensors
    out["pixel_values"] = inputs["pixel_values"][:, :, :keep].contiguous()
    out["aspect_ratio_mask"] = mask[..., :keep].contiguous()
    if inputs.get("cross_attention_mask") is not None:
        out["cross_attention_mask"] = inputs["cross_attention_mask"][..., :keep].contiguous()
    return out


#: Mllama's tile embeddings (the pre- and post-tile aspect-ratio embeddings, the gated position embedding) and the
#: attributes :func:`_tiles_present` reads: a transformers version without them is refused, never guessed at.
TILE_EMBEDDINGS = {
    "MllamaPrecomputedAspectRatioEmbedding": ("embedding", "max_num_tiles", "hidden_size", "is_gated"),
    "MllamaPrecomputedPositionEmbedding": (
        "embedding",
        "gate",
        "tile_embedding",
        "max_num_tiles",
        "num_patches",
        "hidden_size",
    ),
}


def install(model: Any, model_type: str) -> int:
    """Make ``model``'s Mllama tile embeddings accept fewer tiles than the maximum (what :func:`trim_tiles`
    feeds them); returns how many modules were changed (3 on Mllama, 0 for other families). With all the tiles
    the changed embeddings are the stock ones bit for bit. A :class:`UsageError` when this transformers' Mllama
    vision tower is not the layout known here."""
    if model_type not in TRIMMED:
        return 0
    changed = 0
    for module in model.modules():
        kind = type(module).__name__
        if kind not in TILE_EMBEDDINGS:
            continue
        missing = [a for a in TILE_EMBEDDINGS[kind] if not hasattr(module, a)]
        if missing:
            raise UsageError(
                f"{kind} has no {', '.join(missing)}: this transformers version's Mllama vision tower is not the one "
                "the tile cut knows; run without it (vision_tiles=all)"
            )
        module.forward = _tiles_present(module, kind)
        changed += 1
    if changed != 3:
        raise UsageError(f"found {changed} Mllama tile embeddings, expected 3: unknown Mllama vision layout")
    return changed


def _tiles_present(module: Any, kind: str) -> Any:
    """A forward for one of Mllama's tile embeddings that adds the embeddings of the first ``n`` tiles to hidden
    states of ``n`` tiles, ``n`` <= the maximum. The arithmetic is the module's own, element for element (so the
    present tiles' values are bitwise those of the full computation); only the table lookup reads ``n`` tiles."""
    import torch

    def aspect_ratio(hidden: torch.Tensor, aspect_ratio_ids: torch.Tensor) -> torch.Tensor:
        tiles = hidden.shape[1]
        table = module.embedding.weight.view(-1, module.max_num_tiles, 1, module.hidden_size)
        embeddings = table[aspect_ratio_ids.reshape(-1), :tiles]
        if module.is_gated:
            embeddings = embeddings * module.gate.tanh()
        return hidden + embeddings

    def position(hidden: torch.Tensor, aspect_ratio_ids: torch.Tensor) -> torch.Tensor:
        tiles = hidden.shape[1]
        gated = (1 - module.gate.tanh()) * module.embedding
        hidden = hidden + gated.view(1, 1, module.num_patches, module.hidden_size)
        table = module.tile_embedding.weight.view(-1, module.max_num_tiles, module.num_patches, module.hidden_size)
        return hidden + module.gate.tanh() * table[aspect_ratio_ids.reshape(-1), :tiles]

    return aspect_ratio if kind == "MllamaPrecomputedAspectRatioEmbedding" else position


# -- batching -----------------------------------------------------------------------------------------------------
def batching_order(requests: Sequence[Any]) -> list[int]:
    """The indices of ``requests`` in the order to batch them: the questions on one image (``image`` and
    ``image_size``) together, images in order of first appearance, shorter prompts first within an image, then
    position (stable)."""
    first: dict[tuple[Any, Any], int] = {}
    for r in requests:
        first.setdefault((r.image, r.image_size), len(first))
    return sorted(
        range(len(requests)),
        key=lambda i: (first[requests[i].image, requests[i].image_size], len(requests[i].prompt), i),
    )


# -- one encoder pass per distinct image ----------------------------------------------------------------------------
#: family -> (the vision encoder's class name, the names of its batch-aligned tensor inputs besides pixel_values)
VISION_ENCODERS = {
    "mllama": ("MllamaVisionModel", ("aspect_ratio_ids", "aspect_ratio_mask")),
    "gemma3": ("SiglipVisionModel", ()),
    "llava": ("CLIPVisionModel", ()),
}


def share_images(model: Any, model_type: str) -> bool:
    """Make ``model``'s vision encoder compute each distinct image of a batch once (:func:`_distinct`); whether
    there was an encoder to change."""
    if model_type in QWEN_FAMILIES:
        holders = [m for m in model.modules() if type(m).__name__ in QWEN_FAMILIES[model_type]]
        if len(holders) != 1:
            raise UsageError(
                f"expected one {QWEN_FAMILIES[model_type]} in the {model_type} model, found {len(holders)}"
            )
        holders[0].get_image_features = _qwen_once_per_image(holders[0].get_image_features)
        return True
    known = VISION_ENCODERS.get(model_type)
    if known is None:
        return False
    name, aligned = known
    encoders = [m for m in model.modules() if type(m).__name__ == name]
    if len(encoders) != 1:
        raise UsageError(f"expected one {name} in the {model_type} model, found {len(encoders)}")
    encoders[0].forward = _once_per_image(encoders[0].forward, aligned)
    return True


#: Qwen's families: the module whose ``get_image_features(pixel_values, image_grid_thw)`` encodes a batch's images
#: (one flat sequence of every image's patches, ``image_grid_thw`` rows saying how many are whose).
QWEN_FAMILIES = {"qwen2_5_vl": "Qwen2_5_VLModel", "qwen2_vl": "Qwen2VLModel"}


def _qwen_once_per_image(get: Any) -> Any:
    """``get_image_features`` run on the distinct images of the flat patch sequence; its per-image
    ``pooler_output`` (what the model scatters into the image placeholders) spread back to every image."""
    import torch

    def once(pixel_values: Any, image_grid_thw: Any = None, **kwargs: Any) -> Any:
        if image_grid_thw is None or image_grid_thw.shape[0] < 2:
            return get(pixel_values, image_grid_thw, **kwargs)
        chunks = torch.split(pixel_values, image_grid_thw.prod(-1).tolist())
        items = [(chunk, grid) for chunk, grid in zip(chunks, image_grid_thw, strict=True)]
        keep, spread = _distinct(items, [_row_prints([chunk[None], grid[None]])[0] for chunk, grid in items])
        if len(keep) == len(chunks):
            return get(pixel_values, image_grid_thw, **kwargs)
        index = torch.tensor(keep, device=image_grid_thw.device)
        out = get(torch.cat([chunks[i] for i in keep]), image_grid_thw.index_select(0, index), **kwargs)
        # only pooler_output is read by the model (last_hidden_state stays the distinct images')
        out.pooler_output = tuple(out.pooler_output[j] for j in spread)
        return out

    return once


def _once_per_image(forward: Any, aligned: tuple[str, ...]) -> Any:
    """``forward`` run on the distinct rows of ``pixel_values`` (with the ``aligned`` inputs of those rows) and its
    outputs spread back to every row."""
    import torch

    def once(*args: Any, **kwargs: Any) -> Any:
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        if pixels is None or pixels.shape[0] < 2:
            return forward(*args, **kwargs)
        rows = [pixels, *(kwargs[k] for k in aligned if kwargs.get(k) is not None)]
        keep, spread = _distinct(list(zip(*rows, strict=True)), _row_prints(rows))
        if len(keep) == pixels.shape[0]:
            return forward(*args, **kwargs)
        index = torch.tensor(keep, device=pixels.device)
        if args:
            args = (args[0].index_select(0, index), *args[1:])
        else:
            kwargs["pixel_values"] = pixels.index_select(0, index)
        for k in aligned:
            if kwargs.get(k) is not None:
                kwargs[k] = kwargs[k].index_select(0, index)
        return _spread(forward(*args, **kwargs), torch.tensor(spread, device=pixels.device), len(keep))

    return once


#: How many elements of a row :func:`_row_prints` reads (a strided sample): enough to tell images apart cheaply;
#: equality itself is always decided by ``torch.equal`` on the whole rows.
PRINT_ELEMENTS = 65536


def _row_prints(tensors: Sequence[Any]) -> list[tuple[float, ...]]:
    """A cheap fingerprint of every row (first axis) of ``tensors``, in one vectorised pass and one device sync:
    per tensor, a weighted sum of at most :data:`PRINT_ELEMENTS` of the row's elements (a strided sample, so a batch
    of 4-tile 560 px images is not copied to float64 whole). Equal rows have equal prints; unequal ones almost
    always differ, and :func:`_distinct` checks candidates with ``torch.equal`` anyway."""
    import torch

    sums = []
    for t in tensors:
        flat = t.reshape(t.shape[0], -1)
        sample = flat[:, :: max(1, -(-flat.shape[1] // PRINT_ELEMENTS))].double()
        weights = torch.linspace(0.5, 1.5, sample.shape[1], device=sample.device, dtype=torch.float64)
        sums.append(sample @ weights)
    return [tuple(row) for row in torch.stack(sums, dim=1).tolist()]


def _distinct(items: Sequence[tuple[Any, ...]], prints: Sequence[Any]) -> tuple[list[int], list[int]]:
    """``(the first index of each distinct item, for every item the position of its value in that list)``; an item
    is a tuple of tensors, and two are equal when every tensor has the same shape and bitwise the same values (their
    ``prints`` compared first, then ``torch.equal``)."""
    import torch

    keep: list[int] = []
    spread: list[int] = []
    for i, item in enumerate(items):
        same = (j for j, first in enumerate(keep) if prints[first] == prints[i])
        match = next(
            (j for j in same if all(torch.equal(a, b) for a, b in zip(item, items[keep[j]], strict=True))),
            None,
        )
        if match is None:
            keep.append(i)
            match = len(keep) - 1
        spread.append(match)
    return keep, spread


def _spread(output: Any, index: Any, rows: int) -> Any:
    """``output`` (a tensor, a tuple/list of them, or a ``ModelOutput``) with each tensor of ``rows`` rows expanded
    by ``index`` along the first axis."""
    import torch

    if isinstance(output, torch.Tensor):
        return output.index_select(0, index) if output.dim() and output.shape[0] == rows else output
    if isinstance(output, (tuple, list)) and not hasattr(output, "keys"):
        return type(output)(_spread(o, index, rows) for o in output)
    if hasattr(output, "keys"):
        for key in list(output.keys()):
            output[key] = _spread(output[key], index, rows)
        return output
    return output


def next_batch_size(current: int, done: int, peak: int, base: int, total: int, limit: int = 512) -> int:
    """The batch size to try next on a GPU of ``total`` bytes, after a batch of ``done`` requests peaked at ``peak``
    bytes allocated with ``base`` allocated before it (the weights): as many as the measured per-sample footprint
    fits in :data:`MEMORY_SHARE` of the memory, at most twice ``current`` (memory per sample grows with prompt
    length, so the size grows in steps) and at most ``limit``; never below 1. An over-estimate is caught by the
    out-of-memory halving."""
    per_sample = max(1, (peak - base) // max(1, done))
    fits = int((total * MEMORY_SHARE - base) // per_sample)
    return max(1, min(limit, 2 * max(1, current), max(done, fits)))


class Prefetch:
    """Builds the inputs of the batch expected next in one background thread while the current one generates.

    :meth:`submit` starts building a batch (dropping any other not taken); :meth:`take` returns its inputs when
    asked for exactly those requests (the same objects, held until then so that no other can look the same), else
    None and the caller builds them itself. A build's exception is raised by :meth:`take`, as building in place
    would raise it. ``lock`` is held by every build: the caller holds it too around its own use of the tokenizer
    (a Rust tokenizer refuses a second thread while it is padding a batch)."""

    def __init__(self, build: Callable[[Sequence[Any]], Any], lock: threading.Lock) -> None:
        self._build = build
        self.lock = lock
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[list[Any], Future[Any]] | None = None

    def submit(self, requests: list[Any]) -> None:
        self.discard()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medbench-prefetch")
        self._pending = (list(requests), self._pool.submit(self._locked_build, list(requests)))

    def _locked_build(self, requests: list[Any]) -> Any:
        with self.lock:
            return self._build(requests)

    def take(self, requests: Sequence[Any]) -> Any | None:
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        wanted, future = pending
        if len(wanted) != len(requests) or any(a is not b for a, b in zip(wanted, requests, strict=True)):
            future.cancel()
            return None
        return future.result()

    def discard(self) -> None:
        """Drop a build not taken (a running one finishes in the background and is forgotten)."""
        if self._pending is not None:
            self._pending[1].cancel()
            self._pending = None

    def close(self) -> None:
        self.discard()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
