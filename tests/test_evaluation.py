"""The evaluation core: ``run`` and ``score`` agree, and metric_vectors is the vector behind every headline metric."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medbench.cli import main
from medbench.errors import UsageError
from medbench.evaluation import evaluate_rows, metric_vectors
from medbench.scorefile import score_files
from medbench.scoring.aggregate import ScoringOptions
from medbench.scoring.protocols import protocols

OPTIONS = ScoringOptions(resamples=200, seed=0)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    cache = out.parent / "cache.sqlite"
    assert main(["run", "--demo", "--models", "prior", "--output", str(out), "--cache", str(cache)]) == 0
    return out


def rows_of(run: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (run / "predictions" / "prior" / f"{task}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("task", ["slake", "pathvqa", "vqa_rad", "rocov2"])
def test_score_gives_the_numbers_run_gave(demo_run: Path, task: str) -> None:
    results = json.loads((demo_run / "results.json").read_text())
    resamples = results["scoring"]["bootstrap"]["resamples"]
    options = ScoringOptions(resamples=resamples, seed=0, bertscore=None)
    scored = score_files([demo_run / "predictions" / "prior" / f"{task}.jsonl"], "strict", options)
    expected = results["metrics"]["prior"][task][results["headline"][task]]
    expected = {k: v for k, v in expected.items() if not k.startswith("bertscore")}  # scored here without it
    assert scored["tasks"][task] == expected
    every = results["metrics"]["prior"][task]
    strip = lambda metrics: {k: v for k, v in metrics.items() if not k.startswith("bertscore")}  # noqa: E731
    assert {p: strip(m) for p, m in scored["metrics"][task].items()} == {p: strip(m) for p, m in every.items()}


@pytest.mark.parametrize("task", ["slake", "pathvqa", "vqa_rad"])
def test_metric_vectors_are_the_samples_behind_each_vqa_metric(demo_run: Path, task: str) -> None:
    rows = rows_of(demo_run, task)
    evaluation = evaluate_rows("vqa", rows, OPTIONS)
    for name in protocols():
        for metric, entry in evaluation.metrics[name].items():
            ids, values = metric_vectors(rows, name, metric)
            assert len(ids) == len(values) == entry["n"]
            if entry["n"]:
                assert float(values.mean()) == pytest.approx(entry["value"])
    closed_ids, _ = metric_vectors(rows, "strict", "closed_accuracy")
    open_ids, _ = metric_vectors(rows, "strict", "open_accuracy")
    assert sorted(closed_ids + open_ids) == sorted(r["id"] for r in rows)


def test_metric_vectors_for_captions(demo_run: Path) -> None:
    rows = rows_of(demo_run, "rocov2")
    evaluation = evaluate_rows("caption", rows, OPTIONS)
    for metric in ("bleu4_sentence", "token_recall", "rouge1"):
        ids, values = metric_vectors(rows, "caption", metric)
        assert ids == [r["id"] for r in rows]
        assert float(np.mean(values)) == pytest.approx(evaluation.metrics["caption"][metric]["value"])
    with pytest.raises(UsageError, match="corpus metric"):
        metric_vectors(rows, "caption", "bleu")
    with pytest.raises(UsageError, match="has no 'strict' score"):
        metric_vectors(rows, "strict", "overall_accuracy")
    with pytest.raises(UsageError, match="no per-sample metric"):
        metric_vectors(rows, "caption", "closed_accuracy")


def test_the_protocols_own_closed_rule_decides_which_samples_count() -> None:
    # A gold "yes, there is" is closed for multimedeval's own rule (its reference starts with yes) only if that
    # protocol says so; the vectors follow each protocol's is_closed, not one shared split.
    rows = [
        {"id": "a", "reference": "yes", "answer_type": "closed", "prediction": "yes"},
        {"id": "b", "reference": "left lung", "answer_type": "open", "prediction": "left lung"},
    ]
    evaluate_rows("vqa", rows, OPTIONS)
    for name, protocol in protocols().items():
        ids, _ = metric_vectors(rows, name, "closed_accuracy")
        assert ids == [r["id"] for r in rows if protocol.is_closed(r["reference"], r["answer_type"])]


def test_evaluation_keeps_no_state_between_calls() -> None:
    rows = [
        {"id": str(i), "reference": "a small mass", "answer_type": None, "prediction": p}
        for i, p in enumerate(["a mass", "small"])
    ]
    first = evaluate_rows("caption", [dict(r) for r in rows], OPTIONS).metrics
    other = [{"id": "x", "reference": "normal chest", "answer_type": None, "prediction": "normal"}]
    evaluate_rows("caption", other, OPTIONS)
    assert evaluate_rows("caption", [dict(r) for r in rows], OPTIONS).metrics == first
