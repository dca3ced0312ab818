"""``medbench report`` and the report ``medbench run`` writes: leaderboards per comparability key, every protocol
precomputed for the switch, the paper's rows kept apart, provenance, the demo banner, hostile text inert."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from medbench.cli import main
from medbench.reports.site import build_report, leaderboard
from medbench.results import load_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    cache = str(root / "cache.sqlite")
    base = ["run", "--demo", "--resamples", "50", "--cache", cache]
    assert main([*base, "--models", "prior,yes", "--output", str(root / "a")]) == 0
    assert (
        main(
            [
                *base,
                "--models",
                "yes",
                "--tasks",
                "vqa_rad",
                "--closed-rule",
                "answer_type",
                "--output",
                str(root / "b"),
            ]
        )
        == 0
    )
    return root


class Cells(HTMLParser):
    """Collects element tags, table rows per table class and script bodies."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.tables: list[tuple[str, str, int]] = []  # (class, data-task, rows)
        self._table: list[str] | None = None
        self._in_body = False
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "table" and a.get("class") in ("leaderboard", "paper"):
            self._table = [str(a.get("class")), str(a.get("data-task")), "0"]
        if tag == "tbody":
            self._in_body = True
        if tag == "tr" and self._table is not None and self._in_body:
            self._table[2] = str(int(self._table[2]) + 1)
        if tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        if tag == "table" and self._table is not None:
            self.tables.append((self._table[0], self._table[1], int(self._table[2])))
            self._table = None


def parse(path: Path) -> Cells:
    parser = Cells()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_medbench_run_writes_a_report_with_every_task_and_the_demo_banner(runs: Path) -> None:
    page = runs / "a" / "report" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert 'id="demo-banner"' in html
    tables = parse(page).tables
    measured = {(task, n) for kind, task, n in tables if kind == "leaderboard"}
    assert measured == {("slake", 2), ("pathvqa", 2), ("vqa_rad", 2), ("rocov2", 2)}
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html  # no CDN


def test_results_with_different_comparability_keys_never_share_a_table(runs: Path) -> None:
    both = [(str(runs / d), load_run(runs / d)) for d in ("a", "b")]
    tables = leaderboard(both)
    assert len(tables["vqa_rad"]) == 2  # the answer_type run is not comparable with the yesno ones
    assert "closed_rule" in tables["vqa_rad"][1].differs
    out = build_report([runs / "a", runs / "b"], runs / "both")
    html = out.read_text(encoding="utf-8")
    assert "Not comparable with the first VQA-RAD table" in html and "<code>closed_rule</code>" in html


def test_every_protocol_is_precomputed_for_the_switch(runs: Path) -> None:
    html = (runs / "a" / "report" / "index.html").read_text(encoding="utf-8")
    blob = re.search(r'<script id="cells" type="application/json">(.*?)</script>', html, re.S)
    assert blob
    cells = json.loads(blob.group(1))
    results = load_run(runs / "a")
    order = [row.model for row in leaderboard([("a", results)])["slake"][0].rows]
    prior = cells[f"slake-0-{order.index('prior')}"]
    for protocol in ("strict", "clinical", "llava-med", "multimedeval"):
        entry = results.get("prior", "slake").metric(protocol, "overall_accuracy")
        assert entry is not None
        assert prior[protocol]["overall_accuracy"]["text"] == f"{100 * entry['value']:.1f}"


def test_hostile_model_output_stays_inert_text(tmp_path: Path, runs: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs / "a", run)
    doc = json.loads((run / "results.json").read_text())
    evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>\u202ejavascript:alert(3)'
    doc["metrics"][evil] = doc["metrics"].pop("yes")
    doc["models"][evil] = doc["models"].pop("yes")
    doc["models"][evil]["class"] = evil
    (run / "results.json").write_text(json.dumps(doc))
    page = build_report([run], tmp_path / "out")
    parsed = parse(page)
    assert parsed.scripts == 2  # the JSON blob and the page's own script: nothing injected
    assert "img" not in parsed.tags
    html = page.read_text(encoding="utf-8")
    assert "<script>alert" not in html and "onerror=alert" not in html.replace("onerror=alert(2)&gt;", "")


def test_medbench_report_command(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(runs / "a"), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "index.html").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no results.json" in capsys.readouterr().err


def records(page: Path) -> list[dict]:
    """The sample records a browser page carries."""
    text = page.read_text(encoding="utf-8")
    blob = re.search(r'<script id="records" type="application/json">(.*?)</script>', text, re.S)
    assert blob is not None
    return json.loads(blob.group(1))


def test_every_model_and_task_gets_a_sample_browser_with_thumbnails(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    index = build_report([runs / "a", runs / "b"], out)
    run = load_run(runs / "a")
    for model in ("prior", "yes"):
        for task in run.tasks:
            got = records(out / "samples" / model / f"{task}.html")
            rows = list(run.rows(model, task))
            assert [r["id"] for r in got] == [str(r["id"]) for r in rows]
            assert [r["o"] for r in got] == [r["prediction"] for r in rows]
            for record in got:  # the demo images are on this machine: every sample has its thumbnail
                assert record["i"] and (out / record["i"]).is_file(), record
    # the second run's "yes" gets its own folder, and the index links each row to its own page
    assert (
        len(records(out / "samples" / "yes~2" / "vqa_rad.html"))
        == load_run(runs / "b").get("yes", "vqa_rad").counts["n"]
    )
    html = index.read_text(encoding="utf-8")
    assert 'href="samples/yes~2/vqa_rad.html"' in html and 'href="samples/prior/slake.html"' in html


def test_the_default_pair_is_compared_and_shown_side_by_side(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    html = build_report([runs / "a"], out).read_text(encoding="utf-8")
    run = load_run(runs / "a")
    for task in run.tasks:
        shared = records(out / "samples" / "prior~vs~yes" / f"{task}.html")
        assert len(shared) == run.get("prior", task).counts["n"]
        assert all(set(r) >= {"A", "B", "id", "q", "g"} for r in shared)
        assert f'href="samples/prior~vs~yes/{task}.html"' in html
    assert html.count('<table class="paired"') == len(run.tasks)


def test_a_pair_whose_settings_differ_is_named_not_compared(runs: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs / "a", run)
    doc = json.loads((run / "results.json").read_text())
    entry = doc["comparability"]["prior"]["vqa_rad"]
    entry["settings"]["closed_rule"] = "answer_type"
    entry["key"] = "different"
    (run / "results.json").write_text(json.dumps(doc))
    html = build_report([run], tmp_path / "out", compare=["prior:yes"]).read_text(encoding="utf-8")
    section = html[html.index('id="paired"') :]
    assert "Not compared: the two results are not comparable" in section and "<code>closed_rule</code>" in section
    assert section.count('<table class="paired"') == len(load_run(run).tasks) - 1


def test_report_compare_option_names_pairs_and_rejects_unknown_models(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(runs / "a"), "--out", str(tmp_path / "r"), "--compare", "yes:prior"]) == 0
    assert (tmp_path / "r" / "samples" / "yes~vs~prior" / "slake.html").is_file()
    assert main(["report", str(runs / "a"), "--out", str(tmp_path / "r2"), "--compare", "yes:nobody"]) == 2
    assert "--compare 'yes:nobody'" in capsys.readouterr().err


def test_the_leaderboard_shows_each_rows_lora_adapter(runs: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs / "a", run)
    doc = json.loads((run / "results.json").read_text())
    doc["models"]["yes"]["adapter"] = {"id": "/adapters/stage2", "path": "/adapters/stage2", "revision": None}
    (run / "results.json").write_text(json.dumps(doc))
    html = build_report([run], tmp_path / "out").read_text(encoding="utf-8")
    cells = re.findall(r'<td class="left adapter">(.*?)<span', html)
    assert cells.count("/adapters/stage2") == len(doc["tasks"]) and cells.count("–") == len(doc["tasks"])
