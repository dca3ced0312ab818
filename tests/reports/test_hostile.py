"""Hostile text in a real browser: a run whose model name, adapter, outputs, questions, references and judge replies
all carry script, markup, ``javascript:`` and template payloads and direction overrides. Every page of its report
(index.html and every page under samples/), served and opened from disk, must run no payload (no dialog, no
console or page error, no element, handler or script URL the payload would add) and show each payload literally as
text. The run goes through the real path: a fake model adapter and a fake judge server, ``medbench.evaluate``,
then ``build_report``."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from browser import (
    ORIGINS,
    READY_JS,
    Opener,
    Site,
    Visit,
    broken_images,
    build_site,
    markup,
    offline_env,
    rendered_text,
)

from medbench.models.base import Model
from medbench.results import safe_name
from medbench.schema import Request

sys.path.insert(0, str(Path(__file__).parents[1] / "judges"))
from fake_judge import FakeJudgeServer

pytestmark = pytest.mark.browser

PAYLOADS = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",  # link-looking text: it must not become a link
    "</script><script>alert(2)</script>",
    "\u202eevil override\u2066 isolate",  # RLO and LRI, never closed
    "{{ 7*7 }}",
)
HOSTILE = " ".join(PAYLOADS)
MODEL = f"hostile {HOSTILE}"
JUDGE_MODEL = f"judge {HOSTILE}"
TASKS = ("slake", "rocov2")


class HostileModel(Model):
    """Answers every request with all the payloads; describes itself with them too (class and LoRA adapter)."""

    uses_images = False
    cacheable = False

    def generate(self, requests: Sequence[Request]) -> list[str]:
        return [f"{HOSTILE} yes" for _ in requests]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "class": HOSTILE, "adapter": {"id": HOSTILE}}


def hostile_data(target: Path) -> Path:
    """The bundled demo set with the payloads in every SLAKE question and open answer and every ROCOv2 caption."""
    from medbench.tasks.base import DEMO_ROOT

    shutil.copytree(DEMO_ROOT, target, ignore=shutil.ignore_patterns("*.md"))
    slake = target / "slake" / "test.json"
    records = json.loads(slake.read_text(encoding="utf-8"))
    for record in records:
        record["question"] = f"{record['question']} {HOSTILE}"
        if record["answer_type"] == "OPEN":
            record["answer"] = f"{record['answer']} {HOSTILE}"
    slake.write_text(json.dumps(records), encoding="utf-8")
    captions = target / "rocov2" / "test_captions.csv"
    with captions.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with captions.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["ID", "Caption"])
        writer.writeheader()
        writer.writerows({"ID": r["ID"], "Caption": f"{r['Caption']} {HOSTILE}"} for r in rows)
    return target


def judge_reply(prompt: str) -> str:
    """The payloads in the caption judge's reasoning and in the equivalence judge's reason."""
    if '"equivalent"' in prompt:
        return json.dumps({"equivalent": False, "reason": HOSTILE})
    return f"Reasoning: {HOSTILE}\nScore: 3"


@pytest.fixture(scope="module")
def hostile_site(chromium: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The hostile run (the hostile model and ``yes`` on SLAKE and ROCOv2, judged by the fake judge) and its
    report, built once for this module and served."""
    import medbench
    from medbench.registry import _MODELS, register_model

    root = tmp_path_factory.mktemp("browser-hostile")
    judge_server = FakeJudgeServer(responder=judge_reply, served_model=HOSTILE)
    with pytest.MonkeyPatch.context() as monkeypatch, judge_server as judge:
        offline_env(monkeypatch, root)
        register_model(MODEL, f"{__name__}:HostileModel", "test model answering with script payloads")
        try:
            medbench.evaluate(
                models=[MODEL, "yes"],
                tasks=list(TASKS),
                data_dir=hostile_data(root / "data"),
                output=root / "run",
                resamples=50,
                judge="fake",
                judge_base_url=judge.base_url,
                judge_model=JUDGE_MODEL,
                judge_max_retries=0,
            )
        finally:
            _MODELS.pop(MODEL, None)
    site = build_site([root / "run"], root / "site")
    try:
        yield site
    finally:
        site.close()


@pytest.fixture(scope="module")
def clean_markup(demo_site: Site, chromium: Any) -> dict[str, dict[str, Any]]:
    """What each template's own markup holds on the clean demo report (scripts, inline handlers): the hostile
    pages must hold exactly as much."""
    context = chromium.new_context()
    try:
        out = {}
        samples = demo_site.pages("samples/**/*.html")
        for kind, page in (("index", "index.html"), ("samples", samples[0] if samples else None)):
            if page is None:
                continue
            tab = context.new_page()
            tab.goto(demo_site.url(page), wait_until="load")
            tab.wait_for_function(READY_JS)
            out[kind] = markup(tab)
        return out
    finally:
        context.close()


def assert_inert(visit: Visit, clean: dict[str, dict[str, Any]], when: str) -> None:
    """No payload ran or added markup on ``visit``'s page (``when``: what was just done, for the message)."""
    kind = "index" if visit.url.split("#")[0].endswith("/index.html") else "samples"
    found = markup(visit.page)
    where = f"{visit.url} ({when})"
    assert not visit.dialogs, f"{where}: a payload opened a dialog: {visit.dialogs}"
    assert found["scripts"] == clean[kind]["scripts"], f"{where}: script elements added"
    assert found["handlers"] == clean[kind]["handlers"], f"{where}: inline event handlers added: {found['handlers']}"
    assert not found["script_urls"], f"{where}: javascript: URLs: {found['script_urls']}"
    assert not found["img_x"], f"{where}: <img src=x> elements made from the payload"
    visit.assert_clean()


def assert_literal(visit: Visit) -> None:
    """Every payload is in the page's text exactly as written (not dropped, not double-escaped into ``&lt;``)."""
    text = rendered_text(visit.page)
    missing = [p for p in PAYLOADS if p not in text]
    assert not missing, f"{visit.url}: not shown literally as text: {missing}"


def test_hostile_run_reached_the_report(hostile_site: Site) -> None:
    """Guards the fixture: the payloads are in the rows (outputs, questions, references, judge replies) the report
    was built from, and every model x task has its sample page."""
    (results,) = hostile_site.results()
    assert sorted(results["metrics"]) == sorted([MODEL, "yes"])
    rows = [
        json.loads(line)
        for path in (hostile_site.runs[0] / "predictions").glob("*/*.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    assert rows and all(HOSTILE in r["reference"] for r in rows if r["task"] == "rocov2")
    assert all(HOSTILE in r["question"] for r in rows if r["task"] == "slake")
    assert any(HOSTILE in r["prediction"] for r in rows)
    assert any(HOSTILE in (r.get("judge") or {}).get("raw", "") for r in rows if r["task"] == "rocov2")
    assert any(HOSTILE in (r.get("judge") or {}).get("reason") or "" for r in rows if r["task"] == "slake")
    for model in (MODEL, "yes"):
        for task in TASKS:
            assert Site.sample_page(model, task) in hostile_site.pages(), (model, task)


@pytest.mark.parametrize("origin", ORIGINS)
def test_index_runs_no_payload_and_shows_it_as_text(
    hostile_site: Site, clean_markup: dict[str, dict[str, Any]], open_page: Opener, origin: str
) -> None:
    visit = open_page(hostile_site.address("index.html", origin))
    assert_inert(visit, clean_markup, "opened")
    assert_literal(visit)
    page = visit.page
    models = page.locator("table.leaderboard td.model").evaluate_all("cells => cells.map(c => c.textContent)")
    assert models.count(MODEL) == len(TASKS)  # the name, exactly, in each task's table
    adapters = page.locator("table.leaderboard td.adapter").evaluate_all("cells => cells.map(c => c.textContent)")
    assert adapters.count(HOSTILE + HOSTILE) == len(TASKS)  # LoRA adapter id, then the class
    legends = page.locator(".charts svg title").evaluate_all("titles => titles.map(t => t.textContent)")
    assert MODEL in legends  # the chart legend's tooltip keeps the whole name
    assert f"Judge: {JUDGE_MODEL} (server-reported: {HOSTILE})" in rendered_text(page)
    # Interactions re-render text: every protocol, and every sortable column (the click event the handler gets;
    # test_browser.py clicks as a user does).
    for protocol in page.locator("select#protocol option").evaluate_all("options => options.map(o => o.value)"):
        page.select_option("select#protocol", protocol)
    headers = page.locator("table.leaderboard th[data-sortable]")
    for i in range(headers.count()):
        headers.nth(i).dispatch_event("click")
    assert_inert(visit, clean_markup, "after switching protocols and sorting")


@pytest.mark.parametrize("origin", ORIGINS)
def test_every_sample_page_runs_no_payload_and_shows_it_as_text(
    hostile_site: Site, clean_markup: dict[str, dict[str, Any]], open_page: Opener, origin: str
) -> None:
    pages = hostile_site.pages("samples/**/*.html")
    assert pages  # the sample browser exists (test_hostile_run_reached_the_report names the pages expected)
    for name in pages:
        visit = open_page(hostile_site.address(name, origin))
        assert_inert(visit, clean_markup, "opened")
        assert_literal(visit)
        assert not broken_images(visit.page)
        if name.startswith(f"samples/{safe_name(MODEL)}"):
            assert MODEL in rendered_text(visit.page)  # its heading names the hostile model
        # The search box re-renders the rows from what a user types: a payload typed there stays text too.
        visit.page.fill("#f-search", PAYLOADS[1])
        assert_inert(visit, clean_markup, "after searching for a payload")
        visit.page.fill("#f-search", "")
        assert_literal(visit)


def test_filters_preset_from_a_hostile_address_stay_inert(
    hostile_site: Site, clean_markup: dict[str, dict[str, Any]], open_page: Opener
) -> None:
    """The sample browser presets its filters from location.hash (links from the index): a crafted link must not
    run anything either."""
    fragment = "&".join(
        f"{key}={quote(PAYLOADS[i % len(PAYLOADS)], safe='')}"
        for i, key in enumerate(("protocol", "verdict", "type", "flip", "metric", "subgroup", "search"))
    )
    for name in hostile_site.pages("samples/**/*.html"):
        for origin in ORIGINS:
            visit = open_page(f"{hostile_site.address(name, origin)}#{fragment}&disagree=1")
            assert_inert(visit, clean_markup, "opened with a hostile #fragment")
