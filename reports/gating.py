"""The gate run: load both sides, pair models, check comparability, compare every shared metric on the same sample
ids, Holm-correct and decide (:mod:`medbench.reports.gate` holds the records and the rules)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medbench.errors import UsageError
from medbench.evaluation import metric_vectors
from medbench.reports.gate import Comparison, GateReport, finish
from medbench.reports.gate_inputs import SideResult, check_comparable, load_side, pair_models
from medbench.scoring.aggregate import CAPTION_PROTOCOL, answer_of
from medbench.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, paired_test

VQA_DEFAULT = ("closed_accuracy", "open_accuracy", "overall_accuracy")
CAPTION_DEFAULT = ("judge_score", "bleu", "bertscore_f1")
#: Per-sample caption metrics --metric may name (bleu is the corpus metric, compared by a paired corpus bootstrap).
CAPTION_METRICS = ("judge_score", "bleu", "bertscore_f1", "token_recall", "rouge1", "bleu4_sentence")
#: Flipped samples kept per comparison for the Markdown summary.
_EXAMPLES = 10


def run_gate(
    baseline_path: Path,
    candidate_path: Path,
    *,
    pairs: Sequence[str] = (),
    metrics: Sequence[str] = (),
    protocol: str | None = None,
    max_drop: float = 0.01,
    alpha: float = 0.05,
    allow_changes: Sequence[str] = (),
    fail_on_inconclusive: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> GateReport:
    """Compare ``candidate_path`` with ``baseline_path``; raises UsageError / DataError (exit 2) on unusable input."""
    baseline, candidate = load_side(baseline_path, "baseline"), load_side(candidate_path, "candidate")
    chosen = protocol or baseline.headline
    matched = pair_models(baseline, candidate, pairs)
    changed, tasks = check_comparable(matched, baseline, candidate, allow_changes)
    _check_metrics(metrics, [baseline.results[(a, t)].kind for a, _, t in tasks])
    comparisons: list[Comparison] = []
    notes = [*baseline.notes, *candidate.notes]
    for a, b, task in tasks:
        base, cand = baseline.results[(a, task)], candidate.results[(b, task)]
        names = metrics or (VQA_DEFAULT if base.kind == "vqa" else CAPTION_DEFAULT)
        for metric in names:
            found = _compare(base, cand, chosen, metric, resamples=resamples, seed=seed)
            if found is not None:
                comparisons.append(found)
        ids_a, ids_b = {str(r["id"]) for r in base.rows}, {str(r["id"]) for r in cand.rows}
        if ids_a != ids_b:
            notes.append(
                f"{task}: {len(ids_a - ids_b)} sample ids only in the baseline and {len(ids_b - ids_a)} only in the "
                "candidate are left out"
            )
    if not comparisons:
        raise UsageError("no comparison could be made: the two sides share no scored samples for these metrics")
    finish(comparisons, alpha=alpha, max_drop=max_drop)
    return GateReport(
        baseline=str(baseline_path),
        candidate=str(candidate_path),
        protocol=chosen,
        alpha=alpha,
        max_drop=max_drop,
        comparisons=comparisons,
        pairs=list(matched),
        allowed_changes=changed,
        notes=notes,
        fail_on_inconclusive=fail_on_inconclusive,
    )


def _check_metrics(metrics: Sequence[str], kinds: Sequence[str]) -> None:
    known = set(VQA_DEFAULT) if "vqa" in kinds else set()
    if "caption" in kinds:
        known |= set(CAPTION_METRICS)
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise UsageError(f"unknown --metric {', '.join(unknown)}; these tasks have: {', '.join(sorted(known))}")


def _vectors(result: SideResult, protocol: str, metric: str) -> dict[str, float] | None:
    """``{id: value}`` of the samples ``metric`` counts (None when the rows have no such metric)."""
    try:
        ids, values = metric_vectors(result.rows, protocol, metric)
    except UsageError:
        return None
    return dict(zip(ids, (float(v) for v in values), strict=True))


def _compare(
    base: SideResult, cand: SideResult, protocol: str, metric: str, *, resamples: int, seed: int
) -> Comparison | None:
    """One comparison on the ids both sides scored, or None when either side lacks the metric."""
    if base.kind == "caption" and metric == "bleu":
        return _compare_bleu(base, cand, resamples=resamples, seed=seed)
    used = protocol if base.kind == "vqa" else CAPTION_PROTOCOL
    va, vb = _vectors(base, used, metric), _vectors(cand, used, metric)
    if not va or not vb:
        return None
    rows_a, rows_b = {str(r["id"]) for r in base.rows}, {str(r["id"]) for r in cand.rows}
    shared = [i for i in va if i in vb]
    if not shared:
        return None
    a = np.array([va[i] for i in shared])
    b = np.array([vb[i] for i in shared])
    test = paired_test(a, b, resamples=resamples, seed=seed)
    ci = test["ci95"]
    assert isinstance(ci, list)
    worse = [i for i, x, y in zip(shared, a, b, strict=True) if y < x]
    better = [i for i, x, y in zip(shared, a, b, strict=True) if y > x]
    return Comparison(
        task=base.task,
        baseline_model=base.model,
        candidate_model=cand.model,
        protocol=used,
        metric=metric,
        test=str(test["test"]),
        n=len(shared),
        baseline_value=float(a.mean()),
        candidate_value=float(b.mean()),
        delta=float(b.mean() - a.mean()),
        ci95=(float(ci[0]), float(ci[1])),
        p_value=float(test["p_value"]),
        only_baseline=len(va.keys() - rows_b),
        only_candidate=len(vb.keys() - rows_a),
        excluded=len((va.keys() & rows_b) - vb.keys()) + len((vb.keys() & rows_a) - va.keys()),
        worse=worse,
        better=better,
        examples=_examples(base, cand, worse + better),
    )


def _compare_bleu(base: SideResult, cand: SideResult, *, resamples: int, seed: int) -> Comparison | None:
    """Corpus BLEU on the shared captions, compared by a paired corpus-level bootstrap."""
    from medbench.scoring.caption import bleu_from_statistics_batch, bleu_statistics
    from medbench.stats import paired_corpus_bootstrap

    by_id = {str(r["id"]): r for r in cand.rows}
    shared = [r for r in base.rows if str(r["id"]) in by_id]
    if not shared:
        return None
    refs = [str(r["reference"]) for r in shared]
    stats_a = bleu_statistics([str(r["prediction"]) for r in shared], refs)
    stats_b = bleu_statistics([str(by_id[str(r["id"])]["prediction"]) for r in shared], refs)
    test = paired_corpus_bootstrap(stats_a, stats_b, bleu_from_statistics_batch, resamples=resamples, seed=seed)
    ci = test["ci95"]
    assert isinstance(ci, list)
    ids_b = set(by_id)
    return Comparison(
        task=base.task,
        baseline_model=base.model,
        candidate_model=cand.model,
        protocol=CAPTION_PROTOCOL,
        metric="bleu",
        test=str(test["test"]),
        n=len(shared),
        baseline_value=float(test["a_value"]),  # each side's corpus BLEU, computed by the bootstrap already
        candidate_value=float(test["b_value"]),
        delta=float(test["delta"]),
        ci95=(float(ci[0]), float(ci[1])),
        p_value=float(test["p_value"]),
        only_baseline=len({str(r["id"]) for r in base.rows} - ids_b),
        only_candidate=len(ids_b - {str(r["id"]) for r in base.rows}),
    )


def _examples(base: SideResult, cand: SideResult, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The first flipped samples as a reviewer reads them: question, gold, both answers."""
    rows_a: Mapping[str, Mapping[str, Any]] = {str(r["id"]): r for r in base.rows}
    rows_b: Mapping[str, Mapping[str, Any]] = {str(r["id"]): r for r in cand.rows}
    out = []
    for i in ids[:_EXAMPLES]:
        ra, rb = rows_a[i], rows_b[i]
        out.append(
            {
                "id": i,
                "question": ra.get("question"),
                "reference": ra.get("reference"),
                "baseline": answer_of(base.kind, ra.get("prediction")),
                "candidate": answer_of(cand.kind, rb.get("prediction")),
            }
        )
    return out
