from pathlib import Path

import pytest
from conftest import image_bytes
from PIL import Image

from medbench.errors import SampleError
from medbench.images import open_image, safe_join, safe_member
from medbench.schema import ImageRef


@pytest.mark.parametrize("bad", ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "C:/x.jpg", "..", "", "a\x00b"])
def test_safe_join_refuses_escapes(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SampleError):
        safe_join(tmp_path, bad, where="file.json[3]")


def test_safe_join_allows_inner_paths(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a/./b/../c.jpg", where="x") == tmp_path / "a" / "c.jpg"


@pytest.mark.parametrize("bad", ["../x", "/abs", "a/../../b"])
def test_safe_member_refuses_escapes(bad: str) -> None:
    with pytest.raises(SampleError, match="escapes the archive"):
        safe_member(bad, where="row 1")


def test_grayscale_is_converted_to_rgb_and_resized(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.new("L", (10, 20), 128).save(path)
    image = ImageRef("file", str(path)).open()
    assert image.mode == "RGB" and image.size == (512, 512)


def test_corrupt_and_missing_images_raise_sample_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "bad.jpg"
    corrupt.write_bytes(b"definitely not a jpeg")
    with pytest.raises(SampleError, match=r"bad\.jpg: image is corrupt"):
        open_image(ImageRef("file", str(corrupt)), None)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(image_bytes(1)[:200])
    with pytest.raises(SampleError, match="corrupt"):
        open_image(ImageRef("file", str(truncated)), None)
    with pytest.raises(SampleError, match="cannot be read"):
        open_image(ImageRef("file", str(tmp_path / "missing.jpg")), None)
