"""Judge records folded into scores and metrics (pure functions; no judge is called)."""

from __future__ import annotations

from typing import Any

import pytest

from medbench.provenance import redact_url, redact_urls
from medbench.scoring.aggregate import ScoringOptions, aggregate, score_batch
from medbench.scoring.judged import agreement_report, apply_judge_records, caption_judge_metrics

OPTIONS = ScoringOptions(resamples=200, seed=0)


def _vqa_rows(cases: list[tuple[str, str, str, dict[str, Any] | None]]) -> list[dict[str, Any]]:
    """(prediction, reference, answer_type, judge record or None) -> scored rows."""
    scores = score_batch("vqa", [c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases], OPTIONS)
    rows = []
    for (pred, ref, kind, record), score in zip(cases, scores, strict=True):
        row: dict[str, Any] = {"prediction": pred, "reference": ref, "answer_type": kind, "scores": score}
        if record is not None:
            row["judge"] = {"kind": "equivalence", "failure": None, **record}
        rows.append(row)
    return rows


def test_clinical_with_a_judge_keeps_matches_adds_verdicts_and_leaves_failures_out() -> None:
    rows = _vqa_rows(
        [
            ("yes", "yes", "closed", None),
            ("heart", "heart", "open", {"equivalent": False}),  # exact match: stays correct
            ("enlarged heart", "cardiomegaly", "open", {"equivalent": True}),  # table already accepts
            ("in both lung fields", "both lungs", "open", {"equivalent": True}),  # the judge adds it
            ("liver", "spleen", "open", {"equivalent": False}),
            ("kidney", "renal cyst", "open", {"equivalent": None, "failure": "request failed: HTTP 500"}),
        ]
    )
    apply_judge_records(rows)
    assert [r["scores"]["clinical"] for r in rows] == [1.0, 1.0, 1.0, 1.0, 0.0, None]
    assert [r["scores"].get("clinical/judge") for r in rows] == [None, 0.0, 1.0, 1.0, 0.0, None]
    apply_judge_records(rows)  # idempotent: the table-only score is kept, not overwritten by the judged one
    assert rows[3]["scores"]["clinical/table"] == 0.0 and rows[3]["scores"]["clinical"] == 1.0
    clinical = aggregate("vqa", rows, OPTIONS)["clinical"]
    assert clinical["open_accuracy"]["value"] == pytest.approx(3 / 4) and clinical["open_accuracy"]["n"] == 4
    assert clinical["overall_accuracy"]["n"] == 5
    assert clinical["judge_failures"] == {"value": 1, "ci95": None, "n": 5}
    strict = aggregate("vqa", rows, OPTIONS)["strict"]
    assert "judge_failures" not in strict and strict["open_accuracy"]["n"] == 5
    report = agreement_report(rows, 200, 0)
    assert report["table"] == {"strict1_judge1": 0, "strict1_judge0": 1, "strict0_judge1": 2, "strict0_judge0": 1}
    assert (report["clinical_added_by_table"], report["clinical_added_by_judge"]) == (1, 1)
    assert report["agreement_with_strict"]["value"] == pytest.approx(1 / 4)


def test_kappa_is_one_for_perfect_agreement_and_undefined_without_variation() -> None:
    agree = _vqa_rows([("x", "x", "open", {"equivalent": True}), ("y", "z", "open", {"equivalent": False})])
    apply_judge_records(agree)
    assert agreement_report(agree, 100, 0)["kappa"] == pytest.approx(1.0)
    same = _vqa_rows([("x", "x", "open", {"equivalent": True})])
    apply_judge_records(same)
    assert agreement_report(same, 100, 0)["kappa"] is None


def test_caption_judge_metrics() -> None:
    rows = [{"judge": {"kind": "caption_score", "score": s, "failure": None if s else "x"}} for s in (5, 3, None, 4)]
    metrics = caption_judge_metrics(rows, 500, 0)
    assert metrics["judge_score"]["value"] == pytest.approx(4.0) and metrics["judge_score"]["n"] == 3
    lo, hi = metrics["judge_score"]["ci95"]
    assert 3.0 <= lo < 4.0 < hi <= 5.0
    assert metrics["judge_failures"]["value"] == 1 and metrics["judge_failure_rate"]["value"] == 0.25
    assert caption_judge_metrics([{"scores": {}}], 10, 0) == {}
    all_failed = caption_judge_metrics([{"judge": {"kind": "caption_score", "score": None, "failure": "x"}}], 10, 0)
    assert all_failed["judge_score"]["value"] is None and all_failed["judge_score"]["ci95"] is None


def test_redact_urls() -> None:
    assert redact_url("https://u:p@api.example.com:8443/v1/?api_key=s") == "https://api.example.com:8443/v1"
    assert redact_url("http://[bad") == "<unparseable url>"
    record = {"argv": ["--judge-base-url", "http://u:secret@h/v1?k=secret"], "n": 3, "t": ("a", "x=ftp://q@r/")}
    assert redact_urls(record) == {"argv": ["--judge-base-url", "http://h/v1"], "n": 3, "t": ["a", "x=ftp://r"]}
