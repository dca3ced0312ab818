"""BERTScore through bert-score with the offline MiniLM (needs the hf extra, installed by `make test`)."""

import pytest

from medbench.scoring.bertscore import BertScoreChoice, bertscore_f1, choose_model, variant

pytest.importorskip("torch")
pytest.importorskip("bert_score")


def test_default_choice_is_recorded_and_offline() -> None:
    choice = choose_model()
    assert choice.model is not None and choice.num_layers in (6, 17)
    record = variant(choice)
    assert record["rescale_with_baseline"] is False and record["idf"] is False and "bert-score" in record["library"]


def test_scores_are_sensible() -> None:
    choice = choose_model()
    identical, related, unrelated = bertscore_f1(
        ["chest x-ray shows a left pleural effusion"] * 3,
        [
            "chest x-ray shows a left pleural effusion",
            "chest radiograph with left pleural fluid",
            "the weather is nice",
        ],
        choice,
    )
    assert identical == pytest.approx(1.0, abs=1e-4)
    assert identical > related > unrelated


def test_unavailable_choice_raises_with_reason() -> None:
    with pytest.raises(RuntimeError, match="no model here"):
        bertscore_f1(["a"], ["b"], BertScoreChoice(None, None, "no model here"))
    assert choose_model("some/unknown-model").model is None  # layer unknown -> refuse rather than guess
