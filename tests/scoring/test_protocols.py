import json
import subprocess
import sys
from pathlib import Path

import pytest

from medbench.errors import UsageError
from medbench.scoring.aggregate import ScoringOptions, aggregate_vqa, score_batch, subgroups_vqa
from medbench.scoring.protocols import get_protocol, protocols


def rows(preds: list[str], refs: list[str], types: list[str], meta: list[dict] | None = None) -> list[dict]:
    scores = score_batch("vqa", preds, refs, types, ScoringOptions())
    return [
        {"prediction": p, "reference": r, "answer_type": t, "scores": s, "metadata": (meta or [{}] * len(preds))[i]}
        for i, (p, r, t, s) in enumerate(zip(preds, refs, types, scores, strict=True))
    ]


def test_every_protocol_is_computed_per_sample() -> None:
    (only,) = rows(["The answer is: No."], ["no"], ["closed"])
    assert set(protocols()) == {"strict", "clinical", "llava-med", "multimedeval"}
    assert {"strict", "clinical", "llava-med", "multimedeval", "multimedeval/recall"} <= set(only["scores"])


def test_protocols_disagree_where_they_should() -> None:
    data = rows(
        ["The heart is normal", "left lung", "enlarged heart"],
        ["no", "left lung", "cardiomegaly"],
        ["closed", "open", "open"],
    )
    metrics = aggregate_vqa(data, ScoringOptions(resamples=200))
    # substring trap: llava-med counts "no" in "normal", strict does not
    assert metrics["llava-med"]["closed_accuracy"]["value"] == 1.0
    assert metrics["strict"]["closed_accuracy"]["value"] == 0.0
    # clinical credits the synonym, strict does not
    assert metrics["clinical"]["open_accuracy"]["value"] == 1.0
    assert metrics["strict"]["open_accuracy"]["value"] == 0.5
    assert metrics["strict"]["overall_accuracy"]["n"] == 3


def test_multimedeval_closed_rule_overrides_answer_type() -> None:
    data = rows(["left"], ["Left"], ["closed"])  # closed by the dataset, open for MultiMedEval
    metrics = aggregate_vqa(data, ScoringOptions(resamples=100))
    assert metrics["strict"]["closed_accuracy"]["n"] == 1
    assert metrics["multimedeval"]["closed_accuracy"]["n"] == 0
    assert metrics["multimedeval"]["open_accuracy"]["value"] == 1.0
    assert metrics["multimedeval"]["open_recall_075"]["value"] == 1.0


def test_subgroups_with_counts() -> None:
    meta = [{"modality": "CT"}, {"modality": "CT"}, {"modality": "MRI"}, {}]
    data = rows(["yes", "liver", "no", "x"], ["yes", "lung", "yes", "x"], ["closed", "open", "closed", "open"], meta)
    groups = subgroups_vqa(data, ScoringOptions(resamples=100, subgroup_fields=("modality",)))["modality"]
    assert groups["missing"] == 1
    ct = groups["groups"]["CT"]
    assert (ct["n"], ct["n_closed"], ct["n_open"]) == (2, 1, 1)
    assert ct["strict"]["overall_accuracy"]["value"] == 0.5
    assert groups["groups"]["MRI"]["strict"]["closed_accuracy"]["value"] == 0.0


def test_unknown_protocol_lists_known_ones() -> None:
    with pytest.raises(UsageError, match="known protocols: strict, clinical, llava-med, multimedeval"):
        get_protocol("vqa2")


def _score(tmp_path: Path, lines: list[str], *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "preds.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return subprocess.run(
        [sys.executable, "-m", "medbench.cli", "score", str(path), *args], capture_output=True, text=True, timeout=120
    )


def test_score_bad_input(tmp_path: Path) -> None:
    good = json.dumps({"id": "1", "task": "slake", "answer_type": "closed", "reference": "yes", "prediction": "yes"})
    missing = json.dumps({"id": "2", "task": "slake", "reference": "yes", "prediction": "no"})
    result = _score(tmp_path, [good, missing])
    assert result.returncode == 2 and "preds.jsonl:2: row lacks required key(s) answer_type" in result.stderr
    result = _score(tmp_path, [good, "{oops"])
    assert result.returncode == 2 and "preds.jsonl:2: not valid JSON" in result.stderr
    result = _score(tmp_path, [good, good])
    assert result.returncode == 2 and "duplicate id '1'" in result.stderr
    result = _score(tmp_path, [good], "--protocol", "nope")
    assert result.returncode == 2 and "known protocols:" in result.stderr


def test_score_coerces_and_handles_empty_predictions(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": str(i), "task": "vqa_rad", "answer_type": t, "reference": r, "prediction": p})
        for i, (t, r, p) in enumerate(
            [("closed", "yes", None), ("open", "2", 2), ("open", "liver", ""), ("closed", "no", ["no"])]
        )
    ]
    result = _score(tmp_path, lines, "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["tasks"]["vqa_rad"]
    assert metrics["closed_accuracy"]["value"] == 0.5  # None -> "" wrong; ["no"] -> "no" right
    assert metrics["open_accuracy"]["value"] == 0.5  # 2 -> "2" right; "" wrong
    table = _score(tmp_path, lines)
    assert table.returncode == 0 and "overall_accuracy" in table.stdout
