"""A small, scriptable OpenAI-compatible chat-completions server for tests (stdlib only).

    with FakeOpenAIServer(latency=0.05) as server:
        server.script(Reply.status(429, retry_after="0"), Reply.status(429, retry_after="0"))  # next 2 calls
        server.on_prompt("q7", Reply.status(500))                                            # every call for q7
        model = OpenAICompatModel("openai:tiny", base_url=server.base_url)
        ...
        server.calls, server.max_in_flight, server.payloads, server.auth_headers

Which reply a call gets: the first matching :meth:`on_prompt` rule (a substring of the prompt text), else the next
:meth:`script`-ed reply (in arrival order), else ``default`` (a well-formed answer ``"echo: <prompt>"``).
Error bodies quote the received ``Authorization`` header, as a careless proxy might, so tests can check that the
client never repeats a key. Everything is bounded: a hang lasts at most ``MAX_HANG_S`` and ends at shutdown,
request bodies are capped, and :meth:`stop` joins the serving thread with a timeout.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_HANG_S = 10.0
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    """What the server does with one call."""

    kind: str  # "ok" | "status" | "hang" | "malformed"
    status: int = 200
    retry_after: str | None = None
    seconds: float = 0.0
    variant: str = ""
    times: int | None = None  # for on_prompt rules: how many calls it applies to (None: all)

    @staticmethod
    def ok() -> Reply:
        return Reply("ok")

    @staticmethod
    def error(status: int, retry_after: str | None = None, times: int | None = None) -> Reply:
        return Reply("status", status=status, retry_after=retry_after, times=times)

    @staticmethod
    def hang(seconds: float = 5.0, times: int | None = None) -> Reply:
        return Reply("hang", seconds=min(seconds, MAX_HANG_S), times=times)

    @staticmethod
    def malformed(variant: str = "no_choices", times: int | None = None) -> Reply:
        """``variant``: ``no_choices``, ``null_content``, ``not_json`` or ``truncated``."""
        return Reply("malformed", variant=variant, times=times)


@dataclass
class _Rule:
    needle: str
    reply: Reply
    left: int | None = field(default=None)


class FakeOpenAIServer:
    """Serve ``POST .../chat/completions`` on 127.0.0.1 (a free port) from a background thread."""

    def __init__(
        self,
        *,
        require_key: str | None = None,
        latency: float = 0.0,
        served_model: str = "fake-served-model-v1",
    ) -> None:
        self.require_key = require_key
        self.latency = min(latency, MAX_HANG_S)
        self.served_model = served_model
        self.default = Reply.ok()
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.payloads: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        self.paths: list[str] = []
        self._script: deque[Reply] = deque()
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- scripting --------------------------------------------------------------------------------------------
    def script(self, *replies: Reply) -> None:
        """Queue replies for the next calls, one each, in arrival order."""
        with self._lock:
            self._script.extend(replies)

    def on_prompt(self, needle: str, reply: Reply) -> None:
        """Reply with ``reply`` to calls whose prompt text contains ``needle`` (``reply.times`` calls, or all)."""
        with self._lock:
            self._rules.append(_Rule(needle, reply, reply.times))

    def _choose(self, prompt: str) -> Reply:
        with self._lock:
            for rule in self._rules:
                if rule.needle in prompt and (rule.left is None or rule.left > 0):
                    if rule.left is not None:
                        rule.left -= 1
                    return rule.reply
            if self._script:
                return self._script.popleft()
            return self.default

    # --- lifecycle --------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FakeOpenAIServer:
        handler = type("Handler", (self.handler_base(),), {"fake": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # ends hangs and latencies early
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def handler_base(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class (subclasses answer differently)."""
        return _Handler

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- bookkeeping used by the handler ----------------------------------------------------------------------
    def _enter(self, payload: dict[str, Any], auth: str | None, path: str) -> None:
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.payloads.append(payload)
            self.auth_headers.append(auth)
            self.paths.append(path)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def sleep(self, seconds: float) -> None:
        self._stop.wait(min(max(seconds, 0.0), MAX_HANG_S))


def prompt_text(payload: dict[str, Any]) -> str:
    """The text parts of the payload's messages, joined."""
    texts = []
    for message in payload.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(texts)


def image_urls(payload: dict[str, Any]) -> list[str]:
    """Every ``image_url.url`` in the payload's messages, in order."""
    urls: list[str] = []
    for message in payload.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            urls.extend(p["image_url"]["url"] for p in content if isinstance(p, dict) and p.get("type") == "image_url")
    return urls


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAIServer  # set on the per-server subclass
    _done = False  # whether the current request has stopped counting as in flight
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _answered(self) -> None:
        """This request stops counting as in flight, once: before its response is written. Counting it until
        after the write let a busy machine see the client's next request (sent the moment this response arrived)
        while this handler thread had not yet run its bookkeeping, so ``max_in_flight`` overstated the client."""
        if not self._done:
            self._done = True
            self.fake._leave()

    def _send(self, status: int, body: bytes, content_type: str = "application/json", headers: Any = ()) -> None:
        self._answered()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers:
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass  # the client gave up (timeout): nothing to do

    def _error(self, status: int, message: str, headers: Any = ()) -> None:
        auth = self.headers.get("Authorization")
        body = {"error": {"message": f"{message} (request had Authorization: {auth})", "type": "fake", "code": status}}
        self._send(status, json.dumps(body).encode(), headers=headers)

    def do_POST(self) -> None:
        fake = self.fake
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY_BYTES)
        raw = self.rfile.read(length)
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"_unparsed": raw[:200].decode("latin-1")}
        auth = self.headers.get("Authorization")
        fake._enter(payload, auth, self.path)
        self._done = False  # a kept-alive connection reuses this handler for its next request
        try:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._error(404, f"no route {self.path}")
                return
            if fake.require_key is not None and auth != f"Bearer {fake.require_key}":
                self._error(401, "Incorrect API key provided")
                return
            prompt = prompt_text(payload)
            reply = fake._choose(prompt)
            if reply.kind == "hang":
                fake.sleep(reply.seconds)
            elif fake.latency:
                fake.sleep(fake.latency)
            if reply.kind == "status":
                headers = [("Retry-After", reply.retry_after)] if reply.retry_after is not None else []
                self._error(reply.status, f"scripted HTTP {reply.status}", headers)
            elif reply.kind == "malformed":
                self._malformed(reply.variant)
            else:
                self._ok(payload, prompt)
        finally:
            self._answered()  # a reply that was never written (the client hung up) leaves too

    def _ok(self, payload: dict[str, Any], prompt: str) -> None:
        body = {
            "id": f"chatcmpl-fake-{time.monotonic_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.fake.served_model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"echo: {prompt}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        self._send(200, json.dumps(body).encode())

    def _malformed(self, variant: str) -> None:
        if variant == "not_json":
            self._send(200, b"<html>upstream hiccup</html>", "text/html")
        elif variant == "truncated":
            self._send(200, b'{"choices": [{"message": ')
        elif variant == "null_content":
            body = {
                "model": self.fake.served_model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": None}}],
            }
            self._send(200, json.dumps(body).encode())
        else:
            self._send(200, json.dumps({"model": self.fake.served_model, "choices": []}).encode())
