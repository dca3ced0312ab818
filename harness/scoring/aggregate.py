"""From per-sample scores to task metrics with 95% bootstrap CIs.

VQA metrics (per protocol): ``closed_accuracy`` and ``open_accuracy`` are means over the closed/open samples,
``overall_accuracy`` the mean over all samples. Caption metrics live under the protocol key ``caption``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from medbench.schema import TaskKind
from medbench.scoring.caption import bleu_from_statistics, bleu_statistics, token_recall
from medbench.scoring.vqa import coerce_text, extract_answer, strict_score
from medbench.stats import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    bootstrap_corpus_ci,
    bootstrap_mean_ci,
    metric_entry,
)

VQA_PROTOCOLS: tuple[str, ...] = ("strict",)
CAPTION_PROTOCOL = "caption"


def score_sample(kind: TaskKind, prediction: Any, reference: str) -> dict[str, float]:
    """Per-sample scores stored in each prediction row: ``{protocol or metric: value}``."""
    if kind == "caption":
        return {"token_recall": token_recall(coerce_text(prediction), reference)}
    return {"strict": strict_score(prediction, reference)}


def answer_of(kind: TaskKind, prediction: Any) -> str:
    """The extracted answer stored next to the raw prediction."""
    return coerce_text(prediction).strip() if kind == "caption" else extract_answer(prediction)


def _mean_metric(values: np.ndarray, resamples: int, seed: int) -> dict[str, object]:
    if values.size == 0:
        return metric_entry(None, None, 0)
    return metric_entry(float(values.mean()), bootstrap_mean_ci(values, resamples=resamples, seed=seed), values.size)


def aggregate_vqa(
    rows: Sequence[Mapping[str, Any]], *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> dict[str, dict[str, dict[str, object]]]:
    """``{protocol: {closed_accuracy, open_accuracy, overall_accuracy}}`` from scored prediction rows."""
    closed = np.array([r.get("answer_type") == "closed" for r in rows], dtype=bool)
    out: dict[str, dict[str, dict[str, object]]] = {}
    for protocol in VQA_PROTOCOLS:
        scores = np.array([float(r["scores"][protocol]) for r in rows], dtype=np.float64)
        out[protocol] = {
            "closed_accuracy": _mean_metric(scores[closed], resamples, seed),
            "open_accuracy": _mean_metric(scores[~closed], resamples, seed),
            "overall_accuracy": _mean_metric(scores, resamples, seed),
        }
    return out


def aggregate_captions(
    rows: Sequence[Mapping[str, Any]], *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> dict[str, dict[str, dict[str, object]]]:
    """``{"caption": {bleu, token_recall}}``; BLEU's CI resamples whole captions at corpus level."""
    preds = [coerce_text(r.get("prediction")) for r in rows]
    refs = [str(r["reference"]) for r in rows]
    recall = np.array([float(r["scores"]["token_recall"]) for r in rows], dtype=np.float64)
    if rows:
        stats = bleu_statistics(preds, refs)
        bleu = metric_entry(
            bleu_from_statistics(stats.sum(axis=0)),
            bootstrap_corpus_ci(stats, bleu_from_statistics, resamples=resamples, seed=seed),
            len(rows),
        )
    else:
        bleu = metric_entry(None, None, 0)
    return {CAPTION_PROTOCOL: {"bleu": bleu, "token_recall": _mean_metric(recall, resamples, seed)}}


def aggregate(
    kind: TaskKind,
    rows: Sequence[Mapping[str, Any]],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, dict[str, dict[str, object]]]:
    """Metrics for one task's scored rows."""
    if kind == "caption":
        return aggregate_captions(rows, resamples=resamples, seed=seed)
    return aggregate_vqa(rows, resamples=resamples, seed=seed)


def headline_protocol(kind: TaskKind, protocol: str) -> str:
    """The protocol key holding a task's headline numbers."""
    return CAPTION_PROTOCOL if kind == "caption" else protocol
