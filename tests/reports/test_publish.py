"""``medbench publish`` (medbench.reports.publish): the leaderboard folder is incremental, idempotent, replaces an
entry with the newer run's, drops run folders that back nothing, is marked demo when any entry is, survives a killed
publish, and refuses bad input with a clear message."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from medbench.cli import main
from medbench.errors import DataError, MedbenchError, UsageError
from medbench.reports import publish as publish_module
from medbench.reports.publish import BOARD_FILE, STAGING_DIR, publish
from medbench.results import load_run
from medbench.tasks.base import DEMO_ROOT


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run directories built in-process from the demo data (blind baselines, two tasks, few resamples: fast).

    a / a2: prior on slake + vqa_rad, the same command into two folders (same comparability keys, different run
    records, so different run ids); b: yes on the same tasks; both: prior and yes on slake; user: prior on slake
    from a local copy of the demo files (not demo data, same data checksum, so the same keys as a's prior/slake).
    """
    root = tmp_path_factory.mktemp("publish")
    base = ["run", "--resamples", "50", "--cache", str(root / "cache.sqlite")]
    demo = [*base, "--demo"]
    commands = {
        "a": [*demo, "--models", "prior", "--tasks", "slake,vqa_rad"],
        "a2": [*demo, "--models", "prior", "--tasks", "slake,vqa_rad"],
        "b": [*demo, "--models", "yes", "--tasks", "slake,vqa_rad"],
        "both": [*demo, "--models", "prior,yes", "--tasks", "slake"],
    }
    for name, argv in commands.items():
        assert main([*argv, "--output", str(root / name)]) == 0, name
    data = root / "data"
    shutil.copytree(DEMO_ROOT, data, ignore=shutil.ignore_patterns("*.md"))
    argv = [*base, "--data-dir", str(data), "--models", "prior", "--tasks", "slake", "--output", str(root / "user")]
    assert main(argv) == 0
    return root


def tree_hash(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (the whole published tree, in a fixed order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def board(dest: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((dest / BOARD_FILE).read_text(encoding="utf-8"))
    return doc


def backing(dest: Path) -> dict[tuple[str, str], str]:
    """``{(model, task): run_id}`` of the board (the demo runs here have one key per (model, task))."""
    return {(e["model"], e["task"]): e["run_id"] for e in board(dest)["entries"]}


def run_folders(dest: Path) -> set[str]:
    return {p.name for p in (dest / "runs").iterdir()}


class Rows(HTMLParser):
    """Counts ``td.model`` cells per ``table.leaderboard[data-task]``; notes the demo banner."""

    def __init__(self) -> None:
        super().__init__()
        self.models: dict[str, list[str]] = {}
        self.banner = False
        self._task: str | None = None
        self._cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id") == "demo-banner":
            self.banner = True
        if tag == "table" and a.get("class") == "leaderboard":
            self._task = str(a.get("data-task"))
        if tag == "td" and self._task and "model" in (a.get("class") or "").split():
            self._cell = True
            self.models.setdefault(self._task, []).append(str(a.get("data-sort")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._task = None


def page(dest: Path) -> Rows:
    parser = Rows()
    parser.feed((dest / "index.html").read_text(encoding="utf-8"))
    return parser


def test_incremental_publish_adds_a_model_without_touching_the_earlier_run(runs: Path, tmp_path: Path) -> None:
    dest = tmp_path / "leaderboard"
    first = publish([runs / "a"], dest)
    assert (first.added, first.replaced, first.unchanged) == (2, 0, 0)
    (a_id,) = run_folders(dest)
    a_files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (dest / "runs" / a_id).rglob("*") if p.is_file()}

    second = publish([runs / "b"], dest)  # without a's run directory
    assert (second.added, second.replaced, second.unchanged) == (2, 0, 0)
    assert second.entries == 4 and second.published_runs != [a_id]
    assert backing(dest) == {
        ("prior", "slake"): a_id,
        ("prior", "vqa_rad"): a_id,
        ("yes", "slake"): second.published_runs[0],
        ("yes", "vqa_rad"): second.published_runs[0],
    }
    # a's copy is neither rewritten nor touched (same bytes, same mtimes)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in a_files} == a_files
    assert sorted(page(dest).models["slake"]) == ["prior", "yes"]
    assert not (dest / STAGING_DIR).exists()


def test_publishing_the_same_runs_again_changes_no_byte(runs: Path, tmp_path: Path) -> None:
    dest = tmp_path / "leaderboard"
    publish([runs / "a"], dest)
    publish([runs / "b"], dest)
    before = tree_hash(dest)
    again = publish([runs / "a", runs / "b"], dest)
    assert (again.added, again.replaced, again.unchanged, again.removed_runs) == (0, 0, 4, [])
    assert tree_hash(dest) == before
    # The run id is the content's: a copy of a run elsewhere, and the board's own normalised copy, are the same run.
    shutil.copytree(runs / "a", tmp_path / "moved-a")
    (a_id,) = {e["run_id"] for e in board(dest)["entries"] if e["model"] == "prior"}
    for same in (tmp_path / "moved-a", dest / "runs" / a_id):
        summary = publish([same], dest)
        assert (summary.added, summary.replaced, summary.unchanged) == (0, 0, 2)
        assert tree_hash(dest) == before


def test_a_newer_run_replaces_the_entries_and_the_orphaned_run_folder_goes(runs: Path, tmp_path: Path) -> None:
    dest = tmp_path / "leaderboard"
    (a_id,) = publish([runs / "a"], dest).published_runs
    summary = publish([runs / "a2"], dest)
    (a2_id,) = summary.published_runs
    assert a2_id != a_id  # same keys, different run: different content
    assert (summary.added, summary.replaced, summary.unchanged) == (0, 2, 0)
    assert {(r.model, r.task, r.old_run, r.new_run) for r in summary.replacements} == {
        ("prior", "slake", a_id, a2_id),
        ("prior", "vqa_rad", a_id, a2_id),
    }
    assert summary.removed_runs == [a_id] and run_folders(dest) == {a2_id}
    assert set(backing(dest).values()) == {a2_id} and board(dest)["runs"] == [a2_id]
    assert any("replaced prior on slake" in line for line in summary.lines())


def test_replacing_with_a_run_that_started_earlier_says_so(runs: Path, tmp_path: Path) -> None:
    dest = tmp_path / "leaderboard"
    publish([runs / "a"], dest)
    older = tmp_path / "older"
    shutil.copytree(runs / "a2", older)
    record = json.loads((older / "run.json").read_text())
    (older / "run.json").write_text(json.dumps(record | {"started": "2000-01-01T00:00:00+00:00"}))
    summary = publish([older], dest)
    assert summary.replaced == 2  # the publish still wins
    assert len(summary.notes) == 2 and all("which started later" in note for note in summary.notes)


def test_a_partly_replaced_run_stays_and_shows_only_its_remaining_entries(runs: Path, tmp_path: Path) -> None:
    # Guards the pages: the run 'both' still backs prior/slake after b replaced its yes/slake; building the pages
    # straight from runs/* would show yes twice on SLAKE (the replaced number next to the one replacing it).
    dest = tmp_path / "leaderboard"
    (both_id,) = publish([runs / "both"], dest).published_runs
    (b_id,) = publish([runs / "b"], dest).published_runs
    assert backing(dest) == {
        ("prior", "slake"): both_id,
        ("yes", "slake"): b_id,
        ("yes", "vqa_rad"): b_id,
    }
    assert run_folders(dest) == {both_id, b_id}
    assert sorted(page(dest).models["slake"]) == ["prior", "yes"]
    assert not (dest / STAGING_DIR).exists()  # the filtered view is not left in the published folder


def test_the_board_is_marked_demo_when_any_entry_came_from_demo_data(runs: Path, tmp_path: Path) -> None:
    dest = tmp_path / "leaderboard"
    summary = publish([runs / "user"], dest)
    assert board(dest)["demo"] is False and summary.demo is False
    assert not page(dest).banner
    summary = publish([runs / "b"], dest)
    assert board(dest)["demo"] is True and summary.demo is True
    assert page(dest).banner
    flags = {(e["model"], e["provenance"]["dataset"]["source"]): e["demo"] for e in board(dest)["entries"]}
    assert flags == {("prior", "local"): False, ("yes", "demo"): True}
    # the local run's prior/slake has the demo run a's key: publishing a replaces it and the board stays demo
    summary = publish([runs / "a"], dest)
    assert summary.replaced == 1 and board(dest)["demo"] is True


def test_leaderboard_json_holds_numbers_keys_and_provenance_without_build_timestamps(
    runs: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "leaderboard"
    publish([runs / "b", runs / "a"], dest)
    doc = board(dest)
    assert set(doc) == {"schema_version", "demo", "runs", "entries"} and doc["schema_version"] == 1
    order = [(e["task"], e["model"], e["comparability"]["key"]) for e in doc["entries"]]
    assert order == sorted(order)
    source = load_run(runs / "a")
    record = source.record()
    entry = next(e for e in doc["entries"] if (e["model"], e["task"]) == ("prior", "slake"))
    result = source.get("prior", "slake")
    assert result is not None
    assert entry["metrics"] == result.metrics and entry["counts"] == result.counts
    assert entry["comparability"] == result.comparability.to_json() and entry["kind"] == "vqa"
    prov = entry["provenance"]
    assert prov["git"] == record["git"] and prov["versions"] == record["versions"]
    assert prov["started"] == record["started"] and prov["medbench_version"] == source.header["medbench_version"]
    assert prov["dataset"]["checksum"] == source.tasks["slake"]["data"]["checksum"]
    assert prov["prompt"]["sha256"] == source.tasks["slake"]["prompt"]["sha256"]
    assert prov["model"]["class"] == "PriorBaseline" and prov["judge"] is None
    # the only times in the file are the runs' own start and finish: nothing of the publish itself
    stamps = set(re.findall(r"\d{4}-\d\d-\d\dT[0-9:.+-]+", (dest / BOARD_FILE).read_text(encoding="utf-8")))
    b_record = load_run(runs / "b").record()
    assert stamps == {record["started"], record["finished"], b_record["started"], b_record["finished"]}


def test_each_run_copy_is_named_by_its_content_and_reads_back_as_the_run(runs: Path, tmp_path: Path) -> None:
    dest = tmp_path / "leaderboard"
    (run_id,) = publish([runs / "a"], dest).published_runs
    copy = dest / "runs" / run_id
    sums = (copy / "SHA256SUMS").read_bytes()
    assert hashlib.sha256(sums).hexdigest()[:16] == run_id
    listed = {}
    for line in sums.decode().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
        assert hashlib.sha256((copy / name).read_bytes()).hexdigest() == digest
    assert set(listed) == {
        "results.json",
        "run.json",
        "predictions/prior/slake.jsonl",
        "predictions/prior/vqa_rad.jsonl",
    }
    original, published = load_run(runs / "a"), load_run(copy)
    assert published.to_json() == original.to_json() and published.record() == original.record()
    assert list(published.rows("prior", "slake")) == list(original.rows("prior", "slake"))


def test_stale_sample_pages_go_and_thumbnails_stay(runs: Path, tmp_path: Path) -> None:
    dest = tmp_path / "leaderboard"
    publish([runs / "a"], dest)
    stale = dest / "samples" / "dropped-model" / "slake.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("<p>an entry no longer on the board</p>", encoding="utf-8")
    kept = dest / "thumbs" / "0123456789abcdef-unreachable.jpg"  # an image whose data root has moved away
    kept.parent.mkdir(exist_ok=True)
    kept.write_bytes(b"thumbnail")
    publish([runs / "a"], dest)
    assert not stale.exists() and not stale.parent.exists()
    assert kept.read_bytes() == b"thumbnail"


def _killed(*_: Any, **__: Any) -> None:
    raise KeyboardInterrupt


def test_a_killed_publish_never_leaves_the_board_pointing_at_missing_runs(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "leaderboard"
    publish([runs / "a"], dest)
    before = board(dest)

    with monkeypatch.context() as patch:  # killed after the run copy, before leaderboard.json
        patch.setattr(publish_module, "write_json_atomic", _killed)
        with pytest.raises(KeyboardInterrupt):
            publish([runs / "b"], dest)
    assert board(dest) == before
    assert all((dest / "runs" / run_id / "results.json").is_file() for run_id in before["runs"])
    with monkeypatch.context() as patch:  # killed while the pages are rebuilt, after leaderboard.json
        patch.setattr("medbench.reports.site.build_report", _killed)
        with pytest.raises(KeyboardInterrupt):
            publish([runs / "a2"], dest)
    after = board(dest)
    assert all((dest / "runs" / run_id / "results.json").is_file() for run_id in after["runs"])
    assert (dest / "samples").is_dir()  # the previous sample pages are put back
    # the next publish cleans up what the killed ones left and gives the tree a clean publish gives
    publish([runs / "b"], dest)
    assert not (dest / STAGING_DIR).exists()
    recovered = tree_hash(dest)
    shutil.rmtree(dest)  # the same folder (the pages name their runs by path), published without interruption
    publish([runs / "a2"], dest)
    publish([runs / "b"], dest)
    assert recovered == tree_hash(dest)


def test_a_first_publish_killed_before_the_board_was_written_can_be_rerun(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Guards the runs/ ownership check: a folder holding only publish's own run copies is not "foreign".
    dest = tmp_path / "leaderboard"
    with monkeypatch.context() as patch:
        patch.setattr(publish_module, "write_json_atomic", _killed)
        with pytest.raises(KeyboardInterrupt):
            publish([runs / "a"], dest)
    assert not (dest / BOARD_FILE).exists() and len(run_folders(dest)) == 1
    summary = publish([runs / "b"], dest)
    assert summary.added == 2 and summary.removed_runs == [run_id_of(runs / "a", tmp_path)]
    assert set(backing(dest).values()) == set(run_folders(dest)) == set(summary.published_runs)


def run_id_of(run: Path, tmp_path: Path) -> str:
    """The run id ``run`` gets (published alone into a scratch folder)."""
    (run_id,) = publish([run], tmp_path / "scratch").published_runs
    return run_id


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        ("missing folder", UsageError, "not a folder"),
        ("no results.json", DataError, "no results.json"),
        ("newer schema", DataError, "newer than this medbench reads"),
        ("unfinished", DataError, "status is 'running'"),
        ("no run.json", DataError, "no readable run.json"),
        ("before comparability keys", DataError, "written before comparability keys"),
        ("no prediction rows", DataError, "vqa_rad.jsonl: cannot be read"),
    ],
)
def test_bad_run_directories_are_refused_with_a_clear_message(
    runs: Path, tmp_path: Path, damage: str, error: type[MedbenchError], message: str
) -> None:
    run = tmp_path / "run"
    if damage != "missing folder":
        shutil.copytree(runs / "a", run)
    results = json.loads((run / "results.json").read_text()) if run.exists() else {}
    if damage == "no results.json":
        (run / "results.json").unlink()
    elif damage == "newer schema":
        results["schema_version"] = 99
    elif damage == "unfinished":
        record = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps(record | {"status": "running"}))
    elif damage == "no run.json":
        (run / "run.json").unlink()
    elif damage == "no prediction rows":
        (run / "predictions" / "prior" / "vqa_rad.jsonl").unlink()
    elif damage == "before comparability keys":
        del results["schema_version"], results["comparability"]
    if damage in ("newer schema", "before comparability keys"):
        (run / "results.json").write_text(json.dumps(results))
    dest = tmp_path / "leaderboard"
    with pytest.raises(error, match=message) as caught:
        publish([runs / "b", run], dest)  # a good run first: still nothing is written
    assert str(run) in str(caught.value)
    assert not dest.exists()


def test_a_bad_destination_or_board_is_refused(runs: Path, tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        publish([runs / "a"], afile)
    with pytest.raises(UsageError, match="is a run directory"):
        publish([runs / "b"], runs / "a")
    foreign = tmp_path / "foreign"
    (foreign / "runs" / "my-own-run").mkdir(parents=True)  # runs/ that publish does not own: never removed
    with pytest.raises(UsageError, match=r"no leaderboard\.json"):
        publish([runs / "a"], foreign)
    assert (foreign / "runs" / "my-own-run").is_dir()
    with pytest.raises(UsageError, match="name at least one run directory"):
        publish([], tmp_path / "empty")
    dest = tmp_path / "leaderboard"
    publish([runs / "a"], dest)
    (dest / BOARD_FILE).write_text(json.dumps(board(dest) | {"schema_version": 7}))
    with pytest.raises(DataError, match="newer than this medbench writes"):
        publish([runs / "b"], dest)
    (dest / BOARD_FILE).write_text("{ not json")
    with pytest.raises(DataError, match=r"leaderboard\.json: cannot be read as JSON"):
        publish([runs / "b"], dest)


def test_a_board_whose_run_folder_was_deleted_is_reported(runs: Path, tmp_path: Path) -> None:
    dest = tmp_path / "leaderboard"
    (run_id,) = publish([runs / "a"], dest).published_runs
    shutil.rmtree(dest / "runs" / run_id)
    with pytest.raises(DataError, match=f"runs/{run_id}: missing"):
        publish([runs / "b"], dest)


def test_publish_without_runs_rebuilds_the_pages_of_the_board(runs: Path, tmp_path: Path) -> None:
    dest = tmp_path / "leaderboard"
    publish([runs / "a"], dest)
    before = tree_hash(dest)
    (dest / "index.html").unlink()
    summary = publish([], dest)
    assert (summary.added, summary.replaced, summary.unchanged, summary.entries) == (0, 0, 0, 2)
    assert tree_hash(dest) == before


def test_the_publish_command_adds_runs_and_exits_2_on_bad_input(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "board"
    assert main(["publish", str(runs / "a"), "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "added" in out and (dest / BOARD_FILE).is_file() and (dest / "index.html").is_file()
    page_text = (dest / "index.html").read_text(encoding="utf-8")
    assert str(runs) not in page_text and str(dest) not in page_text  # no local path of the publisher on the page
    assert main(["publish", str(tmp_path / "nowhere"), "--dest", str(dest)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_the_checked_in_board_is_the_demo_board_this_code_builds(tmp_path: Path) -> None:
    """leaderboard/ in the repository: a demo board whose run copies check out, and which republishing with this
    code leaves byte-identical (after a change to the pages: `medbench publish --dest leaderboard` and commit)."""
    board_dir = Path(__file__).resolve().parents[2] / "leaderboard"
    if not (board_dir / BOARD_FILE).is_file():
        pytest.skip("no leaderboard/ here (an installed package, not a checkout)")
    doc = json.loads((board_dir / BOARD_FILE).read_text(encoding="utf-8"))
    assert doc["demo"] is True and doc["entries"]
    assert "DEMO DATA" in (board_dir / "index.html").read_text(encoding="utf-8")
    for run_id in {e["run_id"] for e in doc["entries"]}:
        folder = board_dir / "runs" / run_id
        for line in (folder / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
            digest, name = line.split(maxsplit=1)
            assert hashlib.sha256((folder / name.lstrip("*")).read_bytes()).hexdigest() == digest, (run_id, name)
        assert load_run(folder).models
    copy = tmp_path / "leaderboard"
    shutil.copytree(board_dir, copy)
    publish([], copy)
    assert tree_hash(copy) == tree_hash(board_dir), "leaderboard/ is stale: run `medbench publish --dest leaderboard`"
