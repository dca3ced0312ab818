"""The local HTTP server the client-side benchmarks measure against (``openai_throughput.py``, ``judge_throughput.py``).

It runs in a forked child process, as a real engine would, so that it does not compete with the measured client for
the GIL; it keeps connections alive and sends replies without Nagle's delay, as uvicorn (vLLM, SGLang) does; and it
counts the requests in flight, and the most at once, in memory shared with the parent. Create it before the
benchmark starts any thread (it forks).
"""

from __future__ import annotations

import multiprocessing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Listener(ThreadingHTTPServer):
    # socketserver's backlog of 5 drops the SYNs of a burst of new connections (each retried a second later);
    # uvicorn listens with 2048.
    request_queue_size = 2048
    daemon_threads = True


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler as a serving engine's: keep-alive (the client reuses its connections), no Nagle's delay
    (else delayed ACKs add ~40 ms a reply), no access log."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ForkedServer:
    """The shared part of a benchmark server: subclasses create their own shared counters from :attr:`ctx`, then
    call :meth:`start` with their handler class; its requests call :meth:`enter` and :meth:`leave`."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("fork")
        self._in_flight = self.ctx.Value("i", 0)
        self._peak = self.ctx.Value("i", 0)

    def start(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._httpd = Listener(("127.0.0.1", 0), handler)
        self._process = self.ctx.Process(target=self._httpd.serve_forever, daemon=True)
        self._process.start()
        self._httpd.socket.close()  # the child owns the listening socket now

    def enter(self) -> int:
        """A request arrived: the requests in flight now, this one included (the most so far is kept)."""
        with self._in_flight.get_lock():
            self._in_flight.value += 1
            self._peak.value = max(self._peak.value, self._in_flight.value)
            return int(self._in_flight.value)

    def leave(self) -> None:
        """A request is done: call it before its reply is written, since the client's next request may arrive as
        soon as the client has the reply, and must not be counted (or refused) as in flight beside this one."""
        with self._in_flight.get_lock():
            self._in_flight.value -= 1

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def max_in_flight(self) -> int:
        return int(self._peak.value)

    def reset_peak(self) -> None:
        self._peak.value = 0

    def stop(self) -> None:
        self._process.terminate()
        self._process.join(timeout=5)
