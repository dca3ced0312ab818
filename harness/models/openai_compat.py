"""``openai:<model>``: any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, hosted APIs).

Options (strings, from ``--model-arg openai:<model>.key=value``):

``base_url``
    The endpoint, e.g. ``http://localhost:8000/v1``; else ``$OPENAI_BASE_URL``; else the OpenAI default.
``api_key_env``
    The name of the environment variable that holds the key. The key itself is read from the environment only and
    never appears in :meth:`describe`, errors or logs. Default: ``OPENAI_API_KEY``, but only when the base URL is
    OpenAI's own host (``https://api.openai.com``); any other endpoint gets a placeholder key (local servers need
    none) unless a variable is named here. A variable named explicitly but unset is an error.
``concurrency`` (default 8), ``timeout`` (seconds per attempt, default 120), ``max_retries`` (default 5)
    ``concurrency`` requests are in flight at once: every ``generate`` call queues its requests in the adapter's
    one pool of ``concurrency`` workers. The runner hands the adapter batches of :attr:`batch_size` requests
    (``max(32, 8 * concurrency)`` unless ``--batch-size`` says otherwise) and, as the adapter
    :attr:`overlaps_batches`, starts the next batch while the current one finishes: its requests queue behind the
    current batch's and take the slots its last requests free, so the pool stays full across batches (each batch
    is still committed to the cache as soon as it is done). A ``--batch-size`` below half of ``concurrency`` caps
    the requests in flight at two batches (logged once).
``seed``
    Sent with every request when given. ``temperature`` is always 0 (greedy).
``backoff_base`` (default 1 s), ``backoff_max`` (default 60 s)
    Retry delay for attempt ``n`` (0-based) is ``min(backoff_max, backoff_base * 2**n)`` scaled by a random
    factor in [0.5, 1]; a ``Retry-After`` (or ``retry-after-ms``) header from the server takes precedence
    (capped at 300 s).

Retries (the loop shared with the judge client, :func:`medbench.endpoint.call_with_retries`; the ``openai``
client's built-in retries are off): HTTP 429, 408 and 5xx,
timeouts, connection errors and malformed response bodies (not JSON, no choices, no string content). Any
other 4xx fails at once. A request that still fails raises :class:`EndpointError` naming the sample and the
last error, and the rest of the batch is abandoned: a failure is never turned into an empty prediction.

Each request is one user message: the image as a base64 PNG data URL (``image_url`` part) followed by the
prompt text, with ``max_tokens=request.max_new_tokens``. The PNG holds exactly the pixels of the evaluation's image
pipeline (:func:`medbench.images.decode_image`: RGB, resized to ``request.image_size``), written with zlib level
:data:`PNG_COMPRESS_LEVEL` (lossless at any level, so the server decodes the same pixels; level 1 is ~3x faster
than PIL's default 6 for ~10 % more bytes). An image shared by several requests (SLAKE and VQA-RAD ask several
questions per image) is encoded once: :class:`ImageURLCache` keeps recent data URLs keyed by the sha256 of the
image's bytes and the resize setting, never by its file name.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from medbench.endpoint import (
    PLACEHOLDER_KEY,
    ErrorContext,
    RetryPolicy,
    RetryRun,
    Success,
    call_with_retries,
    endpoint_origin,
    parse_chat_body,
)
from medbench.errors import MedbenchError, UsageError
from medbench.images import decode_image, read_image_bytes
from medbench.models.base import Model
from medbench.provenance import redact_url
from medbench.schema import Request

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"


def _is_openai_host(base_url: str) -> bool:
    """Whether ``base_url`` is OpenAI's own origin (scheme, host and port), where ``$OPENAI_API_KEY`` belongs."""
    try:
        return endpoint_origin(base_url) == endpoint_origin(DEFAULT_BASE_URL)
    except ValueError:
        return False


_ERROR_DETAIL_CHARS = 500

_KNOWN_OPTIONS = (
    "base_url",
    "api_key_env",
    "concurrency",
    "timeout",
    "max_retries",
    "seed",
    "backoff_base",
    "backoff_max",
)


class EndpointError(MedbenchError):
    """A request to an OpenAI-compatible endpoint failed for good (after retries, or non-retryable)."""

    exit_code = 1

    def __init__(self, message: str, *, sample_id: str, status: int | None = None) -> None:
        super().__init__(message)
        self.sample_id = sample_id
        self.status = status


class _Aborted(Exception):
    """Another request of the batch failed (or the call was cancelled); this one stopped early."""


_N = TypeVar("_N", int, float)


def _number_option(options: Mapping[str, Any], key: str, default: _N, minimum: _N) -> _N:
    """``options[key]`` as the type of ``default`` (int or float), at least ``minimum``; ``default`` when absent."""
    value = options.get(key)
    if value is None:
        return default
    kind = type(default)
    try:
        number = kind(str(value).strip())
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise UsageError(f"openai model option {key}={value!r}: expected {expected}") from None
    if not number >= minimum:  # also rejects NaN
        raise UsageError(f"openai model option {key}={value!r}: must be at least {minimum}")
    return number


#: zlib level of the PNG sent. PNG is lossless at every level, so the level changes the bytes on the wire, never the
#: pixels the server decodes (hence not part of the fingerprint). On 512 px radiology images level 1 encodes in about
#: a third of the time of PIL's default 6 for ~10 % more bytes (``benchmarks/openai_throughput.py`` prints both).
PNG_COMPRESS_LEVEL = 1
#: How many bytes of data URLs :class:`ImageURLCache` keeps by default: every image of SLAKE (96) or VQA-RAD (203)
#: at 512 px (~0.2 MB each), and the most recent ~1,300 of a larger set.
IMAGE_CACHE_BYTES = 256 * 2**20
_PNG_PREFIX = "data:image/png;base64,"


def png_data_url(image: Image.Image) -> str:
    """``image`` as a ``data:image/png;base64,...`` URL (zlib level :data:`PNG_COMPRESS_LEVEL`)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return _PNG_PREFIX + base64.b64encode(buf.getvalue()).decode("ascii")


def encode_image(request: Request) -> str:
    """The request's image as a PNG data URL: its pixels exactly as the evaluation's pipeline decodes them (RGB,
    resized to ``request.image_size``). Uncached; the adapter goes through :class:`ImageURLCache`."""
    ref = request.image
    return png_data_url(decode_image(read_image_bytes(ref), where=ref.describe(), size=request.image_size or None))


_CacheKey = tuple[str, int]


class ImageURLCache:
    """Data URLs of recently sent images, so an image shared by several requests is decoded and encoded once.

    The key is the sha256 of the image's encoded bytes plus the resize setting: what decides the pixels. Two files
    with the same name (or the same zip member name in two archives) but other bytes get their own entries, and
    one image under two names shares one. At most ``max_bytes`` of URLs are kept, least recently used evicted
    first (``0``: nothing is kept). Thread-safe, and single-flight: while one thread encodes an image, another
    thread asking for the same key waits for that result instead of encoding it again.
    """

    def __init__(self, max_bytes: int = IMAGE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        #: Images decoded and encoded (cache misses) and requests answered from the cache or a pending encode.
        self.encoded = 0
        self.hits = 0
        self._urls: OrderedDict[_CacheKey, str] = OrderedDict()
        self._pending: dict[_CacheKey, Future[str]] = {}
        self._lock = threading.Lock()

    def url(self, request: Request) -> str:
        """The data URL of ``request``'s image (:func:`encode_image`'s result), from the cache when it holds it.
        An unreadable or undecodable image raises :class:`~medbench.errors.SampleError` naming this request's
        image, and nothing is cached for it."""
        ref = request.image
        data = read_image_bytes(ref)
        size = request.image_size or None  # None and 0 both keep the original size
        key = (hashlib.sha256(data).hexdigest(), size or 0)
        return self._get(key, lambda: png_data_url(decode_image(data, where=ref.describe(), size=size)))

    def _get(self, key: _CacheKey, make: Callable[[], str]) -> str:
        with self._lock:
            url = self._urls.get(key)
            if url is not None:
                self._urls.move_to_end(key)
                self.hits += 1
                return url
            pending = self._pending.get(key)
            owner = pending is None
            if pending is None:
                pending = self._pending[key] = Future()
        if not owner:
            try:
                url = pending.result()
            except Exception:
                # The owner's image failed to decode: encode this one ourselves, so its error names this
                # request's file (same bytes, so the same failure, but reported for the right sample).
                return self._encode(make)
            with self._lock:
                self.hits += 1
            return url
        try:
            url = self._encode(make)
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._pending[key]
            self._store(key, url)
        pending.set_result(url)
        return url

    def _encode(self, make: Callable[[], str]) -> str:
        url = make()
        with self._lock:
            self.encoded += 1
        return url

    def clear(self) -> None:
        """Drop every kept URL (the counters stay)."""
        with self._lock:
            self._urls.clear()
            self.bytes = 0

    def _store(self, key: _CacheKey, url: str) -> None:
        """Keep ``url`` (lock held), evicting the least recently used entries beyond :attr:`max_bytes`."""
        if len(url) > self.max_bytes or key in self._urls:
            return
        self._urls[key] = url
        self.bytes += len(url)
        while self.bytes > self.max_bytes:
            _, evicted = self._urls.popitem(last=False)
            self.bytes -= len(evicted)


class OpenAICompatModel(Model):
    """An OpenAI-compatible chat-completions endpoint; see the module docstring for options and retries."""

    uses_images: ClassVar[bool] = True
    #: The smallest default batch; the default is ``max(32, BATCH_ROUNDS * concurrency)`` (see __init__).
    batch_size = 32
    #: Rounds of ``concurrency`` requests per default batch. A batch drains before the runner commits it and starts
    #: the next, so its last round runs below the limit; with 8 rounds that tail is a small part of each batch,
    #: where a batch of ``concurrency`` requests (1 round) waits for its slowest request every time.
    BATCH_ROUNDS: ClassVar[int] = 8
    temperature: ClassVar[float] = 0.0
    overlaps_batches: ClassVar[bool] = True

    def __init__(self, name: str, **options: Any) -> None:
        if "api_key" in options:
            raise UsageError(
                "openai model option api_key is not accepted (keys must not appear on the command line or in the "
                "run record): put the key in an environment variable and pass api_key_env=<VARIABLE> "
                f"(default {DEFAULT_KEY_ENV})"
            )
        unknown = sorted(set(options) - set(_KNOWN_OPTIONS))
        if unknown:
            raise UsageError(
                f"unknown option(s) for {name}: {', '.join(unknown)}; known options: {', '.join(_KNOWN_OPTIONS)}"
            )
        super().__init__(name, **options)
        _, sep, model = name.partition(":")
        if not sep or not model.strip():
            raise UsageError(f"model name {name!r}: expected openai:<served model name>, e.g. openai:gpt-4o")
        self.model = model

        self.base_url = str(options.get("base_url") or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
        self.base_url = self.base_url.rstrip("/")
        self.endpoint = redact_url(self.base_url) + "/chat/completions"
        key_env = options.get("api_key_env")
        # $OPENAI_API_KEY belongs to OpenAI's own host: another base URL (a local vLLM/SGLang, a proxy) gets a key
        # only from a variable the user names with api_key_env, never the OpenAI key by default.
        self.api_key_env = str(key_env or (DEFAULT_KEY_ENV if _is_openai_host(self.base_url) else ""))
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if not key:
            if key_env:
                raise UsageError(
                    f"{name}: api_key_env={self.api_key_env} names an environment variable that is not set or empty"
                )
            key = PLACEHOLDER_KEY
        self.concurrency = _number_option(options, "concurrency", 8, 1)
        self.batch_size = max(type(self).batch_size, self.BATCH_ROUNDS * self.concurrency)
        self.timeout = _number_option(options, "timeout", 120.0, 0.001)
        self.max_retries = _number_option(options, "max_retries", 5, 0)
        self.backoff_base = _number_option(options, "backoff_base", 1.0, 0.0)
        self.backoff_max = _number_option(options, "backoff_max", 60.0, 0.0)
        self._policy = RetryPolicy(self.max_retries, self.backoff_base, self.backoff_max)
        self.seed: int | None = None
        if options.get("seed") is not None:
            self.seed = _number_option(options, "seed", 0, -(2**63))

        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # the concurrency workers every generate call queues in
        self._running: set[threading.Event] = set()  # the abort flag of every generate call in progress
        self.image_cache = ImageURLCache()
        self._warned_batch = False
        self._server_models: list[str] = []
        self._max_tokens: dict[str, list[int]] = {}
        self._client = self._make_client(key)
        # The key is kept here only to scrub it out of any text that could reach an error message or a log.
        self._errors = ErrorContext(
            self.timeout, None if key == PLACEHOLDER_KEY else key, self.api_key_env, _ERROR_DETAIL_CHARS
        )

    def _make_client(self, key: str) -> Any:
        try:
            import openai
        except ImportError:
            raise UsageError(
                f"{self.name} needs the openai package: pip install openai (or install medbench with it)"
            ) from None
        # The client's own retries are off: this adapter retries (with Retry-After and jitter) itself.
        return openai.OpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout, max_retries=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={redact_url(self.base_url)!r})"

    # --- the contract -------------------------------------------------------------------------------------
    def release(self) -> None:
        """Stop the request workers and drop the image cache (up to :data:`IMAGE_CACHE_BYTES`) once the runner is
        done with this model; a later :meth:`generate` starts new workers."""
        self.cancel()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self.image_cache.clear()

    def cancel(self) -> None:
        """Make every :meth:`generate` call in progress stop: queued requests are dropped, running ones end after
        their current attempt, and the calls raise."""
        with self._lock:
            for abort in self._running:
                abort.set()

    def _workers(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai")
            return self._pool

    def _identity(self) -> dict[str, Any]:
        """What is fixed when the model is built and decides its outputs (the fingerprint's input)."""
        return {
            "name": self.name,
            "class": type(self).__qualname__,
            "model": self.model,
            "base_url": redact_url(self.base_url),
            "temperature": self.temperature,
            "seed": self.seed,
            "image_encoding": "png-data-url",
        }

    def describe(self) -> dict[str, Any]:
        """:meth:`_identity` plus what was observed while generating: the ``model`` the server reported (from
        its first response) and ``max_tokens`` per request kind. Never the key."""
        with self._lock:
            server_models = list(self._server_models)
            max_tokens = {k: (v[0] if len(v) == 1 else sorted(v)) for k, v in sorted(self._max_tokens.items())}
        described = self._identity()
        described["server_model"] = server_models[0] if server_models else None
        if len(server_models) > 1:
            described["server_models_seen"] = sorted(server_models)
        described["max_tokens"] = max_tokens
        # How the PNG is compressed changes bytes, not pixels: recorded, but not part of the fingerprint.
        described["png_compress_level"] = PNG_COMPRESS_LEVEL
        return described

    def fingerprint(self) -> str:
        """A hash of :meth:`_identity` only, so it is the same before and after generating (prediction-cache keys
        are computed before the first request). ``max_tokens`` is part of every cache key already; the
        server-reported model name is recorded by :meth:`describe` but cannot be known up front."""
        blob = json.dumps(self._identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def generate(self, requests: Sequence[Request]) -> list[str]:
        if not requests:
            return []
        if 2 * self.batch_size < self.concurrency and not self._warned_batch:
            self._warned_batch = True
            log.warning(
                "%s: batch size %d is below half of concurrency=%d, so at most %d requests (two batches) are in "
                "flight; drop --batch-size (the default is %d for this concurrency) or raise it",
                self.name,
                self.batch_size,
                self.concurrency,
                2 * self.batch_size,
                max(type(self).batch_size, self.BATCH_ROUNDS * self.concurrency),
            )
        with self._lock:
            for r in requests:
                seen = self._max_tokens.setdefault(r.kind, [])
                if r.max_new_tokens not in seen:
                    seen.append(r.max_new_tokens)
        abort = threading.Event()
        outputs: list[str | None] = [None] * len(requests)
        pool = self._workers()
        with self._lock:
            self._running.add(abort)
        futures: dict[Future[str], int] = {}
        try:
            futures = {pool.submit(self._complete, r, abort): i for i, r in enumerate(requests)}
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None and not isinstance(f.exception(), _Aborted)]
            if failed:
                abort.set()
                for f in futures:
                    f.cancel()
                # The first failing request in batch order is reported.
                first = min(failed, key=lambda f: futures[f])
                exc = first.exception()
                assert exc is not None
                raise exc
            if abort.is_set():  # cancel(): the runner stops this batch because another one failed
                raise RuntimeError(f"{self.name}: generation cancelled")
            for future, index in futures.items():
                outputs[index] = future.result()
        finally:
            abort.set()
            for f in futures:
                f.cancel()
            wait(futures)  # none of this call's requests is still running once it returns
            with self._lock:
                self._running.discard(abort)
        return [o if o is not None else "" for o in outputs]

    # --- one request ----------------------------------------------------------------------------------------
    def _payload(self, request: Request) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": self.image_cache.url(request)}},
                        {"type": "text", "text": request.prompt},
                    ],
                }
            ],
            "temperature": self.temperature,
            "max_tokens": request.max_new_tokens,
        }
        if self.seed is not None:
            payload["seed"] = self.seed
        return payload

    def _complete(self, request: Request, abort: threading.Event) -> str:
        """The completion for ``request``, retried per :attr:`_policy`; :class:`EndpointError` when it fails for
        good, ``_Aborted`` when another request of the batch did (``abort`` is set)."""
        label = f"{self.name}: sample {request.sample_id}"
        payload = self._payload(request)
        run = RetryRun(self._policy, self._errors, log, label)
        outcome = call_with_retries(lambda: self._attempt(payload), run, abort)
        if isinstance(outcome, Success):
            return outcome.value
        if outcome.kind == "halted":
            raise _Aborted()
        raise EndpointError(
            f"{label}: {outcome.reason(self.endpoint)}", sample_id=request.sample_id, status=outcome.status
        )

    def _attempt(self, payload: dict[str, Any]) -> str:
        """One HTTP call: the completion text. Errors propagate as the client raised them (the retry loop
        classifies them) or as :class:`~medbench.endpoint.Retryable` for a malformed body.

        The payload goes through the client's generic ``post`` (its documented way to send a body as is), not
        ``chat.completions.create``: ``create`` first walks the whole payload through the library's type-driven
        parameter transform, which changes nothing in this plain-JSON body but costs about a third of the client's
        CPU per request. Headers, timeouts and the error classes raised are the client's own either way."""
        text = self._client.post("/chat/completions", body=payload, cast_to=str)
        content, served = parse_chat_body(text, self._errors.scrub, allow_blank=True)
        if served is not None:
            with self._lock:
                if served not in self._server_models:
                    self._server_models.append(served)
        return content
