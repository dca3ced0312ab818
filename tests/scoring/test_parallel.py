import random

import pytest

from medbench.scoring.aggregate import ScoringOptions, aggregate_captions, score_batch, score_batch_with_stats
from medbench.scoring.parallel import MIN_PARALLEL_ITEMS


def _captions(n: int) -> tuple[list[str], list[str]]:
    rng = random.Random(9)
    words = [
        "left",
        "right",
        "lung",
        "liver",
        "ct",
        "mri",
        "x-ray",
        "axial",
        "mass",
        "effusion",
        "normal",
        "chest,",
        "bone.",
    ]
    preds = [" ".join(rng.choices(words, k=rng.randint(0, 20))) for _ in range(n)]
    refs = [" ".join(rng.choices(words, k=rng.randint(1, 20))) for _ in range(n)]
    return preds, refs


def test_parallel_scoring_equals_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    preds, refs = _captions(MIN_PARALLEL_ITEMS + 501)
    options = ScoringOptions(resamples=200)
    results = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("MEDBENCH_SCORING_WORKERS", workers)
        scores = score_batch("caption", preds, refs, [None] * len(preds), options)
        rows = [{"prediction": p, "reference": r, "scores": s} for p, r, s in zip(preds, refs, scores, strict=True)]
        results[workers] = (scores, aggregate_captions(rows, options))
    assert results["1"] == results["2"]


def test_bleu_statistics_from_scoring_equal_recomputed_ones() -> None:
    # BLEU statistics are returned by scoring (no module-global memo); aggregating with or without them agrees.
    preds, refs = _captions(300)
    options = ScoringOptions(resamples=200)
    scores, stats = score_batch_with_stats("caption", preds, refs, [None] * len(preds), options)
    rows = [{"prediction": p, "reference": r, "scores": s} for p, r, s in zip(preds, refs, scores, strict=True)]
    assert aggregate_captions(rows, options, stats) == aggregate_captions(rows, options)
