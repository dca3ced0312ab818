"""What the ``openai:`` adapter sends for images (issue 14 point 5), against the local fake server.

Guarded here:
* an image shared by several requests is decoded and PNG-encoded once, within a batch and across batches (the old
  adapter encoded it once per request), and one image under two file names shares the encoding;
* the cache key is the image's content plus the resize setting: two different images with the same file name,
  size and zip member name are never served each other's data URL;
* the wire format: the server receives exactly ``data:image/png;base64,`` + the zlib-level-1 PNG of the pipeline's
  pixels (RGB, resized), and those pixels decode back unchanged; the request body is exactly the adapter's payload
  (sent through the client's generic ``post``, nothing added or dropped);
* the cache is bounded (least recently used evicted), single-flight (concurrent requests for one image encode it
  once) and caches no failure; an undecodable image stays a ``SampleError`` naming its own file;
* the default batch holds several rounds of ``concurrency`` requests, and a smaller ``--batch-size`` is logged.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import FakeOpenAIServer, image_urls
from PIL import Image

pytest.importorskip("openai")

from medbench.errors import SampleError
from medbench.models import openai_compat
from medbench.models.openai_compat import ImageURLCache, OpenAICompatModel
from medbench.schema import ImageRef, Request

FAST = {"backoff_base": "0.001", "backoff_max": "0.01", "timeout": "5", "max_retries": "0"}
PREFIX = "data:image/png;base64,"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def png_saves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts PNG encodes into a buffer (``Image.save(buf, format="PNG")``, as any encoder must name the format) from
    here on, whoever calls them; saving test files by path (format from the suffix) is not counted."""
    calls: list[int] = []
    original = Image.Image.save

    def counting(self: Image.Image, fp: Any, format: str | None = None, **params: Any) -> None:
        if (format or "").upper() == "PNG":
            calls.append(1)
        original(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", counting)
    return calls


def picture(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> ImageRef:
    """A small two-tone image file (so resizing has something to blend) and its reference."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, color)
    image.paste((color[2], color[0], color[1]), (0, 0, size[0] // 2, size[1]))
    image.save(path)
    return ImageRef("file", str(path))


def req(image: ImageRef, i: int, size: int | None = 32) -> Request:
    return Request(f"s{i:02d}", "t", "vqa", f"<q{i:02d}> what is shown?", "what?", image, size, 8)


def model(server: FakeOpenAIServer, **options: str) -> OpenAICompatModel:
    return OpenAICompatModel("openai:tiny", base_url=server.base_url, **{**FAST, **options})


def url_by_prompt(server: FakeOpenAIServer) -> dict[str, str]:
    """The image URL the server received for each prompt."""
    return {p["messages"][0]["content"][1]["text"]: image_urls(p)[0] for p in server.payloads}


def decoded(url: str) -> Image.Image:
    assert url.startswith(PREFIX)
    image = Image.open(io.BytesIO(base64.b64decode(url[len(PREFIX) :])))
    assert image.format == "PNG"
    return image


def test_shared_image_is_encoded_once(server: FakeOpenAIServer, tmp_path: Path, png_saves: list[int]) -> None:
    # The old adapter encoded every request's image: 9 + 3 PNG encodes here instead of 2.
    a = picture(tmp_path / "a.png", (200, 30, 30))
    b = picture(tmp_path / "b.png", (20, 180, 90))
    m = model(server, concurrency="6")
    requests = [req(a, i) for i in range(6)] + [req(b, i) for i in range(6, 9)]
    assert len(m.generate(requests)) == 9
    assert len(png_saves) == 2
    assert m.image_cache.encoded == 2 and m.image_cache.hits == 7
    urls = url_by_prompt(server)
    assert len({urls[r.prompt] for r in requests[:6]}) == 1 and urls[requests[0].prompt] != urls[requests[6].prompt]
    # The next batch (the runner's next generate call) reuses the encodings, and a copy of ``a`` under another
    # name is the same content, so it shares them too.
    copy = tmp_path / "elsewhere" / "copy-of-a.png"
    copy.parent.mkdir()
    copy.write_bytes(Path(a.path).read_bytes())
    m.generate([req(b, 9), req(ImageRef("file", str(copy)), 10)])
    assert len(png_saves) == 2
    # Another size is another image.
    m.generate([req(a, 11, size=48)])
    assert len(png_saves) == 3
    assert decoded(url_by_prompt(server)[req(a, 11).prompt]).size == (48, 48)
    # The runner releases a model when its work is done: the cache's memory goes with it.
    m.release()
    assert m.image_cache.bytes == 0
    m.generate([req(a, 12)])
    assert len(png_saves) == 4


def test_same_name_and_size_different_content_never_share(server: FakeOpenAIServer, tmp_path: Path) -> None:
    # Guards the cache key: keyed by file name, member name or dimensions, the second image would get the first's URL.
    red = picture(tmp_path / "one" / "img.png", (200, 30, 30))
    green = picture(tmp_path / "two" / "img.png", (30, 200, 30))
    archives = []
    for name, color in (("x.zip", (10, 10, 240)), ("y.zip", (240, 240, 10))):
        buf = io.BytesIO()
        Image.new("RGB", (24, 16), color).save(buf, format="PNG")
        with zipfile.ZipFile(tmp_path / name, "w") as zf:
            zf.writestr("imgs/img.png", buf.getvalue())
        archives.append(ImageRef("zip", str(tmp_path / name), "imgs/img.png"))
    refs = [red, green, *archives]
    m = model(server, concurrency="4")
    requests = [req(ref, i) for i, ref in enumerate(refs)] + [req(ref, 10 + i) for i, ref in enumerate(refs)]
    m.generate(requests)
    assert m.image_cache.encoded == 4
    urls = url_by_prompt(server)
    for ref, first, again in zip(refs, requests[:4], requests[4:], strict=True):
        assert urls[first.prompt] == urls[again.prompt]
        assert decoded(urls[first.prompt]).tobytes() == ref.open(32).tobytes()
    assert len({urls[r.prompt] for r in requests[:4]}) == 4


def test_server_receives_the_exact_data_url_and_body(server: FakeOpenAIServer, tmp_path: Path) -> None:
    # The wire format: a level-1 PNG of exactly the pipeline's pixels. The old adapter wrote PIL's default level 6
    # (other bytes, same pixels), and sent the payload through chat.completions.create.
    ref = picture(tmp_path / "scan.jpg", (180, 120, 60), size=(40, 30))
    m = model(server, seed="3")
    m.generate([req(ref, 0, size=32), req(ref, 1, size=None)])
    urls = url_by_prompt(server)
    for i, size in ((0, 32), (1, None)):
        pixels = ref.open(size)  # the evaluation's pipeline: RGB, resized unless size is None
        buf = io.BytesIO()
        pixels.save(buf, format="PNG", compress_level=1)
        expected = PREFIX + base64.b64encode(buf.getvalue()).decode("ascii")
        url = urls[req(ref, i).prompt]
        assert url == expected
        assert decoded(url).mode == "RGB" and decoded(url).tobytes() == pixels.tobytes()
        assert url == openai_compat.encode_image(req(ref, i, size=size))
    assert decoded(urls[req(ref, 1).prompt]).size == (40, 30)
    payload = next(p for p in server.payloads if p["messages"][0]["content"][1]["text"] == req(ref, 0).prompt)
    assert payload == {
        "model": "tiny",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": urls[req(ref, 0).prompt]}},
                    {"type": "text", "text": req(ref, 0).prompt},
                ],
            }
        ],
        "temperature": 0,
        "max_tokens": 8,
        "seed": 3,
    }
    assert server.paths[-1] == "/v1/chat/completions"


def test_png_level_is_recorded_but_not_fingerprinted(server: FakeOpenAIServer) -> None:
    # Same pixels, other bytes: predictions cached under the old encoding stay valid, so the fingerprint (which keys
    # the prediction cache) keeps the identity "png-data-url"; the run record says which level was used.
    m = model(server)
    assert m._identity()["image_encoding"] == "png-data-url"
    assert "png_compress_level" not in m._identity()
    assert m.describe()["png_compress_level"] == openai_compat.PNG_COMPRESS_LEVEL == 1


def _requests(tmp_path: Path, count: int) -> list[Request]:
    return [req(picture(tmp_path / f"p{i}.png", (40 * i % 256, 90, 200)), i) for i in range(count)]


def test_cache_is_bounded_least_recently_used(tmp_path: Path) -> None:
    first, second, third = _requests(tmp_path, 3)
    one = len(openai_compat.encode_image(first))
    cache = ImageURLCache(max_bytes=2 * one + one // 2)  # room for two of these URLs, not three
    for r in (first, second, first, third):  # ``first`` was used after ``second``: ``second`` is evicted
        cache.url(r)
    assert cache.encoded == 3 and cache.hits == 1 and cache.bytes <= cache.max_bytes
    cache.url(first)
    assert cache.encoded == 3
    cache.url(second)
    assert cache.encoded == 4
    nothing = ImageURLCache(max_bytes=0)  # keeps nothing
    nothing.url(first)
    nothing.url(first)
    assert nothing.encoded == 2 and nothing.bytes == 0


def test_concurrent_requests_for_one_image_encode_it_once(tmp_path: Path) -> None:
    # Single flight: threads that ask while the first one is encoding wait for its result. Whenever each thread
    # arrives (before, during or after the encode), the image is encoded exactly once.
    cache = ImageURLCache()
    started, release = threading.Event(), threading.Event()
    made: list[int] = []

    def slow() -> str:
        made.append(1)
        started.set()
        release.wait(5)
        return PREFIX + "AAAA"

    key = ("digest", 32)
    results: list[str] = []
    owner = threading.Thread(target=lambda: results.append(cache._get(key, slow)))
    owner.start()
    assert started.wait(5)
    others = [threading.Thread(target=lambda: results.append(cache._get(key, slow))) for _ in range(4)]
    for t in others:
        t.start()
    release.set()
    for t in [owner, *others]:
        t.join(5)
    assert results == [PREFIX + "AAAA"] * 5
    assert len(made) == 1 and cache.encoded == 1 and cache.hits == 4
    assert not cache._pending


def test_failed_encode_is_not_cached_and_each_caller_gets_its_own_error(tmp_path: Path) -> None:
    cache = ImageURLCache()
    started, release = threading.Event(), threading.Event()

    def failing(name: str) -> Callable[[], str]:
        def make() -> str:
            started.set()
            release.wait(5)
            raise SampleError(f"{name}: image is corrupt")

        return make

    key = ("digest", 32)
    errors: list[str] = []

    def ask(name: str) -> None:
        try:
            cache._get(key, failing(name))
        except SampleError as exc:
            errors.append(str(exc))

    owner = threading.Thread(target=ask, args=("first.png",))
    owner.start()
    assert started.wait(5)
    other = threading.Thread(target=ask, args=("second.png",))
    other.start()
    release.set()
    owner.join(5)
    other.join(5)
    assert sorted(errors) == ["first.png: image is corrupt", "second.png: image is corrupt"]
    assert not cache._pending and not cache._urls and cache.encoded == 0


def test_undecodable_image_is_a_sample_error_naming_its_file(server: FakeOpenAIServer, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    m = model(server)
    with pytest.raises(SampleError, match=r"broken\.png"):
        m.generate([req(ImageRef("file", str(bad)), 0)])
    assert not m.image_cache._urls and server.calls == 0


def test_default_batch_holds_several_rounds_of_concurrency(
    server: FakeOpenAIServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A batch of ``concurrency`` requests (the old fixed 32 at concurrency 32) waited for its slowest request every
    # round, and concurrency 64 never had 64 in flight; the runner now also overlaps two batches.
    assert model(server).batch_size == 64  # default concurrency 8
    assert model(server, concurrency="4").batch_size == 32  # never below the old 32
    assert model(server, concurrency="64").batch_size == 512
    m = model(server, concurrency="16")
    m.batch_size = 7  # what --batch-size 7 does (the runner sets it): two batches of 7 cannot fill 16 slots
    caplog.set_level(logging.WARNING, logger="medbench")
    ref = picture(tmp_path / "a.png", (1, 2, 3))
    m.generate([req(ref, 0)])
    m.generate([req(ref, 1)])
    warnings = [r.getMessage() for r in caplog.records if "in flight" in r.getMessage()]
    assert len(warnings) == 1 and "batch size 7 is below half of concurrency=16" in warnings[0]
