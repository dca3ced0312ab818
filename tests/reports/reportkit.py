"""Shared builders for the report tests (imported by name: tests/ folders are not packages)."""

from __future__ import annotations

from typing import Any

from medbench.evaluation import evaluate_rows
from medbench.scoring.aggregate import ScoringOptions, answer_of

PROTOCOLS = ("strict", "clinical", "llava-med", "multimedeval")


def vqa_rows(answers: list[tuple[str, str, str]], model: str) -> list[dict[str, Any]]:
    """Scored VQA rows from (id, reference, prediction); closed = yes/no reference."""
    rows = [
        {
            "id": i,
            "task": "vqa_rad",
            "model": model,
            "answer_type": "closed" if ref in ("yes", "no") else "open",
            "question": f"question {i}?",
            "reference": ref,
            "prediction": pred,
            "answer": answer_of("vqa", pred),
        }
        for i, ref, pred in answers
    ]
    evaluate_rows("vqa", rows, ScoringOptions(resamples=50))
    return rows
