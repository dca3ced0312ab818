"""Judge throughput: 1,000 Appendix D caption judgements against a local OpenAI-compatible server that takes
200 ms per request, through the real judge path (JudgeClient + judge cache + score parser).

Rows printed:
* naive: one request at a time (what a plain loop over ``client.chat.completions.create`` does), timed on the first
  50 judgements and extrapolated to 1,000;
* medbench at the old default concurrency (16), at the default (32), then at 64;
* the rerun at the default concurrency with the judge cache filled: it must make 0 calls.

With 200 ms per request and C requests in flight, 1,000 judgements cannot take less than 1000 * 0.2 / C seconds
(the "floor" column): 12.5 s at C=16, 6.25 s at C=32.

Then a rate-limited server: it answers HTTP 429 at once (no Retry-After) to a request that arrives while more than
``--limit`` (8) are in flight, as a provider's per-user concurrency cap does. ``--limited-n`` (400) judgements each
with the default retry settings: a fixed 32 in flight (the client before issue 10.8, AIMD off), the adaptive default
(AIMD from 32), and a fixed limit equal to the server's (what a user who knew it would set). Floor: n * 0.2 / limit.

Run: python benchmarks/judge_throughput.py [--n 1000] [--latency 0.2] [--limit 8] [--limited-n 400]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from local_server import ForkedServer, QuietHandler

from medbench.judges.cache import JudgeCache
from medbench.judges.caption import judge_captions
from medbench.judges.client import JudgeClient, JudgeConfig
from medbench.judges.runs import DEFAULT_CONCURRENCY

OLD_DEFAULT = 16
LABELS = {OLD_DEFAULT: "medbench (old default)", DEFAULT_CONCURRENCY: "medbench (default)"}


class LatencyServer(ForkedServer):
    """``POST /v1/chat/completions`` answering every judge prompt after ``latency`` seconds with a score derived
    from the prompt's hash; counts calls and the most requests in flight. With ``limit``, a request arriving while
    more than ``limit`` are in flight (itself included) is answered HTTP 429 at once, and counted. It runs in its own
    process (as a real server does), so it does not compete with the client for the GIL."""

    def __init__(self, latency: float, limit: int | None = None) -> None:
        super().__init__()
        self.latency = latency
        self.limit = limit
        self._calls = self.ctx.Value("i", 0)
        self._refused = self.ctx.Value("i", 0)
        self.start(self._handler())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with server._calls.get_lock():
                    server._calls.value += 1
                in_flight = server.enter()
                refuse = server.limit is not None and in_flight > server.limit
                try:
                    if refuse:
                        with server._refused.get_lock():
                            server._refused.value += 1
                        status: int = 429
                        reply: dict[str, Any] = {
                            "error": {"message": "too many concurrent requests", "type": "rate_limit"}
                        }
                    else:
                        time.sleep(server.latency)
                        prompt = body["messages"][0]["content"]
                        score = 1 + int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 5
                        message = {"role": "assistant", "content": f"Reasoning: ok.\nScore: {score}"}
                        status = 200
                        reply = {"id": "bench", "object": "chat.completion", "model": "bench-judge"}
                        reply |= {"choices": [{"index": 0, "message": message}]}
                finally:
                    server.leave()  # before the reply is written (see ForkedServer.leave)
                self._reply(status, reply)

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    @property
    def calls(self) -> int:
        return int(self._calls.value)

    @property
    def refused(self) -> int:
        return int(self._refused.value)

    def reset(self) -> None:
        self._calls.value = 0
        self.reset_peak()
        self._refused.value = 0


def pairs(n: int) -> list[tuple[str, str]]:
    """``n`` distinct (ground truth, generated) caption pairs (no two prompts alike, so nothing is deduplicated)."""
    sites = ["chest", "abdomen", "pelvis", "brain", "knee", "shoulder", "spine", "neck"]
    kinds = ["CT", "MRI", "X-ray", "ultrasound"]
    return [
        (
            f"Case {i}: axial {kinds[i % 4]} of the {sites[i % 8]} showing a {10 + i % 37} mm lesion.",
            f"{kinds[(i + 1) % 4]} image of the {sites[(i + 3) % 8]}, lesion of about {8 + i % 41} mm (case {i}).",
        )
        for i in range(n)
    ]


def timed(
    server: LatencyServer, concurrency: int, items: list[tuple[str, str]], cache: JudgeCache
) -> tuple[float, int]:
    """Seconds and server calls for judging ``items`` at ``concurrency``; every judgement must succeed."""
    seconds, calls, failures, _ = judge_with(server, concurrency, items, cache, adaptive=True)
    if failures:
        raise SystemExit(f"{failures} judgements failed; the benchmark needs a healthy server")
    return seconds, calls


def judge_with(
    server: LatencyServer, concurrency: int, items: list[tuple[str, str]], cache: JudgeCache, *, adaptive: bool
) -> tuple[float, int, int, dict[str, Any]]:
    """Seconds, server calls, failed judgements and the client's in-flight-limit record for judging ``items``."""
    server.reset()
    config = JudgeConfig(
        "bench", base_url=server.base_url, model="bench-judge", concurrency=concurrency, adaptive=adaptive
    )
    client = JudgeClient(config)
    start = time.perf_counter()
    judgements = judge_captions(client, cache, items)
    elapsed = time.perf_counter() - start
    failures = sum(1 for j in judgements if j.value is None)
    return elapsed, server.calls, failures, client.describe()["adaptive_concurrency"]


def rate_limited(latency: float, limit: int, n: int) -> list[tuple[str, int, int, int, int, int, float, str]]:
    """Rows for the rate-limited comparison: mode, concurrency, judged, failed, calls, 429s, seconds, limit record."""
    server = LatencyServer(latency, limit)
    rows = []
    try:
        timed(server, 1, pairs(1), JudgeCache(None))  # warm-up
        items = pairs(n)
        for label, concurrency, adaptive in (
            (f"fixed {DEFAULT_CONCURRENCY} (adaptive=False)", DEFAULT_CONCURRENCY, False),
            (f"AIMD from {DEFAULT_CONCURRENCY} (default)", DEFAULT_CONCURRENCY, True),
            (f"fixed {limit} (the server's limit, known)", limit, False),
        ):
            seconds, calls, failures, record = judge_with(
                server, concurrency, items, JudgeCache(None), adaptive=adaptive
            )
            limits = f"{record['min']}/{record['final']} ({record['decreases']} decreases)" if adaptive else "-"
            rows.append((label, concurrency, n - failures, failures, calls, server.refused, seconds, limits))
    finally:
        server.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="judgements (default 1000)")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per request (default 0.2)")
    parser.add_argument("--limit", type=int, default=8, help="the rate-limited server's concurrency cap (default 8)")
    parser.add_argument("--limited-n", type=int, default=400, help="judgements against it (default 400)")
    args = parser.parse_args()
    items = pairs(args.n)
    server = LatencyServer(args.latency)
    rows: list[tuple[str, int, int, int, float, float | None]] = []
    try:
        timed(server, 1, pairs(1), JudgeCache(None))  # warm-up: the openai import and first connection are not timed
        with tempfile.TemporaryDirectory() as tmp:
            naive_n = min(50, args.n)
            seconds, calls = timed(server, 1, items[:naive_n], JudgeCache(None))
            rows.append(
                (
                    f"naive: 1 at a time ({naive_n}, extrapolated)",
                    1,
                    args.n,
                    calls,
                    seconds * args.n / naive_n,
                    args.n * args.latency,
                )
            )
            for concurrency in (OLD_DEFAULT, DEFAULT_CONCURRENCY, 64):
                cache = JudgeCache(Path(tmp) / f"judge-{concurrency}.sqlite")
                seconds, calls = timed(server, concurrency, items, cache)
                label = LABELS.get(concurrency, "medbench")
                rows.append((label, concurrency, args.n, calls, seconds, args.n * args.latency / concurrency))
                if concurrency == DEFAULT_CONCURRENCY:
                    peak = server.max_in_flight
                    seconds, calls = timed(server, concurrency, items, cache)
                    rows.append(("medbench rerun (judge cache)", concurrency, args.n, calls, seconds, None))
                cache.close()
    finally:
        server.stop()
    limited = rate_limited(args.latency, args.limit, args.limited_n)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}; "
        f"server latency {args.latency * 1000:.0f} ms per request"
    )
    print(f"{'mode':44} {'conc':>5} {'judged':>7} {'calls':>6} {'wall s':>8} {'floor s':>8} {'per s':>8}")
    for label, concurrency, n, calls, seconds, floor in rows:
        floor_text = f"{floor:8.2f}" if floor is not None else f"{'-':>8}"
        print(f"{label:44} {concurrency:5d} {n:7d} {calls:6d} {seconds:8.2f} {floor_text} {n / seconds:8.1f}")
    default = next(r for r in rows if r[0] == "medbench (default)")
    rerun = next(r for r in rows if r[0].startswith("medbench rerun"))
    print(f"peak requests in flight at the default concurrency: {peak}")
    print(
        f"target <= 10 s at the default concurrency ({DEFAULT_CONCURRENCY}): {default[4]:.2f} s "
        f"({'met' if default[4] <= 10 else 'missed'}; floor {default[5]:.2f} s); rerun calls: {rerun[3]} (target 0)"
    )
    print()
    print(
        f"rate-limited server: HTTP 429 above {args.limit} in flight; {args.limited_n} judgements, floor "
        f"{args.limited_n * args.latency / args.limit:.2f} s; default retries (6, backoff from 1 s, no Retry-After)"
    )
    print(
        f"{'mode':40} {'conc':>5} {'judged':>7} {'failed':>7} {'calls':>6} {'429s':>6} {'wall s':>8}  limit min/final"
    )
    for label, concurrency, judged, failed, calls, refused, seconds, limits in limited:
        print(f"{label:40} {concurrency:5d} {judged:7d} {failed:7d} {calls:6d} {refused:6d} {seconds:8.2f}  {limits}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
