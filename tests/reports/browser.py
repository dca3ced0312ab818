"""Real-browser harness for the static report: the built site served on 127.0.0.1, driven by Debian's Chromium
through Playwright's Python package (no Playwright-downloaded browser).

One Chromium per session (:func:`chromium`), one demo report per session (:func:`demo_site`), and a fresh browser
context and page per test (:func:`open_page`), which waits for the page's ``dataset.ready`` flag. Every visit
records console errors, page errors, dialogs (each dismissed), every request, and every request that would leave
127.0.0.1 (aborted); the server records what it answered, so a 404 (a favicon, a missing thumbnail) is seen even
when Chromium makes the request outside the page. A test of a new page is a few lines (test_browser.py has this
one)::

    @pytest.mark.parametrize("origin", ORIGINS)
    def test_sample_browser(demo_site: Site, open_page: Opener, origin: str) -> None:
        visit = open_page(demo_site.address(Site.sample_page("prior", "slake"), origin))
        visit.assert_clean()
        ids = visit.page.locator("#samples tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
        assert ids == [row["id"] for row in demo_site.prediction_rows("prior", "slake")]

Without Chromium or Playwright the tests skip with the reason — except when the environment variable ``CI`` is
set, where they fail: CI must never skip the browser tests silently.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn
from urllib.parse import urlsplit

import pytest

from medbench.models.base import Model
from medbench.results import safe_name
from medbench.schema import Request

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Dialog, Page, Route

#: Debian's Chromium (``apt-get install chromium``); MEDBENCH_CHROMIUM points elsewhere.
CHROMIUM = Path(os.environ.get("MEDBENCH_CHROMIUM", "/usr/bin/chromium"))
#: Screenshots for people to look at (git-ignored through build/).
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
HOST = "127.0.0.1"
#: How a page can be opened: served over HTTP, or straight from disk as a user double-clicking index.html does.
ORIGINS = ("http", "file")
#: The page contract: every page's script sets this once it has finished initialising.
READY_JS = "() => document.documentElement.dataset.ready === '1'"
#: Upper bound on one navigation or ready wait. It only turns a hang into a failure: nothing measures time.
WAIT_MS = 30_000


def in_ci() -> bool:
    """True when the environment variable CI is set (GitHub and most CI services set CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test for ``reason``, or fail it under CI, which must run every browser test."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: the browser tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


# --- serving a built site -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Served:
    """One request the site's HTTP server answered."""

    method: str
    path: str
    status: int


class _Handler(SimpleHTTPRequestHandler):
    """Static files from the site folder; every answer is recorded on the site, nothing is printed."""

    site: ClassVar[Site]

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # send_response() and send_error() both come through here, so every status is seen. The code is an
        # HTTPStatus (an int; its str() is "HTTPStatus.OK" before Python 3.11).
        status = int(code) if isinstance(code, int) or str(code).isdigit() else 0
        self.site.record(Served(self.command, self.path, status))

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


#: Sites being served now, so a visit can find the server behind its URL (for the server-side checks).
_LIVE: list[Site] = []


class Site:
    """A built report folder (``root``) served on 127.0.0.1 at a free port by a ThreadingHTTPServer in a thread.

    ``runs`` are the run directories it was built from (their results.json are the expected numbers)."""

    def __init__(self, root: Path, runs: Sequence[Path]) -> None:
        self.root = root
        self.runs = list(runs)
        self.served: list[Served] = []
        self._lock = threading.Lock()
        handler = type("SiteHandler", (_Handler,), {"site": self})
        self._server = ThreadingHTTPServer((HOST, 0), functools.partial(handler, directory=str(root)))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="report-site", daemon=True)
        self._thread.start()
        _LIVE.append(self)

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    def record(self, served: Served) -> None:
        with self._lock:
            self.served.append(served)

    def served_since(self, start: int) -> list[Served]:
        """What the server answered after its first ``start`` answers."""
        with self._lock:
            return list(self.served[start:])

    def url(self, page: str = "index.html") -> str:
        return f"{self.origin}/{page}"

    def file_url(self, page: str = "index.html") -> str:
        return (self.root / page).resolve().as_uri()

    def address(self, page: str, origin: str) -> str:
        """``page`` (relative to the site root) over ``origin``: ``"http"`` (served) or ``"file"`` (from disk)."""
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, not {origin!r}")
        return self.url(page) if origin == "http" else self.file_url(page)

    def pages(self, pattern: str = "**/*.html") -> list[str]:
        """The site's pages matching ``pattern`` (relative paths, index.html first, then sorted)."""
        found = sorted(p.relative_to(self.root).as_posix() for p in self.root.glob(pattern) if p.is_file())
        return sorted(found, key=lambda page: page != "index.html")

    @staticmethod
    def sample_page(model: str, task: str) -> str:
        """The sample browser's page for ``model`` x ``task`` (the layout issue 11 specifies; a model in several
        runs of one report gets ``~2``, ``~3`` ... after its first folder, which this does not guess)."""
        return f"samples/{safe_name(model)}/{task}.html"

    def results(self) -> list[dict[str, Any]]:
        """Each run's results.json, in ``runs`` order."""
        return [json.loads((run / "results.json").read_text(encoding="utf-8")) for run in self.runs]

    def prediction_rows(self, model: str, task: str, run: int = 0) -> list[dict[str, Any]]:
        """The prediction rows of ``model`` on ``task`` in the ``run``-th run, in file order."""
        path = self.runs[run] / "predictions" / safe_name(model) / f"{task}.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def close(self) -> None:
        _LIVE.remove(self)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def build_site(run_dirs: Sequence[Path], out: Path) -> Site:
    """``build_report(run_dirs, out)`` (what ``medbench report`` runs), then serve ``out``."""
    from medbench.reports.site import build_report

    build_report(list(run_dirs), out)
    return Site(out, run_dirs)


def offline_env(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """What tests/conftest.py's autouse ``_offline`` does per test, for the session-wide builds here (session
    fixtures are set up before any function-scoped fixture): no hub, no user caches, no MEDBENCH_DATA."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(root / "hf_home"))
    monkeypatch.setenv("MEDBENCH_CACHE", str(root / "cache.sqlite"))
    monkeypatch.delenv("MEDBENCH_DATA", raising=False)


# --- the demo report ------------------------------------------------------------------------------------------
class AlwaysNo(Model):
    """A third blind model (answers "no"; captions "no"), so a sorted column has more than two rows to order."""

    uses_images = False
    cacheable = False

    def generate(self, requests: Sequence[Request]) -> list[str]:
        return ["no" for _ in requests]


#: The demo run's models: ``medbench run``'s default blind baselines and :class:`AlwaysNo`.
DEMO_MODELS = ("prior", "yes", "always-no")


def build_demo_run(root: Path) -> Path:
    """A demo-data run of :data:`DEMO_MODELS` on every task, through the public API (as ``medbench run``)."""
    import medbench
    from medbench.registry import _MODELS, register_model

    with pytest.MonkeyPatch.context() as monkeypatch:
        offline_env(monkeypatch, root)
        # The factory is imported by name; tests/reports is on sys.path (pytest put it there for this module).
        register_model("always-no", f"{__name__}:AlwaysNo", "test model: always answers no")
        try:
            medbench.evaluate(models=list(DEMO_MODELS), tasks="all", demo=True, output=root / "run", resamples=200)
        finally:
            _MODELS.pop("always-no", None)  # other tests see the real registry
    return root / "run"


# --- pages -------------------------------------------------------------------------------------------------------
@dataclass
class Visit:
    """One opened page and everything it did. ``origin`` is ``"http"`` or ``"file"``."""

    page: Page
    url: str
    origin: str
    site: Site | None
    served_from: int = 0
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # requests that would have left 127.0.0.1 (aborted or refused)
    failed: list[str] = field(default_factory=list)  # requests that failed on their own (a missing file)
    bad_status: list[str] = field(default_factory=list)  # responses with status >= 400

    def allowed(self, url: str) -> bool:
        """Inline data is always fine; a served page may reach 127.0.0.1 only; a page opened from disk may read
        files and must make no network request at all."""
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            return True
        if self.origin == "file":
            return parts.scheme == "file"
        return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname == HOST

    def not_found(self) -> list[str]:
        """404s seen by the browser or answered by the server during this visit (favicon requests included)."""
        seen = [entry for entry in self.bad_status if entry.endswith(" 404")]
        if self.site is not None and self.origin == "http":
            answered = self.site.served_since(self.served_from)
            seen += [f"{s.method} {s.path} {s.status}" for s in answered if s.status == 404]
        return seen

    def problems(self) -> list[str]:
        """Everything a clean page must not do, one line each."""
        out = [f"console error: {m}" for m in self.console_errors]
        out += [f"page error: {m}" for m in self.page_errors]
        out += [f"dialog: {m}" for m in self.dialogs]
        out += [f"request leaving {HOST} (aborted, or refused by the page's CSP): {u}" for u in self.blocked]
        out += [f"request failed: {u}" for u in self.failed]
        out += [f"HTTP error: {u}" for u in self.bad_status]
        if self.site is not None and self.origin == "http":
            out += [
                f"server answered {s.status}: {s.method} {s.path}"
                for s in self.site.served_since(self.served_from)
                if s.status >= 400
            ]
        return out

    def assert_clean(self) -> None:
        problems = self.problems()
        assert not problems, f"{self.url}:\n  " + "\n  ".join(problems)

    def screenshot(self, name: str, selector: str | None = None) -> Path:
        """Save a PNG under build/test-artifacts/: the full page, or the first element matching ``selector``."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        if selector is None:
            self.page.screenshot(path=str(path), full_page=True)
        else:
            self.page.locator(selector).first.screenshot(path=str(path))
        return path


#: ``open_page(url, timeout_ms=WAIT_MS)`` -> a :class:`Visit` of ``url``, ready.
Opener = Callable[..., Visit]


def _launch_args() -> list[str]:
    # Chromium refuses to start its sandbox as root (containers, CI images): only then run without it.
    geteuid = getattr(os, "geteuid", None)
    return ["--no-sandbox"] if geteuid is not None and geteuid() == 0 else []


def missing_browser(executable: Path | None = None) -> str | None:
    """Why the browser tests cannot run here (no playwright package, no Chromium at ``executable``), or None."""
    executable = CHROMIUM if executable is None else executable
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed: pip install -e '.[dev]'"
    if not executable.exists():
        return f"no Chromium at {executable}: apt-get install chromium (or set MEDBENCH_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Debian Chromium per test module (skips, or fails under CI, when it cannot run).

    Per module, not per session: while Playwright's sync API is active it keeps an asyncio loop running in this
    thread, and every later test that calls ``asyncio.run`` (the judge and endpoint tests) would fail."""
    reason = missing_browser()
    if reason is not None:
        unavailable(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=_launch_args())
        try:
            yield browser
        finally:
            browser.close()


class _Tab:
    """The one page of a test: its recorders write into the visit under way (each ``open_page`` call navigates
    this page again, which is much cheaper than a new page per URL)."""

    def __init__(self, context: BrowserContext) -> None:
        self.page = context.new_page()
        self.visit: Visit | None = None
        page = self.page
        page.route("**/*", self._route)
        page.on("request", lambda r: self._now().requests.append(r.url))
        page.on("console", self._console)
        page.on("pageerror", lambda error: self._now().page_errors.append(str(error)))
        page.on("dialog", self._dialog)
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _now(self) -> Visit:
        assert self.visit is not None, "the page did something before open_page() navigated it"
        return self.visit

    def _route(self, route: Route) -> None:
        visit, url = self._now(), route.request.url
        if visit.allowed(url):
            route.continue_()
        else:
            visit.blocked.append(url)
            route.abort("blockedbyclient")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location or {}
            self._now().console_errors.append(f"{message.text} ({where.get('url', '')}:{where.get('lineNumber', '')})")

    def _dialog(self, dialog: Dialog) -> None:
        self._now().dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()  # an open dialog would block the page

    def _failed(self, request: Any) -> None:
        visit, failure = self._now(), str(request.failure)
        if "ERR_ABORTED" in failure:
            # The page itself dropped the request (a re-render removed a lazy thumbnail still loading, or the page
            # was left); a missing file is a 404 or ERR_FILE_NOT_FOUND instead.
            return
        if not visit.allowed(request.url):  # refused before routing (by the page's CSP): still an offsite request
            if request.url not in visit.blocked:
                visit.blocked.append(request.url)
        else:
            visit.failed.append(f"{request.url} ({failure})")

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self._now().bad_status.append(f"{response.request.method} {response.url} {response.status}")

    def open(self, url: str, *, timeout_ms: int = WAIT_MS) -> Visit:
        site = next((s for s in _LIVE if url.startswith(s.origin + "/")), None)
        if self.visit is not None:
            # Leave the previous document while its visit still records: what it had in flight ends (and is
            # reported) before the load of about:blank, so nothing of it lands in the new visit. It also makes the
            # same document with another #fragment load again.
            self.page.goto("about:blank")
        self.visit = Visit(
            page=self.page,
            url=url,
            origin="file" if url.startswith("file:") else "http",
            site=site,
            served_from=len(site.served) if site is not None else 0,
        )
        # ``timeout_ms`` bounds the wait for the ready flag only: the load itself gets WAIT_MS, so a short ready
        # bound never turns a slow load on a busy machine into a navigation timeout.
        self.page.goto(url, wait_until="load", timeout=WAIT_MS)
        wait_ready(self.visit, timeout_ms)
        return self.visit


def wait_ready(visit: Visit, timeout_ms: int = WAIT_MS) -> None:
    """Wait until the page says it has initialised (``document.documentElement.dataset.ready == "1"``); a page
    that never does is a failure naming what went wrong on it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        visit.page.wait_for_function(READY_JS, timeout=timeout_ms)
    except PlaywrightTimeout as exc:
        problems = "\n  ".join(visit.problems()) or "no console or page errors"
        message = f"{visit.url} never set document.documentElement.dataset.ready = '1':\n  {problems}"
        raise AssertionError(message) from exc


@pytest.fixture
def open_page(chromium: Browser) -> Iterator[Opener]:
    """``open_page(url)``: this test's page (in its own fresh browser context) navigated to ``url``, loaded and
    ready. Each call starts a new :class:`Visit`; an earlier one keeps its records, but its page has moved on."""
    context: BrowserContext = chromium.new_context(service_workers="block")
    context.set_default_timeout(WAIT_MS)
    tab = _Tab(context)
    try:
        yield tab.open
    finally:
        context.close()


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The report of one demo run (:data:`DEMO_MODELS`, every task), built once and served for the session.

    A machine without a browser skips (or fails under CI) before spending the build."""
    reason = missing_browser()
    if reason is not None:
        unavailable(reason)
    root = tmp_path_factory.mktemp("browser-demo")
    site = build_site([build_demo_run(root)], root / "site")
    try:
        yield site
    finally:
        site.close()


# --- reading pages ---------------------------------------------------------------------------------------------
_LEADERBOARDS_JS = """() => Array.from(document.querySelectorAll("table.leaderboard")).map(table => ({
  task: table.dataset.task,
  kind: table.dataset.kind,
  headers: Array.from(table.tHead.rows[0].cells).map(th => th.textContent.trim()),
  rows: Array.from(table.tBodies[0].rows).map(tr => ({
    key: tr.dataset.key,
    model: tr.querySelector("td.model").textContent,
    metrics: Object.fromEntries(Array.from(tr.querySelectorAll("td.metric")).map(td => [td.dataset.metric, {
      v: td.querySelector(".v").textContent, ci: td.querySelector(".ci").textContent,
      sort: td.getAttribute("data-sort"), column: td.cellIndex}]))
  }))
}))"""


def leaderboards(page: Page) -> list[dict[str, Any]]:
    """Every ``table.leaderboard`` as rendered now: task, kind, headers and rows (key, model, metric cells with
    their ``.v`` / ``.ci`` texts, ``data-sort`` and column index), in DOM order."""
    tables: list[dict[str, Any]] = page.evaluate(_LEADERBOARDS_JS)
    return tables


_TEXT_JS = """() => {
  const walker = document.createTreeWalker(document.documentElement, NodeFilter.SHOW_TEXT);
  const parts = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (parent && parent.closest("script, style, template, noscript")) continue;
    parts.push(node.data);
  }
  return parts.join("");
}"""


def rendered_text(page: Page) -> str:
    """All text the document holds as text (shown or collapsed), without script, style and template bodies: where
    escaped hostile input must appear literally."""
    text: str = page.evaluate(_TEXT_JS)
    return text


_MARKUP_JS = """() => {
  const urlAttributes = new Set(["href", "src", "action", "formaction", "xlink:href", "data", "srcdoc"]);
  const out = {scripts: document.scripts.length, handlers: [], script_urls: [], img_x: 0};
  for (const el of document.querySelectorAll("*")) {
    for (const attr of Array.from(el.attributes)) {
      const name = attr.name.toLowerCase();
      if (name.startsWith("on")) out.handlers.push(el.tagName.toLowerCase() + "[" + name + "]");
      if (urlAttributes.has(name) && /^[\\s\\u0000-\\u001f]*(javascript|vbscript):/i.test(attr.value)) {
        out.script_urls.push(el.tagName.toLowerCase() + "[" + name + "=" + attr.value + "]");
      }
    }
  }
  out.img_x = document.querySelectorAll("img[src='x'], image[href='x']").length;
  out.handlers.sort();
  return out;
}"""


def markup(page: Page) -> dict[str, Any]:
    """What injected markup would add: the number of scripts, inline event handlers (``tag[onevent]``), script
    URLs in link/source attributes, and ``<img src=x>`` elements."""
    found: dict[str, Any] = page.evaluate(_MARKUP_JS)
    return found


def shown(entry: dict[str, Any] | None, metric: str) -> tuple[str, str]:
    """The ``.v`` and ``.ci`` texts a results.json metric entry should be shown as: a fraction x 100 with one
    decimal, a 1-5 judge score as it is with two; no value is "–" with no CI."""
    if not entry or entry.get("value") is None:
        return "–", ""
    value, ci = float(entry["value"]), entry.get("ci95")
    if metric == "judge_score" or entry.get("scale"):
        return f"{value:.2f}", (f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "")
    return f"{100 * value:.1f}", (f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}" if ci else "")


_BROKEN_IMAGES_JS = """async () => {
  const waits = Array.from(document.images).map(img => {
    img.loading = "eager";  // lazy thumbnails below the fold would otherwise never be fetched
    if (img.complete) { return Promise.resolve(img.naturalWidth > 0 ? null : img.currentSrc || img.src); }
    return new Promise(resolve => {
      img.addEventListener("load", () => resolve(null), {once: true});
      img.addEventListener("error", () => resolve(img.currentSrc || img.src), {once: true});
    });
  });
  return (await Promise.all(waits)).filter(src => src !== null);
}"""


def broken_images(page: Page) -> list[str]:
    """The sources of the page's ``<img>`` elements that do not load (404, refused by the page's CSP, not an
    image), lazy ones included; empty when every image loads."""
    broken: list[str] = page.evaluate(_BROKEN_IMAGES_JS)
    return broken
