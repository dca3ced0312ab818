"""Two legacy protocols, reproducing the peers' own scoring exactly so numbers compare with the papers using them.

``llava-med`` — LLaVA-Med v1.0, ``llava/eval/run_eval_batch.py`` (microsoft/LLaVA-Med @ b9a98a7):
  both strings are lowercased and normalised (``legacy_normalize``); the whole output is scored (no answer
  extraction). Closed: 1 if the normalised gold is a *character substring* of the normalised prediction ("no"
  is found in "normal", and a gold that normalises to "" always hits). Open: the recall of its
  ``calculate_f1score``, which normalises both sides a second time, counts tokens with multiplicity and credits a
  matched token with its *prediction* count (so "left left left" vs "left lung" has recall 3/4); an empty side
  gives 0. Extra per-sample value ``open_hit``: the substring test on open items (its "open accuracy").

``multimedeval`` — MultiMedEval's ``VQA.evaluate`` (corentin-ryr/MultiMedEval @ d9ac283):
  gold ``clean_str(gold.lower().strip())``, prediction ``clean_str(prediction)``; both become token *sets*.
  recall = |P ∩ G| / |G| (0 when G is empty). Its own closed rule: the cleaned gold is exactly "yes" or "no"
  (the row's answer_type is ignored). Closed items: for gold "no", "not" joins the gold set; correct iff the
  recall against that set is >= 0.4. Open items score their recall; ``open_recall_075`` is recall >= 0.75.
  The reported per-sample ``recall`` is taken before "not" is added, as in the original.

Written from a reading of those files; docs/scoring.md has the full description and tests/scoring trace each
expected value to the original code's behaviour.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from medbench.scoring.normalize import legacy_normalize
from medbench.scoring.vqa import coerce_text


def llava_med_recall(candidate: str, reference: str) -> float:
    """Recall of LLaVA-Med's ``calculate_f1score(candidate, reference)`` (inputs normalised again inside)."""
    cand = Counter(legacy_normalize(candidate).lower().strip().split())
    ref = Counter(legacy_normalize(reference).lower().strip().split())
    if not cand or not ref:
        return 0.0
    true_pos = sum(count for token, count in cand.items() if token in ref)
    false_neg = sum(count for token, count in ref.items() if token not in cand)
    if true_pos == 0:
        return 0.0
    return true_pos / (true_pos + false_neg)


def llava_med_sample(prediction: Any, reference: str, answer_type: str | None) -> dict[str, float]:
    """Per-sample LLaVA-Med v1.0 scores: ``score`` is the closed hit or the open recall."""
    gold = legacy_normalize(coerce_text(reference).lower())
    pred = legacy_normalize(coerce_text(prediction).lower())
    hit = 1.0 if gold in pred else 0.0
    if answer_type == "closed":
        return {"score": hit}
    return {"score": llava_med_recall(pred, gold), "open_hit": hit}


def multimedeval_clean(text: str) -> str:
    """MultiMedEval's ``clean_str``: lowercase, then the legacy VQA-v2 normaliser."""
    return legacy_normalize(text.lower())


def multimedeval_is_closed(reference: str) -> bool:
    """MultiMedEval's own closed rule: the cleaned gold is exactly "yes" or "no"."""
    return multimedeval_clean(coerce_text(reference).lower().strip()) in ("yes", "no")


def multimedeval_sample(prediction: Any, reference: str, answer_type: str | None = None) -> dict[str, float]:
    """Per-sample MultiMedEval scores; ``answer_type`` is ignored (it has its own closed rule)."""
    gold = multimedeval_clean(coerce_text(reference).lower().strip())
    predicted = set(multimedeval_clean(coerce_text(prediction)).split())
    correct = set(gold.split())
    recall = len(predicted & correct) / len(correct) if correct else 0.0
    if gold in ("yes", "no"):
        if correct == {"no"}:
            correct = {"no", "not"}
        closed_recall = len(predicted & correct) / len(correct)
        return {"score": 1.0 if closed_recall >= 0.4 else 0.0, "recall": recall, "open_recall_075": 0.0}
    return {"score": recall, "recall": recall, "open_recall_075": 1.0 if recall >= 0.75 else 0.0}
