"""The ``openai:<model>`` adapter against a local fake OpenAI-compatible server (no network beyond 127.0.0.1)."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import FakeOpenAIServer, Reply, image_urls
from PIL import Image

pytest.importorskip("openai")

from medbench.errors import UsageError
from medbench.models.openai_compat import EndpointError, OpenAICompatModel
from medbench.schema import ImageRef, Request, TaskKind

SECRET = "sk-test-SECRET-0123456789abcdef"
FAST = {"backoff_base": "0.001", "backoff_max": "0.01", "timeout": "5"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "MEDBENCH_TEST_KEY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def image(tmp_path: Path) -> ImageRef:
    path = tmp_path / "img.png"
    Image.new("RGB", (24, 16), (200, 30, 30)).save(path)
    return ImageRef("file", str(path))


def req(image: ImageRef, i: int, *, size: int | None = 32, kind: TaskKind = "vqa", max_new: int = 32) -> Request:
    return Request(f"s{i:02d}", "t", kind, f"<q{i:02d}> what is shown?", "what?", image, size, max_new)


def model(server: FakeOpenAIServer, **options: str) -> OpenAICompatModel:
    return OpenAICompatModel("openai:tiny", base_url=server.base_url, **{**FAST, **options})


def test_outputs_come_back_in_request_order(server: FakeOpenAIServer, image: ImageRef) -> None:
    # Early requests answer last, so completion order is the reverse of request order.
    for i in range(6):
        server.on_prompt(f"<q{i:02d}>", Reply.hang(0.05 * (6 - i)))
    requests = [req(image, i) for i in range(6)]
    m = model(server, concurrency="6")
    assert m.generate(requests) == [f"echo: {r.prompt}" for r in requests]
    assert m.generate([]) == []
    described = m.describe()
    assert described["server_model"] == "fake-served-model-v1"
    assert described["model"] == "tiny"
    assert described["temperature"] == 0.0
    assert described["max_tokens"] == {"vqa": 32}
    assert described["base_url"] == server.base_url


def test_request_payload_and_image_data_url(server: FakeOpenAIServer, image: ImageRef) -> None:
    m = model(server, seed="7")
    m.generate([req(image, 0, size=64, max_new=5), req(image, 1, size=None, kind="caption", max_new=200)])
    by_prompt = {p["messages"][0]["content"][1]["text"]: p for p in server.payloads}
    sized, original = by_prompt["<q00> what is shown?"], by_prompt["<q01> what is shown?"]
    for payload, expected_size, max_new in ((sized, (64, 64), 5), (original, (24, 16), 200)):
        assert payload["model"] == "tiny"
        assert payload["temperature"] == 0
        assert payload["seed"] == 7
        assert payload["max_tokens"] == max_new
        parts = payload["messages"][0]["content"]
        assert [p["type"] for p in parts] == ["image_url", "text"]
        (url,) = image_urls(payload)
        prefix = "data:image/png;base64,"
        assert url.startswith(prefix)
        decoded = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
        assert decoded.format == "PNG"
        assert decoded.size == expected_size
    assert m.describe()["max_tokens"] == {"caption": 200, "vqa": 5}
    assert server.paths == ["/v1/chat/completions"] * 2
    # No seed option: no seed field.
    model(server).generate([req(image, 2)])
    assert "seed" not in server.payloads[-1]


def test_concurrency_bound_is_respected(image: ImageRef) -> None:
    with FakeOpenAIServer(latency=0.1) as server:
        out = model(server, concurrency="3").generate([req(image, i) for i in range(12)])
        assert len(out) == 12
        assert 1 < server.max_in_flight <= 3
    with FakeOpenAIServer(latency=0.02) as server:
        model(server, concurrency="1").generate([req(image, i) for i in range(4)])
        assert server.max_in_flight == 1


def test_429_then_success(server: FakeOpenAIServer, image: ImageRef) -> None:
    server.script(Reply.error(429, retry_after="0"), Reply.error(429, retry_after="0"))
    assert model(server, max_retries="2").generate([req(image, 0)]) == ["echo: <q00> what is shown?"]
    assert server.calls == 3


def test_retry_after_is_honoured(server: FakeOpenAIServer, image: ImageRef) -> None:
    server.script(Reply.error(429, retry_after="1"))
    start = time.monotonic()
    model(server).generate([req(image, 0)])
    assert time.monotonic() - start >= 0.95  # the backoff alone would wait ~1 ms
    assert server.calls == 2


def test_500s_retry_then_fail_clearly(server: FakeOpenAIServer, image: ImageRef) -> None:
    server.on_prompt("<q03>", Reply.error(500))
    m = model(server, max_retries="2")
    with pytest.raises(EndpointError) as info:
        m.generate([req(image, i) for i in range(4)])
    text = str(info.value)
    assert info.value.sample_id == "s03"
    assert "sample s03" in text and "3 attempt" in text and "HTTP 500" in text and server.base_url in text
    assert server.calls == 3 + 3  # three good samples once each, s03 three times
    # A 500 that clears up is retried to success.
    server2_calls = server.calls
    server.script(Reply.error(503), Reply.error(502))
    assert model(server).generate([req(image, 0)]) == ["echo: <q00> what is shown?"]
    assert server.calls - server2_calls == 3


def test_timeout_is_retried(server: FakeOpenAIServer, image: ImageRef) -> None:
    server.script(Reply.hang(3.0))
    start = time.monotonic()
    assert model(server, timeout="0.3").generate([req(image, 0)]) == ["echo: <q00> what is shown?"]
    assert time.monotonic() - start < 2.5
    assert server.calls == 2


def test_timeout_exhausted_names_the_timeout(server: FakeOpenAIServer, image: ImageRef) -> None:
    server.default = Reply.hang(1.0)
    with pytest.raises(EndpointError, match=r"sample s00.*2 attempt.*timed out"):
        model(server, timeout="0.2", max_retries="1").generate([req(image, 0)])


@pytest.mark.parametrize("variant", ["no_choices", "null_content", "not_json", "truncated"])
def test_malformed_body_is_retried_then_fails(server: FakeOpenAIServer, image: ImageRef, variant: str) -> None:
    server.script(Reply.malformed(variant))
    assert model(server).generate([req(image, 0)]) == ["echo: <q00> what is shown?"]
    assert server.calls == 2
    server.default = Reply.malformed(variant)
    with pytest.raises(EndpointError, match=r"sample s01.*malformed response"):
        model(server, max_retries="1").generate([req(image, 1)])
    assert server.calls == 2 + 2


def test_non_retryable_4xx_fails_fast(server: FakeOpenAIServer, image: ImageRef) -> None:
    server.on_prompt("<q00>", Reply.error(400))
    m = model(server, max_retries="5", backoff_base="5", backoff_max="5", concurrency="1")
    start = time.monotonic()
    with pytest.raises(EndpointError) as info:
        m.generate([req(image, i) for i in range(8)])
    assert time.monotonic() - start < 2
    assert info.value.status == 400
    text = str(info.value)
    assert "sample s00" in text and "HTTP 400" in text and server.base_url + "/chat/completions" in text
    assert "scripted HTTP 400" in text  # the server's own message is passed on
    assert server.calls < 8  # the rest of the batch was abandoned


def test_connection_errors_are_retried_then_fail(image: ImageRef) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    m = OpenAICompatModel("openai:tiny", base_url=f"http://127.0.0.1:{port}/v1", max_retries="1", **FAST)
    with pytest.raises(EndpointError, match=r"sample s00.*2 attempt.*connection error"):
        m.generate([req(image, 0)])


def _assert_no_secret(*texts: Any) -> None:
    for text in texts:
        assert SECRET not in str(text)
        assert SECRET[3:20] not in str(text)


def test_key_reaches_server_but_never_leaks(
    monkeypatch: pytest.MonkeyPatch, image: ImageRef, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MEDBENCH_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG, logger="medbench")
    with FakeOpenAIServer(require_key=SECRET) as server:
        m = model(server, api_key_env="MEDBENCH_TEST_KEY", max_retries="1")
        assert m.generate([req(image, 0)]) == ["echo: <q00> what is shown?"]
        assert server.auth_headers == [f"Bearer {SECRET}"]
        assert m.describe()["server_model"] == "fake-served-model-v1"
        _assert_no_secret(m.describe(), m.fingerprint(), repr(m), m.options, vars(m).get("options"))

        # Error bodies that quote the Authorization header (retryable, then fatal) never reach our messages.
        server.on_prompt("<q01>", Reply.error(500))
        server.on_prompt("<q02>", Reply.error(422))
        errors = []
        for i in (1, 2):
            with pytest.raises(EndpointError) as info:
                m.generate([req(image, i)])
            errors.append(info.value)
        assert "HTTP 500" in str(errors[0]) and "HTTP 422" in str(errors[1])
        assert "Authorization: Bearer ***" in str(errors[1])
        _assert_no_secret(*errors, *(repr(e) for e in errors), *(e.__cause__ for e in errors), caplog.text)
        assert "retrying" in caplog.text  # the retry was logged, scrubbed

    # Wrong key: 401 fails fast, names the variable (not the key).
    with FakeOpenAIServer(require_key="sk-some-other-key") as server:
        m = model(server, api_key_env="MEDBENCH_TEST_KEY")
        with pytest.raises(EndpointError, match=r"HTTP 401.*\$MEDBENCH_TEST_KEY") as info:
            m.generate([req(image, 0)])
        assert server.calls == 1
        _assert_no_secret(info.value, repr(info.value), caplog.text)


def test_default_key_env_and_placeholder(
    monkeypatch: pytest.MonkeyPatch, server: FakeOpenAIServer, image: ImageRef
) -> None:
    model(server).generate([req(image, 0)])
    assert server.auth_headers[-1] == "Bearer EMPTY"  # no OPENAI_API_KEY: local servers need no key
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    model(server).generate([req(image, 0)])
    # Guards: $OPENAI_API_KEY was sent to whatever base_url was set (here a local server).
    assert server.auth_headers[-1] == "Bearer EMPTY"
    m = model(server, api_key_env="OPENAI_API_KEY")  # named by the user: sent to this endpoint
    m.generate([req(image, 0)])
    assert server.auth_headers[-1] == f"Bearer {SECRET}"
    _assert_no_secret(m.describe(), m.fingerprint())
    assert OpenAICompatModel("openai:gpt-4o").api_key_env == "OPENAI_API_KEY"  # OpenAI's own host keeps the default
    with pytest.raises(UsageError, match="MEDBENCH_TEST_KEY"):
        model(server, api_key_env="MEDBENCH_TEST_KEY")  # named explicitly but unset


def test_base_url_from_environment_and_redaction(monkeypatch: pytest.MonkeyPatch, server: FakeOpenAIServer) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/")
    assert OpenAICompatModel("openai:tiny").describe()["base_url"] == server.base_url
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert OpenAICompatModel("openai:tiny").describe()["base_url"] == "https://api.openai.com/v1"
    m = OpenAICompatModel("openai:tiny", base_url="https://user:s3cr3t-pw@proxy.example:8443/v1?token=t0k3n-q")
    assert m.describe()["base_url"] == "https://proxy.example:8443/v1"
    for text in (repr(m), json.dumps(m.describe())):
        assert "s3cr3t-pw" not in text and "t0k3n-q" not in text


def test_options_are_validated() -> None:
    with pytest.raises(UsageError, match="api_key_env"):
        OpenAICompatModel("openai:tiny", api_key="sk-x")
    with pytest.raises(UsageError, match="concurency"):
        OpenAICompatModel("openai:tiny", concurency="4")
    with pytest.raises(UsageError, match="concurrency"):
        OpenAICompatModel("openai:tiny", concurrency="0")
    with pytest.raises(UsageError, match="timeout"):
        OpenAICompatModel("openai:tiny", timeout="soon")
    with pytest.raises(UsageError, match="openai:<served model name>"):
        OpenAICompatModel("openai:")
    m = OpenAICompatModel("openai:org/model-7b", concurrency="4", max_retries="0", timeout="2.5", seed="3")
    assert (m.model, m.concurrency, m.max_retries, m.timeout, m.seed) == ("org/model-7b", 4, 0, 2.5, 3)
    assert m.batch_size == 32
    assert OpenAICompatModel.uses_images


def test_fingerprint_ignores_transport_settings(server: FakeOpenAIServer) -> None:
    a = model(server, concurrency="2", timeout="3")
    b = model(server, concurrency="16", max_retries="0")
    assert a.fingerprint() == b.fingerprint()
    assert model(server, seed="1").fingerprint() != a.fingerprint()
    assert OpenAICompatModel("openai:other", base_url=server.base_url).fingerprint() != a.fingerprint()


def test_fingerprint_is_stable_across_generation(server: FakeOpenAIServer, image: ImageRef) -> None:
    # The prediction cache keys requests with the fingerprint taken before generating.
    m = model(server)
    before = m.fingerprint()
    m.generate([req(image, 0)])
    assert m.describe()["server_model"] == "fake-served-model-v1"
    assert m.fingerprint() == before


def test_create_model_via_registry(server: FakeOpenAIServer, image: ImageRef) -> None:
    from medbench.registry import create_model, model_registry

    entry = model_registry().get("openai:")
    if entry is None or not entry.prefix:
        pytest.skip("openai: is not registered yet")
    m = create_model("openai:tiny", base_url=server.base_url, **FAST)
    assert isinstance(m, OpenAICompatModel)
    assert m.generate([req(image, 0)]) == ["echo: <q00> what is shown?"]


def test_overlapping_batches_share_one_concurrency_bound(image: ImageRef) -> None:
    # The runner overlaps two batches (two generate calls at once): both queue in the adapter's one pool.
    import threading

    with FakeOpenAIServer(latency=0.05) as server:
        m = model(server, concurrency="3")
        assert m.overlaps_batches
        outs: dict[int, list[str]] = {}
        threads = [
            threading.Thread(
                target=lambda b=b: outs.__setitem__(b, m.generate([req(image, 6 * b + i) for i in range(6)]))
            )
            for b in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(outs) == [0, 1] and all(len(o) == 6 for o in outs.values())
        assert outs[1][0] == "echo: <q06> what is shown?"
        assert server.calls == 12 and server.max_in_flight <= 3
        m.release()  # stops the workers; a later call starts new ones
        assert m.generate([req(image, 0)]) == ["echo: <q00> what is shown?"]


def test_cancel_stops_a_call_in_another_thread(image: ImageRef) -> None:
    import threading

    with FakeOpenAIServer() as server:
        server.on_prompt("<q00>", Reply.hang(0.5))
        m = model(server, concurrency="1")
        raised: list[BaseException] = []

        def call() -> None:
            try:
                m.generate([req(image, i) for i in range(5)])
            except BaseException as exc:
                raised.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        deadline = time.monotonic() + 10
        while server.calls < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        m.cancel()
        thread.join(10)
        assert not thread.is_alive()
        assert len(raised) == 1 and "generation cancelled" in str(raised[0])
        assert server.calls == 1  # the 4 queued requests were never sent
