"""Paired comparisons: pair selection, model names with colons, wins / losses / ties and the McNemar p-value on
known per-sample outcomes, ids scored on one side only left out and counted."""

from __future__ import annotations

import numpy as np
import pytest
from reportkit import PROTOCOLS, vqa_rows

from medbench.errors import UsageError
from medbench.reports.paired import compare_metric, compare_rows, default_pairs, parse_pair
from medbench.stats import mcnemar_exact


def test_default_pairs_are_base_vs_adapter_else_every_pair_of_a_few_models() -> None:
    assert default_pairs(["llama32", "qwen25vl", "llama32+lora:/ad/s2", "llama32+lora:/ad/s1"]) == [
        ("llama32", "llama32+lora:/ad/s2"),
        ("llama32", "llama32+lora:/ad/s1"),
    ]
    assert default_pairs(["prior", "yes", "no"]) == [("prior", "yes"), ("prior", "no"), ("yes", "no")]
    assert default_pairs(["a", "b", "c", "d", "e"]) == []  # too many to compare all: name them with --compare
    assert default_pairs(["only"]) == []


def test_parse_pair_splits_where_both_halves_are_models_even_with_colons() -> None:
    models = ["hf:org/base", "hf:org/base+lora:/tmp/ad", "yes"]
    assert parse_pair("hf:org/base:hf:org/base+lora:/tmp/ad", models) == ("hf:org/base", "hf:org/base+lora:/tmp/ad")
    assert parse_pair("yes:hf:org/base", models) == ("yes", "hf:org/base")
    with pytest.raises(UsageError, match="two different models of the runs: hf:org/base"):
        parse_pair("yes:nope", models)
    with pytest.raises(UsageError):
        parse_pair("yes:yes", models)


def test_compare_metric_counts_and_mcnemar_match_the_stats_module() -> None:
    a = np.array([1, 1, 0, 0, 1, 0, 1, 0, 0, 0], dtype=float)
    b = np.array([1, 0, 1, 1, 1, 1, 1, 1, 0, 1], dtype=float)
    result = compare_metric(a, b, resamples=200, seed=0)
    assert (result.wins, result.losses, result.ties) == (5, 1, 4)
    assert result.test == "mcnemar_exact"
    assert result.p_value == pytest.approx(mcnemar_exact(a, b)["p_value"])
    assert result.p_value == pytest.approx(2 * (1 + 6) / 2**6)  # exact binomial tail, 1 vs 5 discordant pairs
    assert result.delta == pytest.approx(0.4)
    assert result.ci95[0] <= 0.4 <= result.ci95[1]
    continuous = compare_metric(np.array([0.2, 0.4, 0.6]), np.array([0.3, 0.4, 0.5]), resamples=200, seed=0)
    assert continuous.test == "paired_bootstrap" and (continuous.wins, continuous.losses, continuous.ties) == (1, 1, 1)


def test_compare_rows_aligns_on_ids_and_lists_the_flips() -> None:
    a = vqa_rows([("1", "yes", "yes"), ("2", "no", "yes"), ("3", "lung", "liver"), ("4", "heart", "heart")], "A")
    # B answers the same questions in another order, and one id A never had
    b = vqa_rows(
        [("4", "heart", "lung"), ("3", "lung", "lung"), ("2", "no", "no"), ("1", "yes", "yes"), ("9", "yes", "yes")],
        "B",
    )
    result = compare_rows("vqa_rad", "vqa", "A", "B", a, b, PROTOCOLS, resamples=100, seed=0)
    overall = result.metrics["strict"]["overall_accuracy"]
    assert overall.n == 4 and (overall.wins, overall.losses, overall.ties) == (2, 1, 1)
    assert overall.a_mean == pytest.approx(0.5) and overall.b_mean == pytest.approx(0.75)
    assert result.metrics["strict"]["closed_accuracy"].n == 2
    assert (result.only_a, result.only_b) == (0, 1)
    assert result.flips["strict"] == {"b_better": ["2", "3"], "b_worse": ["4"]}
    assert set(result.metrics) == set(PROTOCOLS)
