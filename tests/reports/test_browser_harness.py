"""The browser harness itself (browser.py): each recorder catches what it is for, on small hand-written pages, so
that a green browser test means "checked and clean", not "not looked at"; and a machine without a browser skips
the browser tests, except under CI, where they fail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import ORIGINS, Opener, Site, markup, missing_browser, rendered_text, unavailable

PAGES = {
    # Everything a clean page must not do, one of each.
    "bad.html": """<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<img src="https://example.invalid/pixel.png"><img src="missing.png">
<script>document.documentElement.dataset.ready = "1"; console.error("logged"); alert("hi");
throw new Error("boom");</script></body></html>""",
    # What injected markup would add.
    "markup.html": """<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<img src=x onerror="void 0"><a href=" javascript:void(0)">link</a><p>shown text</p>
<script>var hidden = "script text"; document.documentElement.dataset.ready = "1";</script></body></html>""",
    "never-ready.html": """<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head>
<body><p>no ready flag</p></body></html>""",
}


@pytest.fixture(scope="module")
def tiny_site(chromium: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("browser-harness")
    for name, html in PAGES.items():
        (root / name).write_text(html, encoding="utf-8")
    site = Site(root, [])
    try:
        yield site
    finally:
        site.close()


@pytest.mark.browser
@pytest.mark.parametrize("origin", ORIGINS)
def test_every_recorder_catches_its_problem(tiny_site: Site, open_page: Opener, origin: str) -> None:
    visit = open_page(tiny_site.address("bad.html", origin))
    assert visit.dialogs == ["alert: hi"]
    assert any("boom" in e for e in visit.page_errors)
    assert any("logged" in e for e in visit.console_errors)
    assert visit.blocked == ["https://example.invalid/pixel.png"]  # aborted: it never left the machine
    if origin == "http":
        assert any("/missing.png" in e for e in visit.not_found())
        assert "GET /missing.png" in " ".join(visit.problems())  # the server's own record
    else:
        assert any("missing.png" in e for e in visit.failed)
    with pytest.raises(AssertionError, match="boom"):
        visit.assert_clean()


@pytest.mark.browser
def test_markup_and_text_readers(tiny_site: Site, open_page: Opener) -> None:
    visit = open_page(tiny_site.url("markup.html"))
    found = markup(visit.page)
    assert found["handlers"] == ["img[onerror]"]
    assert found["script_urls"] == ["a[href= javascript:void(0)]"]
    assert (found["img_x"], found["scripts"]) == (1, 1)
    text = rendered_text(visit.page)
    assert "shown text" in text and "script text" not in text


@pytest.mark.browser
def test_a_page_that_never_says_ready_fails(tiny_site: Site, open_page: Opener) -> None:
    with pytest.raises(AssertionError, match=r"never set document\.documentElement\.dataset\.ready"):
        open_page(tiny_site.url("never-ready.html"), timeout_ms=300)


def test_no_browser_skips_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Guards the rule that CI never skips the browser tests silently."""
    reason = missing_browser(tmp_path / "no-chromium")
    assert reason is not None and "apt-get install chromium" in reason
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        unavailable(reason)
    for value in ("true", "1"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.fail.Exception, match="CI is set"):
            unavailable(reason)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        unavailable(reason)
