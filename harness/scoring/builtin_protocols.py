"""The built-in protocols, registered in the order they are reported."""

from __future__ import annotations

from typing import Any

from medbench.scoring.clinical import clinical_score
from medbench.scoring.legacy import llava_med_sample, multimedeval_is_closed, multimedeval_sample
from medbench.scoring.protocols import Protocol, register_protocol
from medbench.scoring.vqa import strict_score


def _strict(prediction: Any, reference: str, answer_type: str | None) -> dict[str, float]:
    return {"score": strict_score(prediction, reference)}


def _clinical(prediction: Any, reference: str, answer_type: str | None) -> dict[str, float]:
    return {"score": clinical_score(prediction, reference)}


register_protocol(
    Protocol(
        "strict",
        "headline: extracted answer, VQA-v2 normalisation, first whole-word yes/no for yes/no golds, else exact match",
        _strict,
    )
)
register_protocol(
    Protocol(
        "clinical",
        "strict plus a curated clinical synonym/abbreviation table (cardiomegaly = enlarged heart, CXR = chest x-ray)",
        _clinical,
    )
)
register_protocol(
    Protocol(
        "llava-med",
        "LLaVA-Med v1.0 run_eval_batch.py: closed = gold substring of prediction; open = its token recall",
        llava_med_sample,
        extra_metrics={"open_substring_accuracy": ("open_hit", "open")},
    )
)
register_protocol(
    Protocol(
        "multimedeval",
        "MultiMedEval VQA: closed (gold yes/no) = set recall >= 0.4 with no/not; open = set recall; + recall >= 0.75",
        multimedeval_sample,
        closed_rule=multimedeval_is_closed,
        extra_metrics={"open_recall_075": ("open_recall_075", "open")},
    )
)
