"""The report in a real browser (Debian Chromium via Playwright), served on 127.0.0.1 and opened from disk. The
leaderboard page: row counts, sorting, the protocol switch against results.json, the demo banner; every page of the
site: ready, inline favicon, every image loads, clean (no console or page errors, no dialog, no request leaving
127.0.0.1, no 404). Screenshots go to build/test-artifacts/.

Every check here reads the rendered DOM after real clicks and selections: test_site.py already checks the HTML
text; these guard the page's script and what a browser makes of the page."""

from __future__ import annotations

from typing import Any

import pytest
from browser import ORIGINS, Opener, Site, Visit, broken_images, leaderboards, shown

pytestmark = pytest.mark.browser

PROTOCOLS = ("strict", "clinical", "llava-med", "multimedeval")


@pytest.fixture(params=ORIGINS)
def index(request: pytest.FixtureRequest, demo_site: Site, open_page: Opener) -> Visit:
    """The demo report's index.html, served (``http``) and opened from disk (``file``)."""
    return open_page(demo_site.address("index.html", request.param))


def metrics_of(site: Site) -> dict[str, Any]:
    """results.json ``metrics[model][task][protocol][metric]`` of the site's one run."""
    (results,) = site.results()
    metrics: dict[str, Any] = results["metrics"]
    return metrics


def value(metrics: dict[str, Any], model: str, task: str, protocol: str, metric: str) -> float | None:
    entry = metrics[model][task].get(protocol, {}).get(metric)
    return None if not entry or entry.get("value") is None else float(entry["value"])


def protocol_for(kind: str, protocol: str) -> str:
    """Captions have one protocol, whatever the VQA switch says."""
    return protocol if kind == "vqa" else "caption"


def assert_numbers(visit: Visit, metrics: dict[str, Any], protocol: str) -> int:
    """Every metric cell of every leaderboard row shows results.json's value (and CI) under ``protocol``; returns
    how many cells were compared."""
    compared = 0
    for table in leaderboards(visit.page):
        for row in table["rows"]:
            expected = metrics[row["model"]][table["task"]].get(protocol_for(table["kind"], protocol), {})
            for metric, cell in row["metrics"].items():
                want = shown(expected.get(metric), metric)
                assert (cell["v"], cell["ci"]) == want, (table["task"], row["model"], protocol, metric)
                compared += 1
    return compared


def test_page_is_clean(index: Visit) -> None:
    """No console error, page error or dialog; nothing requested outside 127.0.0.1 (from disk: no network at all)
    and no 404, seen by the browser or by the server."""
    index.assert_clean()
    assert not index.not_found()
    assert not index.blocked
    if index.origin == "file":
        assert all(url.startswith(("file:", "data:")) for url in index.requests), index.requests


def test_one_leaderboard_row_per_model_and_task(index: Visit, demo_site: Site) -> None:
    metrics = metrics_of(demo_site)
    tables = leaderboards(index.page)
    expected = {task for per_task in metrics.values() for task in per_task}
    assert {t["task"] for t in tables} == expected
    for task in expected:
        models = sorted(model for model, per_task in metrics.items() if task in per_task)
        shown_models = sorted(row["model"] for t in tables if t["task"] == task for row in t["rows"])
        assert shown_models == models, task  # each model exactly once, however many tables the task has
    assert len(models) == 3  # the demo run's three models (a guard on the fixture itself)


def test_the_headline_protocol_is_selected_and_the_demo_banner_shown(index: Visit, demo_site: Site) -> None:
    (results,) = demo_site.results()
    select = index.page.locator("select#protocol")
    options = select.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert options == list(PROTOCOLS)
    assert select.input_value() == results["headline_protocol"]
    assert assert_numbers(index, metrics_of(demo_site), results["headline_protocol"]) > 0
    banner = index.page.locator("#demo-banner")
    assert banner.is_visible()
    assert "DEMO DATA" in banner.inner_text()


def test_protocol_switch_shows_each_protocols_numbers_in_every_row(index: Visit, demo_site: Site) -> None:
    """Away from the headline through every protocol and back: every VQA cell (value and CI) is results.json's
    under the chosen protocol, caption cells never change, and whatever is drawn per protocol (charts, paired
    rows) is shown for the chosen one only."""
    metrics = metrics_of(demo_site)
    cells = sum(len(t["rows"]) * len(t["rows"][0]["metrics"]) for t in leaderboards(index.page))
    for protocol in [*PROTOCOLS[1:], PROTOCOLS[0]]:
        index.page.select_option("select#protocol", protocol)
        assert assert_numbers(index, metrics, protocol) == cells, protocol
        per_protocol = index.page.locator("[data-protocol]").evaluate_all(
            "nodes => nodes.map(n => [n.getAttribute('data-protocol'), n.hidden])"
        )
        assert per_protocol and all(hidden == (p != protocol) for p, hidden in per_protocol), protocol
    index.assert_clean()


def sort_by(visit: Visit, table_index: int, column: int) -> None:
    """Click the header of ``column`` in the page's ``table_index``-th leaderboard, as a user does."""
    table = visit.page.locator("table.leaderboard").nth(table_index)
    table.locator("thead tr").first.locator("th").nth(column).click()


def column_values(visit: Visit, metrics: dict[str, Any], table_index: int, metric: str, protocol: str) -> list[Any]:
    """results.json's value of ``metric`` per row, in the order the table shows its rows now (and each row's
    shown text checked against it: the whole row moved, not only its number)."""
    table = leaderboards(visit.page)[table_index]
    out = []
    for row in table["rows"]:
        entries = metrics[row["model"]][table["task"]][protocol_for(table["kind"], protocol)]
        assert row["metrics"][metric]["v"] == shown(entries.get(metric), metric)[0]
        out.append(value(metrics, row["model"], table["task"], protocol_for(table["kind"], protocol), metric))
    return out


def ordered(values: list[float | None], descending: bool) -> bool:
    """Whether ``values`` are sorted; a missing value counts as the lowest (the page puts it last when
    descending)."""
    keys = [float("-inf") if v is None else v for v in values]
    return keys == sorted(keys, reverse=descending)


def test_sorting_a_numeric_column_orders_rows_desc_then_asc_by_results_json(index: Visit, demo_site: Site) -> None:
    """Every metric column of every table under the headline protocol, then the overall column after the
    protocol switch (data-sort must follow the switch); one column with three distinct values must show the
    rows exactly reversed by the second click (so the order checks cannot pass on all-equal columns)."""
    metrics = metrics_of(demo_site)
    headline = demo_site.results()[0]["headline_protocol"]
    checks = [(headline, None), ("llava-med", "overall_accuracy")]
    checked, reversed_once = 0, False
    for protocol, only in checks:
        index.page.select_option("select#protocol", protocol)
        for t, table in enumerate(leaderboards(index.page)):
            models = sorted(row["model"] for row in table["rows"])
            for metric, cell in table["rows"][0]["metrics"].items():
                if only is not None and metric != only:
                    continue
                sort_by(index, t, cell["column"])
                first = column_values(index, metrics, t, metric, protocol)
                order = [row["model"] for row in leaderboards(index.page)[t]["rows"]]
                sort_by(index, t, cell["column"])
                second = column_values(index, metrics, t, metric, protocol)
                assert ordered(first, descending=True), (protocol, table["task"], metric, first)
                assert ordered(second, descending=False), (protocol, table["task"], metric, second)
                assert sorted(row["model"] for row in leaderboards(index.page)[t]["rows"]) == models
                if None not in first and len(set(first)) == len(first) == 3:
                    assert [row["model"] for row in leaderboards(index.page)[t]["rows"]] == order[::-1]
                    reversed_once = True
                checked += 1
    assert checked >= 3 * 3 + 5 + 3  # three VQA tables x 3 metrics, the caption table's 5, then 3 overall columns
    assert reversed_once, "no column with three distinct values in the demo report: the order checks prove little"
    index.assert_clean()


def test_screenshots_of_the_leaderboard_and_the_first_chart(demo_site: Site, open_page: Opener) -> None:
    """For people reviewing a change: build/test-artifacts/leaderboard.png (full page) and chart-1.png."""
    visit = open_page(demo_site.url())
    chart = ".charts figure:not([hidden]) svg"
    assert visit.page.locator(chart).count() >= 1
    for path in (visit.screenshot("leaderboard"), visit.screenshot("chart-1", chart)):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    visit.assert_clean()


@pytest.mark.parametrize("origin", ORIGINS)
def test_every_page_of_the_site_is_clean_and_ready(demo_site: Site, open_page: Opener, origin: str) -> None:
    """index.html and every other page the report writes (samples/..., later ones): each sets the ready flag
    (open_page waits for it), declares its favicon inline (no /favicon.ico request, a 404 on any static host),
    loads every image (thumbnails: found, and allowed by the page's CSP from file:// too) and is clean."""
    pages = demo_site.pages()
    assert pages[0] == "index.html" and any(page.startswith("samples/") for page in pages)
    images = 0
    for page in pages:
        visit = open_page(demo_site.address(page, origin))
        icons = visit.page.locator("head link[rel~='icon']")
        assert icons.count() == 1 and (icons.get_attribute("href") or "").startswith("data:"), page
        assert not broken_images(visit.page), page
        images += visit.page.locator("img").count()
        visit.assert_clean()
        assert not visit.not_found()
    assert images > 0, "no page showed an image: the thumbnail checks proved nothing"


@pytest.mark.parametrize("origin", ORIGINS)
def test_sample_browser_lists_every_prediction_row_in_file_order(
    demo_site: Site, open_page: Opener, origin: str
) -> None:
    """A new page's test, as browser.py's docstring shows: the sample browser of prior on SLAKE."""
    visit = open_page(demo_site.address(Site.sample_page("prior", "slake"), origin))
    visit.assert_clean()
    ids = visit.page.locator("#samples tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert ids == [row["id"] for row in demo_site.prediction_rows("prior", "slake")]
