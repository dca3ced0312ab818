"""Thumbnails: made from files, zip members and parquet cells, named by content, reused, and never shown when the
image is unreachable or no longer the run's image."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

from PIL import Image

from medbench.reports.thumbs import THUMB_SIZE, make_thumbnails, thumb_name


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_file_zip_and_parquet_images_become_small_jpegs(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "data"
    root.mkdir()
    red, green, blue = jpeg((200, 0, 0)), jpeg((0, 200, 0)), jpeg((0, 0, 200), (300, 900))
    (root / "a.jpg").write_bytes(red)
    with zipfile.ZipFile(root / "imgs.zip", "w") as z:
        z.writestr("imgs/b.jpg", green)
    table = pa.table({"image": [{"bytes": blue, "path": "c.jpg"}]})
    pq.write_table(table, root / "test.parquet")
    records = [
        {"kind": "file", "path": "a.jpg", "sha256": sha(red)},
        {"kind": "zip", "path": "imgs.zip", "member": "imgs/b.jpg", "sha256": sha(green)},
        {"kind": "parquet", "path": "test.parquet", "member": "image", "row_group": 0, "row": 0, "sha256": sha(blue)},
        {"kind": "file", "path": "a.jpg", "sha256": sha(red)},  # the same image twice: one thumbnail
    ]
    out = tmp_path / "site"
    thumbs = make_thumbnails([(r, root) for r in records], out)
    assert len(thumbs) == 3
    for record in records:
        thumb = thumbs[record["sha256"]]
        assert thumb.src == thumb_name(record["sha256"]) and thumb.why is None
        with Image.open(out / thumb.src) as im:
            assert im.format == "JPEG" and max(im.size) <= THUMB_SIZE
    with Image.open(out / thumbs[sha(blue)].src) as im:
        assert im.size[1] == THUMB_SIZE and im.size[0] < THUMB_SIZE  # aspect ratio kept
        r, _, b = im.convert("RGB").getpixel((im.size[0] // 2, im.size[1] // 2))
        assert b > 150 and r < 60  # the parquet cell's image, not another one


def test_existing_thumbnails_are_reused_even_when_the_data_folder_is_gone(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    data = jpeg((10, 20, 30))
    (root / "x.jpg").write_bytes(data)
    record = {"kind": "file", "path": "x.jpg", "sha256": sha(data)}
    out = tmp_path / "site"
    first = make_thumbnails([(record, root)], out)[sha(data)]
    (root / "x.jpg").unlink()
    again = make_thumbnails([(record, root)], out)[sha(data)]
    assert again == first and (out / str(again.src)).is_file()


def test_unreachable_or_changed_images_get_a_reason_not_a_thumbnail(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    old, new = jpeg((1, 2, 3)), jpeg((250, 250, 250))
    (root / "x.jpg").write_bytes(new)  # the file was replaced after the run recorded the old image's digest
    changed = {"kind": "file", "path": "x.jpg", "sha256": sha(old)}
    missing = {"kind": "file", "path": "gone.jpg", "sha256": "0" * 64}
    no_root = {"kind": "file", "path": "x.jpg", "sha256": "1" * 64}
    out = tmp_path / "site"
    thumbs = make_thumbnails([(changed, root), (missing, root), (no_root, None)], out)
    assert thumbs[sha(old)].src is None and "changed since the run" in str(thumbs[sha(old)].why)
    assert thumbs["0" * 64].src is None and "not reachable" in str(thumbs["0" * 64].why)
    assert "does not record its data folder" in str(thumbs["1" * 64].why)
    assert not (out / "thumbs").exists() or not any((out / "thumbs").iterdir())
