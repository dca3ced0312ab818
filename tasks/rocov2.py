"""ROCOv2 (Rückert et al., Sci Data 2024): radiology image captioning.

Original (Zenodo) layout: ``{train,valid,test}_captions.csv`` (``ID,Caption``), ``{split}/<ID>.jpg`` and
``{split}_concepts.csv`` (``ID,CUIs``, ';'-separated UMLS CUIs, kept as metadata). Hugging Face mirror
``eltorio/ROCOv2-radiology``: ``data/{train,validation,test}-*.parquet`` with image, image_id, caption, cui.
Default evaluation set: 1,000 test captions drawn with a fixed seed, as in the paper (the ids are recorded);
``--full`` evaluates all 9,927.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medbench.errors import DataError, SampleError
from medbench.images import safe_join
from medbench.registry import register_task
from medbench.schema import ImageRef, Sample
from medbench.tasks._readers import (
    listing_checksum,
    mirror_checksums,
    parquet_files,
    read_csv_rows,
    read_mirror_split,
    sha256_file,
)
from medbench.tasks.base import DataSource, HubMirror, LoadedSplit, LoadOptions, Skipped, Task, clean_text

_ORIGINAL_SPLIT = {"train": "train", "validation": "valid", "test": "test"}
#: The paper scores 1,000 randomly drawn test captions; this seed fixes which ones.
SUBSET_SIZE = 1000
SUBSET_SEED = 20240610


def paper_subset(ids: list[str], size: int = SUBSET_SIZE, seed: int = SUBSET_SEED) -> list[str]:
    """The fixed evaluation subset: ``size`` ids drawn without replacement from the sorted ids."""
    ordered = sorted(ids)
    if len(ordered) <= size:
        return ordered
    picked = np.random.default_rng(seed).choice(len(ordered), size=size, replace=False)
    return [ordered[i] for i in sorted(picked)]


@register_task
class RocoV2(Task):
    name = "rocov2"
    description = "ROCOv2-radiology captioning: 1,000 fixed-seed test images (--full: 9,927); BLEU, recall"
    kind = "caption"
    order = 4
    folder_aliases = ("ROCOv2", "rocov2-radiology", "ROCOv2-radiology")
    hub = HubMirror(
        "eltorio/ROCOv2-radiology",
        "80ffeef4eb8d34d27cb5c2815305f1d8aee8a83c",
        {s: [f"data/{s}-*.parquet"] for s in ("train", "validation", "test")},
    )
    expected_layout = """
ROCOv2 expects, in <data-dir>/rocov2/, the Zenodo layout (record 10.5281/zenodo.8333645):
  {train,valid,test}_captions.csv (ID,Caption)    {train,valid,test}/<ID>.jpg
  {train,valid,test}_concepts.csv (ID,CUIs; optional)
or the Hugging Face mirror layout data/{train,validation,test}-*.parquet (eltorio/ROCOv2-radiology).
Get it from Zenodo or `medbench data fetch --tasks rocov2` where the hub is reachable."""

    def load(self, source: DataSource, split: str, options: LoadOptions) -> LoadedSplit:
        root = source.root
        if parquet_files(root, split):
            rows = [
                (
                    where,
                    {"ID": r.get("image_id"), "Caption": r.get("caption"), "cuis": r.get("cui") or []},
                    image,
                )
                for where, r, _digest, image in read_mirror_split(root, split, ["image_id", "caption", "cui"])
            ]
            return self._build(rows, [], split, options, "hf-mirror", mirror_checksums(root, split))
        name = _ORIGINAL_SPLIT[split]
        captions = root / f"{name}_captions.csv"
        if not captions.is_file():
            raise DataError(self.missing_data_message([f"{captions} (not found)", f"{root}/data/{split}-*.parquet"]))
        files = {captions.name: sha256_file(captions)}
        folder = root / name
        if folder.is_dir():
            files[f"{name}/"] = listing_checksum(folder)
        concepts = self._concepts(root / f"{name}_concepts.csv", files)
        original_rows: list[tuple[str, dict[str, Any], Any]] = []
        errors: list[Skipped] = []
        for line, row in read_csv_rows(captions, ("ID", "Caption")):
            where = f"{captions}:{line}"
            if isinstance(row, str):
                errors.append(Skipped(where, row))
                continue
            row_id = row["ID"].strip()
            try:
                ref = ImageRef("file", str(safe_join(folder, f"{row_id}.jpg", where=where)))
            except SampleError as exc:
                errors.append(Skipped(where, str(exc), row_id or None))
                continue
            original_rows.append((where, {**row, "cuis": concepts.get(row_id, [])}, ref))
        return self._build(original_rows, errors, split, options, "original", files)

    @staticmethod
    def _concepts(path: Path, files: dict[str, str]) -> dict[str, list[str]]:
        if not path.is_file():
            return {}
        files[path.name] = sha256_file(path)
        out: dict[str, list[str]] = {}
        for _line, row in read_csv_rows(path, ("ID", "CUIs")):
            if isinstance(row, dict):
                out[row["ID"].strip()] = [c.strip() for c in row["CUIs"].split(";") if c.strip()]
        return out

    def _build(
        self,
        rows: list[tuple[str, dict[str, Any], ImageRef]],
        skipped: list[Skipped],
        split: str,
        options: LoadOptions,
        layout: str,
        files: dict[str, str],
    ) -> LoadedSplit:
        notes: dict[str, Any] = {}
        if split == "test" and not options.full:
            ids = [str(r.get("ID") or "").strip() for _w, r, _i in rows]
            chosen = set(paper_subset([i for i in ids if i]))
            notes["subset"] = {
                "size": len(chosen),
                "of": len(rows),
                "seed": SUBSET_SEED,
                "ids": sorted(chosen),
            }
            rows = [row for row, i in zip(rows, ids, strict=True) if i in chosen]
        samples: list[Sample] = []
        seen: set[str] = set()
        for where, record, image in rows:
            try:
                sample_id = clean_text(record.get("ID"), field_name="ID", where=where)
                caption = clean_text(record.get("Caption"), field_name="Caption", where=where)
                if sample_id in seen:
                    raise SampleError(f"{where}: duplicate ID {sample_id}; only the first is used")
                if image.kind == "file" and not Path(image.path).is_file():
                    raise SampleError(f"{where}: image {image.path} is missing; re-download the ROCOv2 images")
            except SampleError as exc:
                skipped.append(Skipped(where, str(exc), record.get("ID") or None))
                continue
            seen.add(sample_id)
            cuis = list(record.get("cuis") or [])
            meta = {"split": split, "image_id": sample_id, "cuis": cuis}
            samples.append(Sample(sample_id, self.name, image, None, caption, None, meta))
        return LoadedSplit(samples, skipped, layout, files, notes)
