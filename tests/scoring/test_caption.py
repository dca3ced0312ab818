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
