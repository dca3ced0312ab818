"""Caption metrics (medbench.scoring.caption): token recall and sacrebleu-exact corpus BLEU."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import sacrebleu

from medbench.scoring.caption import (
    MAX_ORDER,
    bleu_from_statistics,
    bleu_statistics,
    bleu_variant,
    caption_tokens,
    corpus_bleu,
    token_recall,
)

# ---------------------------------------------------------------- token recall (hand-computed)


def test_caption_tokens() -> None:
    assert caption_tokens("Chest X-ray, PA view (2019)") == {"chest", "x", "ray", "pa", "view", "2019"}
    assert caption_tokens("") == set()
    assert caption_tokens("...!") == set()


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        # ref {chest, x, ray, showing, effusion} (5); pred {a, chest, x, ray}; shared {chest, x, ray} -> 3/5
        ("a chest x-ray", "Chest X-ray showing effusion", 3 / 5),
        # ref {ct, of, the, abdomen} (4); pred {abdominal, ct}; shared {ct} -> 1/4
        ("abdominal CT", "CT of the abdomen", 1 / 4),
        # distinct tokens: ref {lung} -> 1/1
        ("lung", "lung lung lung", 1.0),
        # recall, not precision: extra prediction tokens do not lower it
        ("liver liver kidney spleen", "liver", 1.0),
        # case-insensitive, hyphen splits: ref {t2, mri}; pred {t2, weighted, mri} -> 2/2
        ("t2-weighted MRI", "T2 MRI", 1.0),
        # nothing shared
        ("kidney", "brain MRI", 0.0),
        # empty prediction
        ("", "brain MRI", 0.0),
        # empty reference (or one without tokens) -> 0.0 by definition
        ("brain", "", 0.0),
        ("brain", "?!", 0.0),
        ("", "", 0.0),
        # ref {axial, ct, scan} (3); pred {ct, scan, axial} -> 3/3
        ("CT scan, axial.", "Axial CT scan", 1.0),
        # ref {mass, in, the, right, kidney} (5); pred {the, left, kidney} -> {the, kidney} 2/5
        ("The left kidney", "Mass in the right kidney", 2 / 5),
    ],
)
def test_token_recall(prediction: str, reference: str, expected: float) -> None:
    assert token_recall(prediction, reference) == pytest.approx(expected)


# ---------------------------------------------------------------- BLEU equals sacrebleu's corpus BLEU

PAIRS: list[tuple[str, str]] = [
    ("Chest X-ray showing a right pleural effusion.", "Chest X-ray showing right-sided pleural effusion."),
    ("", "Axial CT of the abdomen shows a hepatic lesion."),  # empty prediction
    ("CT scan of the brain", "Axial non-contrast CT scan of the brain demonstrating an acute infarct."),
    ("MRI of the knee.", "MRI of the knee."),  # identical
    ("ultrasound", "Transabdominal ultrasound of the gallbladder with gallstones."),
    ("chest x-ray showing pneumothorax", "Chest X-ray showing pneumothorax"),  # differs only in case
    (
        "Contrast-enhanced CT of the chest reveals a mass in the left upper lobe measuring 3.5 cm.",
        "Contrast enhanced CT chest revealing a 3.5 cm mass in the left upper lobe (arrow).",
    ),
    ("PET-CT (arrow) shows uptake; see text.", "PET/CT showing increased FDG uptake (arrow)."),
    ("The the the the the", "The lesion is in the liver."),
    ("Angiography showing stenosis of the right renal artery", "Renal angiography: right renal artery stenosis."),
    ("   ", "Sagittal T2-weighted MRI of the lumbar spine."),  # whitespace-only prediction
    ("Panoramic radiograph.", "Panoramic radiograph showing an impacted third molar (arrow)."),
]
PREDS = [p for p, _ in PAIRS]
REFS = [r for _, r in PAIRS]


def _sacrebleu(preds: list[str], refs: list[str]) -> float:
    return sacrebleu.corpus_bleu(preds, [refs]).score / 100


SUBSETS = {
    "all": list(range(len(PAIRS))),
    "first_three": [0, 1, 2],
    "no_empty": [0, 2, 3, 4, 5, 6, 7, 8, 9, 11],
    **{f"pair{i}": [i] for i in range(len(PAIRS))},
}


@pytest.mark.parametrize("subset", list(SUBSETS))
def test_corpus_bleu_matches_sacrebleu(subset: str) -> None:
    preds = [PREDS[i] for i in SUBSETS[subset]]
    refs = [REFS[i] for i in SUBSETS[subset]]
    expected = _sacrebleu(preds, refs)
    assert corpus_bleu(preds, refs) == pytest.approx(expected, abs=1e-12)
    assert bleu_from_statistics(bleu_statistics(preds, refs).sum(0)) == pytest.approx(expected, abs=1e-12)


def test_corpus_bleu_values_are_varied() -> None:
    """The pairs above really exercise the metric: not all zero, not all one."""
    per_pair = [_sacrebleu([p], [r]) for p, r in PAIRS]
    assert min(per_pair) == 0.0
    assert max(per_pair) == pytest.approx(1.0)
    assert any(0.0 < b < 1.0 for b in per_pair)
    assert 0.0 < _sacrebleu(PREDS, REFS) < 1.0


def test_bleu_statistics_shape_and_content() -> None:
    stats = bleu_statistics(PREDS, REFS)
    assert stats.shape == (len(PAIRS), 2 + 2 * MAX_ORDER)
    assert stats.dtype == np.int64
    # the empty prediction has no hypothesis tokens and no n-grams
    assert stats[1, 0] == 0
    assert (stats[1, 2:] == 0).all()
    # correct n-grams never exceed the totals
    assert (stats[:, 2 : 2 + MAX_ORDER] <= stats[:, 2 + MAX_ORDER :]).all()
    # summed rows are the corpus statistics sacrebleu reports
    corpus = sacrebleu.corpus_bleu(PREDS, [REFS])
    summed = stats.sum(0)
    assert summed[0] == corpus.sys_len
    assert summed[1] == corpus.ref_len
    assert list(summed[2 : 2 + MAX_ORDER]) == list(corpus.counts)
    assert list(summed[2 + MAX_ORDER :]) == list(corpus.totals)


def test_bleu_statistics_empty_input() -> None:
    assert bleu_statistics([], []).shape == (0, 2 + 2 * MAX_ORDER)
    assert corpus_bleu([], []) == 0.0


def test_bleu_statistics_length_mismatch() -> None:
    with pytest.raises(ValueError):
        bleu_statistics(["a", "b"], ["a"])


@pytest.mark.parametrize(
    "texts",
    [
        ["MRI of the knee."],
        ["Chest X-ray showing right-sided pleural effusion.", "Axial CT of the abdomen shows a hepatic lesion."],
        REFS,
    ],
)
def test_identical_pairs_score_one(texts: list[str]) -> None:
    assert corpus_bleu(texts, texts) == pytest.approx(1.0)
    assert bleu_from_statistics(bleu_statistics(texts, texts).sum(0)) == pytest.approx(1.0)


def test_case_sensitive() -> None:
    # sacrebleu's default is case-sensitive: a lowercased copy is not a perfect match
    ref = "Chest X-ray showing pneumothorax"
    assert corpus_bleu([ref.lower()], [ref]) < 1.0


def test_bleu_variant() -> None:
    variant = bleu_variant()
    assert variant["library"] == f"sacrebleu {sacrebleu.__version__}"
    assert variant["scale"] == "0-1 (score / 100)"
    assert variant["level"] == "corpus"
    sig = variant["signature"]
    for part in ("nrefs:1", "case:mixed", "tok:13a", "smooth:exp", f"version:{sacrebleu.__version__}"):
        assert part in sig


def test_bleu_variant_in_a_fresh_process() -> None:
    """sacrebleu only knows its signature after scoring: bleu_variant must work before any BLEU was computed."""
    code = "from medbench.scoring.caption import bleu_variant; print(bleu_variant()['signature'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "nrefs:1" in proc.stdout


def _random_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    import random

    rng = random.Random(seed)
    words = [
        "Left",
        "left",
        "RIGHT",
        "lung,",
        "lung.",
        "effusion",
        "x-ray",
        "ct",
        "of",
        "the",
        "a",
        "3.5",
        "cm",
        "mass",
        "nodule",
        "(no)",
        "é",
    ]
    pairs = []
    for _ in range(n):
        pairs.append(
            (" ".join(rng.choices(words, k=rng.randint(0, 12))), " ".join(rng.choices(words, k=rng.randint(1, 12))))
        )
    return pairs


def test_bleu4_sentence_equals_nltk_method1() -> None:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    from medbench.scoring.caption import bleu4_sentence

    smooth = SmoothingFunction().method1
    for pred, ref in _random_pairs(2000, 1):
        hyp, refs = pred.lower().split(), ref.lower().split()
        expected = sentence_bleu([refs], hyp, smoothing_function=smooth) if hyp else 0.0
        assert bleu4_sentence(pred, ref) == pytest.approx(expected, abs=1e-12), (pred, ref)


def test_rouge1_equals_rouge_score() -> None:
    from rouge_score import rouge_scorer

    from medbench.scoring.caption import rouge1

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    for pred, ref in _random_pairs(2000, 2):
        assert rouge1(pred, ref) == pytest.approx(scorer.score(ref, pred)["rouge1"].fmeasure, abs=1e-12), (pred, ref)


def test_vectorised_bleu_matches_sacrebleu_compute_bleu() -> None:
    from sacrebleu.metrics import BLEU

    from medbench.scoring.caption import bleu_from_statistics_batch

    rng = np.random.default_rng(5)
    rows = []
    for _ in range(3000):
        total = rng.integers(0, 6, size=4) * rng.integers(0, 2)  # some all-zero rows
        total = np.sort(total)[::-1]  # higher orders never have more n-grams than lower ones
        correct = np.minimum(total, rng.integers(0, 6, size=4))
        rows.append([int(total[0]), int(rng.integers(0, 8)), *correct.tolist(), *total.tolist()])
    rows += [[0, 5, 0, 0, 0, 0, 0, 0, 0, 0], [3, 3, 3, 0, 0, 0, 3, 2, 1, 0], [9, 4, 5, 3, 0, 1, 9, 8, 7, 6]]
    stats = np.array(rows)
    got = bleu_from_statistics_batch(stats)
    for row, value in zip(stats, got, strict=True):
        expected = BLEU.compute_bleu(list(row[2:6]), list(row[6:]), int(row[0]), int(row[1]), smooth_method="exp").score
        assert value == pytest.approx(expected / 100, abs=1e-12), row


def test_bleu_statistics_equal_sacrebleus_own() -> None:
    from sacrebleu.metrics import BLEU

    pairs = [*_random_pairs(1500, 3), ("", "a b"), ("a", ""), ("x-ray, 3.5cm &amp; 'q' -\ntail", "x-ray 3.5 cm & q")]
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    expected = np.array(BLEU(effective_order=True)._extract_corpus_statistics(preds, [refs]))
    assert np.array_equal(bleu_statistics(preds, refs), expected)


def test_combined_lexical_scores_equal_the_separate_functions() -> None:
    from medbench.scoring.caption import bleu4_sentence, lexical_caption_scores, rouge1

    for pred, ref in [*_random_pairs(500, 4), ("", "x"), ("x", "")]:
        combined = lexical_caption_scores(pred, ref)
        assert combined["token_recall"] == pytest.approx(token_recall(pred, ref), abs=1e-15)
        assert combined["bleu4_sentence"] == pytest.approx(bleu4_sentence(pred, ref), abs=1e-15)
        assert combined["rouge1"] == pytest.approx(rouge1(pred, ref), abs=1e-15)
