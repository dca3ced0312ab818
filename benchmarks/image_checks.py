"""Image checks benchmark: reading, hashing and decoding PathVQA-shaped data before a run.

Builds PathVQA's original layout in a temporary folder: the real test questions when
``../shared/realdata/pathvqa/pvqa_test.json`` is there (858 images, 6,761 questions), else a synthetic set of the
same shape, with one random-noise JPEG of ``--size`` px per image (noise compresses badly, so the files are large
and decoding is slow, like real pathology photographs). Then times, on the loaded split:

* naive: what medbench did before: decode every sample's image, once per question;
* medbench: ``medbench.preparation`` reads and hashes each distinct image and decodes each distinct content once.

Run: python benchmarks/image_checks.py [--size 768]. Prints a table; the folder is deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pickle
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from medbench.images import open_image
from medbench.preparation import image_digests
from medbench.registry import get_task
from medbench.tasks.base import DataSource, LoadOptions

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "pathvqa" / "pvqa_test.json"


def questions() -> list[dict[str, str]]:
    """``{image, question, answer}`` rows: the real test questions, else 6,761 synthetic ones on 858 images."""
    if REAL.is_file():
        rows = []
        for entry in json.loads(REAL.read_text(encoding="utf-8")):
            for question, label in zip(entry["sentf"]["pvqa"], entry["labelf"]["pvqa"], strict=True):
                rows.append({"image": entry["img_id"], "question": question, "answer": next(iter(label))})
        return rows
    return [{"image": f"test_{i % 858:04d}", "question": f"question {i}?", "answer": "yes"} for i in range(6761)]


def build(root: Path, size: int) -> None:
    rows = questions()
    (root / "qas" / "test").mkdir(parents=True)
    with (root / "qas" / "test" / "test_qa.pkl").open("wb") as handle:
        pickle.dump(rows, handle, protocol=2)
    images = root / "images" / "test"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in sorted({r["image"] for r in rows}):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)).save(buf, format="JPEG")
        (images / f"{name}.jpg").write_bytes(buf.getvalue())


@contextlib.contextmanager
def no_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=768, help="image side in pixels (default 768)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pathvqa"
        build(root, args.size)
        split = get_task("pathvqa").load(DataSource("local", root), "test", LoadOptions())
        samples = split.samples
        distinct = len({s.image for s in samples})
        naive = timed(lambda: [open_image(s.image, None) for s in samples])
        ours = timed(lambda: image_digests(samples, True, no_progress, "pathvqa"))
    source = "real pvqa_test.json questions" if REAL.is_file() else "synthetic questions"
    print(f"PathVQA test layout ({source}), {len(samples)} samples on {distinct} images of {args.size}x{args.size}")
    print(f"machine: {platform.machine()}, {platform.processor() or '?'}; python {platform.python_version()}")
    print(f"{'method':<44}{'decodes':>9}{'seconds':>10}")
    print(f"{'naive: decode per sample':<44}{len(samples):>9}{naive:>10.2f}")
    print(f"{'medbench: read+hash per image, decode once':<44}{distinct:>9}{ours:>10.2f}")
    print(f"speed-up: {naive / ours:.1f}x")


if __name__ == "__main__":
    main()
