"""The report's per-sample parts in a real browser: the paired comparison's win / loss counts, the sample browser's
filters and pagination, the side-by-side view's flips — each checked against the prediction rows themselves."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from browser import ORIGINS, Opener, Site, Visit, build_site

pytestmark = pytest.mark.browser

PROTOCOLS = ("strict", "clinical", "llava-med", "multimedeval")


def shown_ids(visit: Visit) -> list[str]:
    ids: list[str] = visit.page.locator("#samples tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.id)")
    return ids


def scores_by_id(site: Site, model: str, task: str) -> dict[str, dict[str, Any]]:
    return {str(r["id"]): r for r in site.prediction_rows(model, task)}


def counts(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], protocol: str) -> tuple[int, int, int]:
    """B's wins / losses / ties against A on the samples both scored (overall accuracy under ``protocol``)."""
    wins = losses = ties = 0
    for key in a.keys() & b.keys():
        x, y = a[key]["scores"].get(protocol), b[key]["scores"].get(protocol)
        if x is None or y is None:
            continue
        wins, losses, ties = wins + (y > x), losses + (y < x), ties + (y == x)
    return wins, losses, ties


@pytest.mark.parametrize("origin", ORIGINS)
def test_paired_comparison_shows_the_win_loss_counts_of_the_rows(
    demo_site: Site, open_page: Opener, origin: str
) -> None:
    visit = open_page(demo_site.address("index.html", origin))
    tables = visit.page.locator("table.paired")
    assert tables.count() >= 4  # every pair of the three demo models on every task
    checked = 0
    for protocol in PROTOCOLS:
        visit.page.select_option("#protocol", protocol)
        for i in range(tables.count()):
            table = tables.nth(i)
            task, a, b = (table.get_attribute(k) for k in ("data-task", "data-a", "data-b"))
            assert task and a and b
            if task == "rocov2":
                continue
            row = table.locator("tr[data-metric=overall_accuracy]:not([hidden])")
            assert row.count() == 1  # only the selected protocol's row is shown
            got = tuple(int(row.locator(f"td[data-field={f}]").inner_text()) for f in ("wins", "losses", "ties"))
            assert got == counts(scores_by_id(demo_site, a, task), scores_by_id(demo_site, b, task), protocol)
            checked += 1
    assert checked >= 3 * 3 * len(PROTOCOLS)
    visit.assert_clean()


def test_sample_browser_filters_show_exactly_the_matching_rows(demo_site: Site, open_page: Opener) -> None:
    rows = demo_site.prediction_rows("prior", "slake")
    visit = open_page(demo_site.address(Site.sample_page("prior", "slake"), "http"))
    page = visit.page
    assert shown_ids(visit) == [str(r["id"]) for r in rows]
    for protocol in PROTOCOLS:
        page.select_option("#f-protocol", protocol)
        page.select_option("#f-verdict", "correct")
        assert shown_ids(visit) == [str(r["id"]) for r in rows if r["scores"][protocol] == 1]
        page.select_option("#f-verdict", "incorrect")
        assert shown_ids(visit) == [str(r["id"]) for r in rows if r["scores"][protocol] == 0]
    page.select_option("#f-verdict", "all")
    page.select_option("#f-type", "closed")
    closed = [str(r["id"]) for r in rows if r["answer_type"] == "closed"]
    assert shown_ids(visit) == closed and 0 < len(closed) < len(rows)
    page.select_option("#f-type", "all")
    page.check("#f-disagree")
    disagree = [str(r["id"]) for r in rows if len({r["scores"][p] for p in PROTOCOLS}) > 1]
    assert shown_ids(visit) == disagree and disagree  # the demo has a sample strict and llava-med score apart
    page.uncheck("#f-disagree")
    modality = rows[0]["metadata"]["modality"]
    page.select_option("#f-subgroup", f"modality={modality}")
    assert shown_ids(visit) == [str(r["id"]) for r in rows if r["metadata"]["modality"] == modality]
    page.select_option("#f-subgroup", "")
    page.fill("#f-search", rows[3]["question"])
    assert shown_ids(visit) == [str(r["id"]) for r in rows if r["question"] == rows[3]["question"]]
    page.fill("#f-search", "no such text anywhere")
    assert shown_ids(visit) == [] and "No sample matches" in page.locator("#samples").inner_text()
    visit.screenshot("sample-browser")
    visit.assert_clean()


def test_side_by_side_view_marks_the_flips(demo_site: Site, open_page: Opener) -> None:
    a, b = scores_by_id(demo_site, "prior", "slake"), scores_by_id(demo_site, "yes", "slake")
    page = "samples/prior~vs~yes/slake.html"
    for protocol in PROTOCOLS:
        better = [k for k in a if b[k]["scores"][protocol] > a[k]["scores"][protocol]]
        worse = [k for k in a if b[k]["scores"][protocol] < a[k]["scores"][protocol]]
        visit = open_page(demo_site.address(page, "http") + f"#protocol={protocol}&flip=b_better")
        assert shown_ids(visit) == better and better
        visit.page.select_option("#f-flip", "b_worse")
        assert shown_ids(visit) == worse
        visit.page.select_option("#f-flip", "flipped")
        assert sorted(shown_ids(visit)) == sorted(better + worse)
        marked = visit.page.locator("#samples tr[data-flip]").evaluate_all("rows => rows.map(r => r.dataset.flip)")
        assert sorted(marked) == sorted(["b_better"] * len(better) + ["b_worse"] * len(worse))
        visit.assert_clean()
    visit.screenshot("side-by-side")


@pytest.fixture(scope="module")
def big_site(demo_site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The demo run with prior's SLAKE rows repeated to 250 (new ids), for pagination."""
    root = tmp_path_factory.mktemp("browser-big")
    run = root / "run"
    shutil.copytree(demo_site.runs[0], run)
    path = run / "predictions" / "prior" / "slake.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    many = [dict(rows[i % len(rows)], id=f"s{i:04d}") for i in range(250)]
    path.write_text("".join(json.dumps(r) + "\n" for r in many), encoding="utf-8")
    site = build_site([run], root / "site")
    try:
        yield site
    finally:
        site.close()


def test_sample_browser_pages_through_100_rows_at_a_time(big_site: Site, open_page: Opener) -> None:
    ids = [f"s{i:04d}" for i in range(250)]
    visit = open_page(big_site.address(Site.sample_page("prior", "slake"), "file"))
    page = visit.page
    assert shown_ids(visit) == ids[:100] and page.inner_text("#page-info") == "page 1 of 3"
    assert page.is_disabled("#prev")
    page.click("#next")
    assert shown_ids(visit) == ids[100:200] and page.inner_text("#page-info") == "page 2 of 3"
    page.click("#next")
    assert shown_ids(visit) == ids[200:] and page.is_disabled("#next")
    page.click("#prev")
    assert shown_ids(visit) == ids[100:200]
    page.select_option("#f-type", "closed")  # a new filter starts again on page 1
    closed = [str(r["id"]) for r in big_site.prediction_rows("prior", "slake") if r["answer_type"] == "closed"]
    assert shown_ids(visit) == closed[:100] and page.inner_text("#page-info").startswith("page 1 of ")
    visit.assert_clean()
