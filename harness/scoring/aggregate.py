"""From predictions to per-sample scores to task metrics with 95% bootstrap CIs.

VQA (per protocol): ``closed_accuracy`` and ``open_accuracy`` are means of the per-sample score over the
protocol's closed/open samples, ``overall_accuracy`` the mean over all samples, plus any protocol extras.
Captions (protocol key ``caption``): ``bleu`` (corpus, resampled at corpus level), ``bleu4_sentence``,
``token_recall``, ``rouge1`` and ``bertscore_f1`` (when a BERTScore model is available), and ``judge_score`` (1–5)
with ``judge_failures`` / ``judge_failure_rate`` when an LLM judge ran (see :mod:`medbench.scoring.judged`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medbench.schema import TaskKind
from medbench.scoring.bertscore import BertScoreChoice, bertscore
from medbench.scoring.caption import (
    bleu_from_statistics,
    bleu_from_statistics_batch,
    bleu_statistics,
    lexical_caption_scores,
)
from medbench.scoring.judged import (
    CLINICAL,
    agreement_report,
    caption_judge_metrics,
    caption_judge_score,
    equivalence_records,
    failure_entries,
)
from medbench.scoring.parallel import map_chunks
from medbench.scoring.protocols import Protocol, protocols
from medbench.scoring.vqa import coerce_text, extract_answer
from medbench.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap_corpus_ci, bootstrap_mean_ci, metric_entry

CAPTION_PROTOCOL = "caption"
CAPTION_METRICS = ("bleu", "bleu4_sentence", "token_recall", "rouge1", "bertscore_f1")
Metrics = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class ScoringOptions:
    """Settings that change metric values or their CIs (recorded in run.json)."""

    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    bertscore: BertScoreChoice | None = None
    subgroup_fields: tuple[str, ...] = field(default_factory=tuple)


def answer_of(kind: TaskKind, prediction: Any) -> str:
    """The extracted answer stored next to the raw prediction."""
    return coerce_text(prediction).strip() if kind == "caption" else extract_answer(prediction)


def score_batch(
    kind: TaskKind,
    predictions: Sequence[Any],
    references: Sequence[str],
    answer_types: Sequence[str | None],
    options: ScoringOptions,
) -> list[dict[str, float]]:
    """Per-sample scores for a batch: ``{protocol: score, "protocol/extra": value}`` (VQA) or
    ``{metric: value}`` (captions)."""
    return score_batch_with_stats(kind, predictions, references, answer_types, options)[0]


def score_batch_with_stats(
    kind: TaskKind,
    predictions: Sequence[Any],
    references: Sequence[str],
    answer_types: Sequence[str | None],
    options: ScoringOptions,
) -> tuple[list[dict[str, float]], np.ndarray | None]:
    """:func:`score_batch` plus, for captions, each pair's BLEU statistics (one pass yields both; the corpus BLEU
    of :func:`aggregate_captions` is computed from them). Nothing is remembered between calls."""
    if kind == "caption":
        pairs = list(zip([coerce_text(p) for p in predictions], [str(r) for r in references], strict=True))
        out: list[dict[str, float]] = []
        stats: list[list[int]] = []
        for lexical, pair_stats in map_chunks(_caption_chunk, pairs):
            out.append(lexical)
            stats.append(pair_stats)
        texts = [p for p, _ in pairs]
        if options.bertscore is not None and options.bertscore.model is not None:
            result = bertscore(texts, references, options.bertscore)
            for row, value, empty in zip(out, result.f1, result.empty, strict=True):
                row["bertscore_f1"] = value
                # An empty candidate or reference scores 0 without reaching the model; counted, never hidden.
                row["bertscore_empty"] = float(empty)
        return out, (np.asarray(stats, dtype=np.int64) if pairs else None)
    rows = []
    registered = list(protocols().values())
    for prediction, reference, answer_type in zip(predictions, references, answer_types, strict=True):
        scores: dict[str, float] = {}
        for protocol in registered:
            values = protocol.score(prediction, reference, answer_type)
            scores[protocol.name] = values["score"]
            scores.update({f"{protocol.name}/{k}": v for k, v in values.items() if k != "score"})
        rows.append(scores)
    return rows, None


def score_rows(kind: TaskKind, rows: Sequence[dict[str, Any]], options: ScoringOptions) -> np.ndarray | None:
    """Recompute and set ``row["scores"]`` for prediction rows (``prediction``, ``reference``, ``answer_type``);
    returns the captions' per-row BLEU statistics (None for VQA) for :func:`aggregate`."""
    scores, stats = score_batch_with_stats(
        kind,
        [r["prediction"] for r in rows],
        [r["reference"] for r in rows],
        [r.get("answer_type") for r in rows],
        options,
    )
    for row, score in zip(rows, scores, strict=True):
        row["scores"] = score
    return stats


def _bleu_chunk(pairs: Sequence[tuple[str, str]]) -> list[list[int]]:
    # plain lists: cheap to send back from a worker process
    return bleu_statistics([p for p, _ in pairs], [r for _, r in pairs]).tolist()


def _caption_chunk(pairs: Sequence[tuple[str, str]]) -> list[tuple[dict[str, float], list[int]]]:
    stats = _bleu_chunk(pairs)
    return [(lexical_caption_scores(p, r), s) for (p, r), s in zip(pairs, stats, strict=True)]


def _mean_metric(values: np.ndarray, options: ScoringOptions) -> dict[str, Any]:
    if values.size == 0:
        return metric_entry(None, None, 0)
    ci = bootstrap_mean_ci(values, resamples=options.resamples, seed=options.seed)
    return metric_entry(float(values.mean()), ci, int(values.size))


def protocol_samples(protocol: Protocol, rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{metric: (mask, values)}`` for one VQA protocol: the metric is the mean of ``values[mask]``. The mask
    applies the protocol's own closed rule and leaves out samples without a score (``None``: the judge failed on a
    sample only it could decide). The one place that says which samples each headline metric counts."""
    closed = np.array([protocol.is_closed(str(r["reference"]), r.get("answer_type")) for r in rows], dtype=bool)
    raw = [r["scores"][protocol.name] for r in rows]
    scores = np.array([np.nan if v is None else float(v) for v in raw], dtype=np.float64)
    valid = ~np.isnan(scores)
    out = {
        "closed_accuracy": (closed & valid, scores),
        "open_accuracy": (~closed & valid, scores),
        "overall_accuracy": (valid, scores),
    }
    everything = np.ones_like(closed)
    for metric, (key, subset) in protocol.extra_metrics.items():
        mask = {"closed": closed, "open": ~closed, "all": everything}[subset]
        name = f"{protocol.name}/{key}"
        values = np.array(
            [float(r["scores"][name]) if keep else np.nan for r, keep in zip(rows, mask, strict=True)],
            dtype=np.float64,
        )
        out[metric] = (mask, values)
    return out


def caption_samples(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{metric: (mask, values)}`` for the per-sample caption metrics every row has (``bleu4_sentence``,
    ``token_recall``, ``rouge1``, ``bertscore_f1``) and ``judge_score`` (rows with a valid judge score). Corpus BLEU
    is not a mean of per-sample values and has no entry."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    everything = np.ones(len(rows), dtype=bool)
    for name in CAPTION_METRICS[1:]:
        if rows and all(name in r["scores"] for r in rows):
            out[name] = (everything, np.array([float(r["scores"][name]) for r in rows], dtype=np.float64))
    judged = [caption_judge_score(r) for r in rows]
    if any(v is not None for v in judged):
        values = np.array([np.nan if v is None else v for v in judged], dtype=np.float64)
        out["judge_score"] = (~np.isnan(values), values)
    return out


def _protocol_metrics(protocol: Protocol, rows: Sequence[Mapping[str, Any]], options: ScoringOptions) -> Metrics:
    return {m: _mean_metric(values[mask], options) for m, (mask, values) in protocol_samples(protocol, rows).items()}


def aggregate_vqa(
    rows: Sequence[Mapping[str, Any]], options: ScoringOptions, agreement: Mapping[str, Any] | None = None
) -> dict[str, Metrics]:
    """``{protocol: {closed_accuracy, open_accuracy, overall_accuracy, ...extras}}``; with judged rows,
    ``clinical`` also gets ``judge_failures``, ``judge_failure_rate`` and ``judge_agreement_with_strict`` (from
    ``agreement``, the :func:`~medbench.scoring.judged.agreement_report` of these rows, computed here if not given)."""
    metrics = {name: _protocol_metrics(p, rows, options) for name, p in protocols().items()}
    records = equivalence_records(rows)
    if records and CLINICAL in metrics:
        report = agreement if agreement is not None else agreement_report(rows, options.resamples, options.seed)
        metrics[CLINICAL] |= failure_entries(records)
        metrics[CLINICAL]["judge_agreement_with_strict"] = report["agreement_with_strict"]
    return metrics


def subgroups_vqa(rows: Sequence[Mapping[str, Any]], options: ScoringOptions) -> dict[str, Any]:
    """Per-subgroup metrics: ``{field: {value: {"n", "n_closed", "n_open", protocol: metrics}}}``.

    Rows whose metadata lacks the field (e.g. VQA-RAD mirror rows not joined to the original) are left out of
    that field's breakdown; ``missing`` counts them.
    """
    out: dict[str, Any] = {}
    for field_name in options.subgroup_fields:
        groups: dict[str, list[Mapping[str, Any]]] = {}
        missing = 0
        for row in rows:
            value = (row.get("metadata") or {}).get(field_name)
            if value in (None, ""):
                missing += 1
                continue
            groups.setdefault(str(value), []).append(row)
        if not groups:
            continue
        breakdown: dict[str, Any] = {}
        for value in sorted(groups):
            members = groups[value]
            n_closed = sum(1 for r in members if r.get("answer_type") == "closed")
            breakdown[value] = {
                "n": len(members),
                "n_closed": n_closed,
                "n_open": len(members) - n_closed,
                **aggregate_vqa(members, options),
            }
        out[field_name] = {"missing": missing, "groups": breakdown}
    return out


def aggregate_captions(
    rows: Sequence[Mapping[str, Any]], options: ScoringOptions, bleu_stats: np.ndarray | None = None
) -> dict[str, Metrics]:
    """``{"caption": {bleu, bleu4_sentence, token_recall, rouge1, bertscore_f1?}}``; ``bleu_stats`` are the rows'
    BLEU statistics from :func:`score_rows` (computed here when not given)."""
    metrics: Metrics = {}
    if rows:
        stats = bleu_stats
        if stats is None or len(stats) != len(rows):
            pairs = [(coerce_text(r.get("prediction")), str(r["reference"])) for r in rows]
            stats = np.asarray(map_chunks(_bleu_chunk, pairs), dtype=np.int64)
        ci = bootstrap_corpus_ci(
            stats,
            bleu_from_statistics,
            batch_metric=bleu_from_statistics_batch,
            resamples=options.resamples,
            seed=options.seed,
        )
        metrics["bleu"] = metric_entry(bleu_from_statistics(stats.sum(axis=0)), ci, len(rows))
    else:
        metrics["bleu"] = metric_entry(None, None, 0)
    for name, (mask, values) in caption_samples(rows).items():
        if name != "judge_score":  # its entry (with scale and failures) comes from caption_judge_metrics
            metrics[name] = _mean_metric(values[mask], options)
    if rows and all("bertscore_empty" in r["scores"] for r in rows):
        empty = int(sum(float(r["scores"]["bertscore_empty"]) for r in rows))
        metrics["bertscore_empty"] = metric_entry(empty, None, len(rows))
    metrics.update(caption_judge_metrics(rows, options.resamples, options.seed))
    return {CAPTION_PROTOCOL: metrics}


def aggregate(
    kind: TaskKind,
    rows: Sequence[Mapping[str, Any]],
    options: ScoringOptions,
    *,
    bleu_stats: np.ndarray | None = None,
    agreement: Mapping[str, Any] | None = None,
) -> dict[str, Metrics]:
    """Metrics for one task's scored rows (``bleu_stats``: see :func:`aggregate_captions`; ``agreement``: the
    judge agreement report when already computed, see :func:`aggregate_vqa`)."""
    if kind == "caption":
        return aggregate_captions(rows, options, bleu_stats)
    return aggregate_vqa(rows, options, agreement)


def headline_protocol(kind: TaskKind, protocol: str) -> str:
    """The protocol key holding a task's headline numbers."""
    return CAPTION_PROTOCOL if kind == "caption" else protocol
