"""``medbench gate`` end to end: verdicts and exit codes on prediction files and run directories, comparability
first, samples on one side only reported, baselines promoted deliberately."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from medbench.cli import main
from medbench.reports.gating import run_gate

WORDS = ["lung", "liver", "heart", "kidney", "brain", "spleen", "bone", "colon"]


def rows(n: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    """VQA-RAD-shaped rows, half closed (yes/no), half open; the prediction right for about 70%."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        closed = i % 2 == 0
        gold = rng.choice(["yes", "no"]) if closed else rng.choice(WORDS)
        right = rng.random() < 0.7
        wrong = ("no" if gold == "yes" else "yes") if closed else next(w for w in WORDS if w != gold)
        out.append(
            {
                "id": f"q{i:04d}",
                "task": "vqa_rad",
                "model": "m",
                "answer_type": "closed" if closed else "open",
                "question": f"question {i}?",
                "reference": gold,
                "prediction": gold if right else wrong,
            }
        )
    return out


def flip(base: list[dict[str, Any]], share: float, *, to_wrong: bool = True, seed: int = 1) -> list[dict[str, Any]]:
    """A copy with ``share`` of the right (or wrong) answers flipped."""
    rng = random.Random(seed)
    out = [dict(r) for r in base]
    pool = [r for r in out if (r["prediction"] == r["reference"]) == to_wrong]
    for r in rng.sample(pool, max(1, round(share * len(pool))) if share else 0):
        if to_wrong:
            r["prediction"] = "banana"
        else:
            r["prediction"] = r["reference"]
    return out


def write(path: Path, data: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(tmp_path / "baseline.jsonl", rows())


def gate(tmp_path: Path, base: Path, candidate: list[dict[str, Any]], *extra: str) -> int:
    return main(
        ["gate", "--baseline", str(base), "--candidate", str(write(tmp_path / "cand.jsonl", candidate)), *extra]
    )


def test_identical_predictions_pass_with_no_change(tmp_path: Path, base: Path) -> None:
    report = run_gate(base, write(tmp_path / "same.jsonl", rows()))
    assert report.exit_code == 0
    assert {c.verdict for c in report.comparisons} == {"no change"}
    assert {c.metric for c in report.comparisons} == {"closed_accuracy", "open_accuracy", "overall_accuracy"}
    assert all(c.test == "mcnemar_exact" and c.p_value == 1.0 for c in report.comparisons)


def test_thirty_percent_of_answers_flipped_wrong_fails_and_names_the_flips(tmp_path: Path, base: Path) -> None:
    candidate = flip(rows(), 0.3)
    report = run_gate(base, write(tmp_path / "c.jsonl", candidate))
    overall = next(c for c in report.comparisons if c.metric == "overall_accuracy")
    assert overall.verdict == "regression" and report.exit_code == 1
    flipped = sorted(r["id"] for r, b in zip(candidate, rows(), strict=True) if r["prediction"] != b["prediction"])
    assert sorted(overall.worse) == flipped and overall.better == []
    assert overall.p_holm < 0.05 and overall.ci95[1] < 0
    assert overall.examples[0]["candidate"] == "banana"
    assert gate(tmp_path, base, candidate) == 1


def test_a_single_flipped_answer_is_not_significant(tmp_path: Path, base: Path) -> None:
    candidate = rows()
    victim = next(r for r in candidate if r["prediction"] == r["reference"])
    victim["prediction"] = "banana"
    report = run_gate(base, write(tmp_path / "c.jsonl", candidate))
    assert "regression" not in {c.verdict for c in report.comparisons} and report.exit_code == 0
    overall = next(c for c in report.comparisons if c.metric == "overall_accuracy")
    assert overall.worse == [victim["id"]] and overall.p_value == 1.0


def test_an_improvement_passes(tmp_path: Path, base: Path) -> None:
    report = run_gate(base, write(tmp_path / "c.jsonl", flip(rows(), 0.5, to_wrong=False)))
    overall = next(c for c in report.comparisons if c.metric == "overall_accuracy")
    assert overall.verdict == "improvement" and overall.delta > 0 and report.exit_code == 0


def test_a_small_sample_that_cannot_rule_out_a_drop_is_inconclusive(tmp_path: Path) -> None:
    small = rows(40)
    base = write(tmp_path / "b.jsonl", small)
    candidate = flip(small, 0.1)  # a real but small, non-significant drop on 40 samples
    report = run_gate(base, write(tmp_path / "c.jsonl", candidate), metrics=["overall_accuracy"])
    (overall,) = report.comparisons
    assert overall.verdict == "inconclusive" and report.exit_code == 0
    assert overall.samples_needed is None or overall.samples_needed > overall.n
    assert gate(tmp_path, base, candidate, "--metric", "overall_accuracy", "--fail-on-inconclusive") == 1


def test_sample_ids_on_one_side_are_reported_and_left_out(tmp_path: Path, base: Path) -> None:
    candidate = [*rows()[10:], dict(rows()[0], id="extra1"), dict(rows()[1], id="extra2")]
    report = run_gate(base, write(tmp_path / "c.jsonl", candidate))
    overall = next(c for c in report.comparisons if c.metric == "overall_accuracy")
    assert overall.n == 290 and overall.only_baseline == 10 and overall.only_candidate == 2
    assert any("10 sample ids only in the baseline and 2 only in the candidate" in n for n in report.notes)


def test_unusable_input_exits_2(tmp_path: Path, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cand = write(tmp_path / "c.jsonl", rows())
    assert main(["gate", "--baseline", str(tmp_path / "missing"), "--candidate", str(cand)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["gate", "--baseline", str(base), "--candidate", str(cand), "--metric", "bogus"]) == 2
    assert "unknown --metric bogus" in capsys.readouterr().err
    other_gold = [dict(r, reference="spleen") if i == 3 else r for i, r in enumerate(rows())]
    assert gate(tmp_path, base, other_gold) == 2
    assert "other gold answers" in capsys.readouterr().err
    other_task = [dict(r, task="slake") for r in rows()]
    assert gate(tmp_path, base, other_task) == 2  # nothing shared to compare


def test_json_markdown_and_the_step_summary(
    tmp_path: Path, base: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code = gate(tmp_path, base, flip(rows(), 0.3), "--json", "--markdown", str(tmp_path / "gate.md"))
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["exit_code"] == 1 and doc["counts"]["regression"] >= 1
    assert (tmp_path / "gate.md").read_text(encoding="utf-8") == summary.read_text(encoding="utf-8")
    assert "regression" in summary.read_text(encoding="utf-8")


# --- run directories -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gate-runs")
    base = ["run", "--demo", "--resamples", "50", "--cache", str(root / "cache.sqlite"), "--tasks", "vqa_rad,rocov2"]
    assert main([*base, "--output", str(root / "a")]) == 0
    assert main([*base, "--output", str(root / "again")]) == 0
    assert main([*base, "--tasks", "vqa_rad", "--closed-rule", "answer_type", "--output", str(root / "rule")]) == 0
    return root


def test_run_directories_gate_every_task_with_corpus_bleu_paired(runs: Path) -> None:
    report = run_gate(runs / "a", runs / "again")
    assert report.exit_code == 0 and report.pairs == [("prior", "prior"), ("yes", "yes")]
    bleu = [c for c in report.comparisons if c.metric == "bleu"]
    assert bleu and all(c.test == "paired_corpus_bootstrap" and c.delta == 0 for c in bleu)


def test_a_changed_closed_rule_is_exit_2_unless_allowed(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["gate", "--baseline", str(runs / "a"), "--candidate", str(runs / "rule")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not comparable" in err and "closed_rule" in err
    assert main([*args, "--allow-change", "closed_rule", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "vqa_rad.closed_rule" in doc["allowed_changes"]


def test_update_baseline_promotes_and_refuses_a_regression(runs: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "leaderboard" / "baseline"
    assert main(["gate", "--baseline", str(baseline), "--candidate", str(runs / "a"), "--update-baseline"]) == 0
    assert (baseline / "results.json").is_file() and (baseline / "predictions" / "prior" / "vqa_rad.jsonl").is_file()
    assert main(["gate", "--baseline", str(baseline), "--candidate", str(runs / "again")]) == 0
    worse = tmp_path / "worse"
    shutil.copytree(runs / "again", worse)
    rows_path = worse / "predictions" / "prior" / "vqa_rad.jsonl"
    data = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines()]
    for r in data:  # every answer wrong under every protocol
        r["prediction"] = r["answer"] = "banana"
        r["scores"] = {k: 0.0 for k in r["scores"]}
    write(rows_path, data)
    before = (baseline / "results.json").read_bytes()
    # 15 demo questions: only a lenient alpha on one metric makes the drop significant
    args = ["gate", "--baseline", str(baseline), "--candidate", str(worse), "--update-baseline"]
    args += ["--metric", "overall_accuracy", "--alpha", "0.5"]
    assert main(args) == 1 and (baseline / "results.json").read_bytes() == before
    assert main([*args, "--force"]) == 0
    assert (
        json.loads((baseline / "predictions" / "prior" / "vqa_rad.jsonl").read_text().splitlines()[0])["prediction"]
        == "banana"
    )
