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
    id_text,
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
                    image if digest is not None else None,  # a row without image bytes is skipped
                )
                for where, r, digest, image in read_mirror_split(root, split, ["image_id", "caption", "cui"])
            ]
            return self._build(rows, [], split, options, "hf-mirror", mirror_checksums(root, split), {})
        name = _ORIGINAL_SPLIT[split]
        captions = root / f"{name}_captions.csv"
        if not captions.is_file():
            raise DataError(self.missing_data_message([f"{captions} (not found)", f"{root}/data/{split}-*.parquet"]))
        files = {captions.name: sha256_file(captions)}
        notes: dict[str, Any] = {}
        concepts = self._concepts(root / f"{name}_concepts.csv", files, notes)
        folder = root / name
        original_rows: list[tuple[str, dict[str, Any], ImageRef | None]] = []
        errors: list[Skipped] = []
        for line, row in read_csv_rows(captions, ("ID", "Caption")):
            where = f"{captions}:{line}"
            if isinstance(row, str):
                errors.append(Skipped(where, row))
                continue
            try:
                row_id = clean_text(row["ID"], field_name="ID", where=where)
                ref = ImageRef("file", str(safe_join(folder, f"{row_id}.jpg", where=where)))
            except SampleError as exc:
                errors.append(Skipped(where, str(exc), id_text(row["ID"])))
                continue
            original_rows.append((where, {**row, "ID": row_id, "cuis": concepts.get(row_id, [])}, ref))
        return self._build(original_rows, errors, split, options, "original", files, notes)

    @staticmethod
    def _concepts(path: Path, files: dict[str, str], notes: dict[str, Any]) -> dict[str, list[str]]:
        """CUIs by image ID from ``*_concepts.csv`` (optional metadata); unreadable rows are listed in
        ``notes["concepts"]`` and named in a warning, since their captions then carry no CUIs."""
        if not path.is_file():
            return {}
        files[path.name] = sha256_file(path)
        out: dict[str, list[str]] = {}
        problems: list[str] = []
        rows = 0
        for line, row in read_csv_rows(path, ("ID", "CUIs")):
            rows += 1
            if isinstance(row, str):
                problems.append(row)
            elif not row["ID"].strip():
                problems.append(f"{path}:{line}: ID is empty")
            else:
                out[row["ID"].strip()] = [c.strip() for c in row["CUIs"].split(";") if c.strip()]
        notes["concepts"] = {"file": path.name, "rows_read": rows, "rows_unusable": problems}
        if problems:
            notes.setdefault("warnings", []).append(
                f"rocov2: {len(problems)} of {rows} rows of {path.name} could not be read, so those images have no "
                f"CUIs (first: {problems[0]})"
            )
        return out

    def _build(
        self,
        rows: list[tuple[str, dict[str, Any], ImageRef | None]],
        skipped: list[Skipped],
        split: str,
        options: LoadOptions,
        layout: str,
        files: dict[str, str],
        notes: dict[str, Any],
    ) -> LoadedSplit:
        """Samples from ``rows``; ``skipped`` already holds the rows the reader could not use (they count as
        read). Rows without a usable ID or repeating an ID are skipped in every mode, before the paper subset is
        drawn from the IDs that remain, so the subset only depends on which IDs the file has."""
        rows_read = len(rows) + len(skipped)
        candidates: list[tuple[str, str, dict[str, Any], ImageRef | None]] = []
        seen: set[str] = set()
        for where, record, image in rows:
            try:
                sample_id = clean_text(record.get("ID"), field_name="ID", where=where)
                if sample_id in seen:
                    raise SampleError(f"{where}: duplicate ID {sample_id}; only the first is used", where=where)
            except SampleError as exc:
                skipped.append(Skipped(where, str(exc), id_text(record.get("ID"))))
                continue
            seen.add(sample_id)
            candidates.append((sample_id, where, record, image))
        dropped: dict[str, int] = {}
        if split == "test" and not options.full:
            chosen = set(paper_subset(sorted(seen)))
            notes["subset"] = {"size": len(chosen), "of": len(seen), "seed": SUBSET_SEED, "ids": sorted(chosen)}
            dropped["not_in_paper_subset"] = len(candidates) - len(chosen)
            candidates = [c for c in candidates if c[0] in chosen]
        samples: list[Sample] = []
        for sample_id, where, record, image in candidates:
            try:
                caption = clean_text(record.get("Caption"), field_name="Caption", where=where)
                if image is None:
                    raise SampleError(f"{where}: row has no image bytes; re-download the dataset", where=where)
                if image.kind == "file" and not Path(image.path).is_file():
                    raise SampleError(f"{where}: image {image.path} is missing; re-download the ROCOv2 images")
            except SampleError as exc:
                skipped.append(Skipped(where, str(exc), sample_id))
                continue
            meta = {"split": split, "image_id": sample_id, "cuis": list(record.get("cuis") or [])}
            samples.append(Sample(sample_id, self.name, image, None, caption, None, meta))
        notes.update(rows_read=rows_read, dropped=dropped)
        return LoadedSplit(samples, skipped, layout, files, notes)
