"""llava-med and multimedeval reproduce the original tools case by case (see data/README.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medbench.scoring.legacy import llava_med_recall, llava_med_sample, multimedeval_is_closed, multimedeval_sample
from medbench.scoring.normalize import legacy_normalize

DATA = Path(__file__).parent / "data"
CASES = [json.loads(line) for line in (DATA / "peer_cases.jsonl").open(encoding="utf-8")]
AGGREGATES = json.loads((DATA / "peer_aggregates.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_llava_med_per_sample(case: dict) -> None:
    expected = case["expected"]["llava-med"]
    got = llava_med_sample(case["prediction"], case["reference"], case["answer_type"])
    if case["answer_type"] == "closed":
        assert got["score"] == expected["closed_hit"]
    else:
        assert got["score"] == pytest.approx(expected["recall"], abs=1e-12)
        assert got["open_hit"] == expected["open_hit"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_multimedeval_per_sample(case: dict) -> None:
    expected = case["expected"]["multimedeval"]
    got = multimedeval_sample(case["prediction"], case["reference"])
    assert multimedeval_is_closed(case["reference"]) is expected["is_closed"]
    assert got["recall"] == pytest.approx(expected["recall"], abs=1e-12)
    if expected["is_closed"]:
        assert got["score"] == expected["closed_correct"]
    else:
        assert got["score"] == pytest.approx(expected["recall"], abs=1e-12)


def test_quirks_spelled_out() -> None:
    # The period regex deletes periods not followed by a digit, at most 32 per call.
    assert legacy_normalize("u.s.") == "us" and legacy_normalize("3.5") == "3.5"
    text = " ".join(["ok."] * 40) + " left."
    assert legacy_normalize(text).split()[-1] == "left."
    # Recall credits a matched token with its prediction count: 3 / (3 + 1).
    assert llava_med_recall("left left left", "left lung") == 0.75
    # Substring: "no" is inside "normal"; a gold that normalises to "" always hits.
    assert llava_med_sample("the heart is normal", "no", "closed")["score"] == 1.0
    assert llava_med_sample("", "the", "closed")["score"] == 1.0
    # MultiMedEval: "not" counts for a "no" gold; its own closed rule ignores answer_type.
    assert multimedeval_sample("not present", "no")["score"] == 1.0
    assert multimedeval_sample("not present", "no")["recall"] == 0.0
    assert not multimedeval_is_closed("left") and multimedeval_is_closed("Yes.")


def _score(protocol: str) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medbench.cli",
            "score",
            str(DATA / "peer_cases.jsonl"),
            "--protocol",
            protocol,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["tasks"]["peer_fixture"]


def test_medbench_score_matches_llava_med_corpus_table() -> None:
    metrics = _score("llava-med")
    table = AGGREGATES["llava-med"]
    assert metrics["closed_accuracy"]["n"] == table["num_closed"]
    assert metrics["open_accuracy"]["n"] == table["num_open"]
    assert 100 * metrics["closed_accuracy"]["value"] == pytest.approx(table["yes/no accuracy"], abs=1e-4)
    assert 100 * metrics["open_accuracy"]["value"] == pytest.approx(table["recall"], abs=1e-4)
    assert 100 * metrics["open_substring_accuracy"]["value"] == pytest.approx(table["open accuracy"], abs=1e-4)


def test_medbench_score_matches_multimedeval_corpus() -> None:
    metrics = _score("multimedeval")
    expected = AGGREGATES["multimedeval"]
    assert metrics["closed_accuracy"]["value"] == pytest.approx(expected["closedQuestionsAccuracy"], abs=1e-12)
    assert metrics["open_accuracy"]["value"] == pytest.approx(expected["openQuestionsRecall"], abs=1e-12)
    assert metrics["open_recall_075"]["value"] == pytest.approx(expected["openQuestionsAccuracy"], abs=1e-12)
    for entry in metrics.values():
        lo, hi = entry["ci95"]
        assert lo <= entry["value"] <= hi
