import json
from importlib import resources

import pytest

from medbench.scoring.clinical import canonical, clinical_score, synonym_table
from medbench.scoring.normalize import normalize_answer

TABLE = json.loads(resources.files("medbench.scoring").joinpath("clinical_synonyms.json").read_text())
OPPOSITES = [
    ("left", "right"),
    ("upper", "lower"),
    ("anterior", "posterior"),
    ("superior", "inferior"),
    ("medial", "lateral"),
]


def test_table_shape_and_size() -> None:
    groups = TABLE["groups"]
    assert len(groups) >= 150
    for group in groups:
        assert len(group["terms"]) >= 2 and group["source"].strip()
    synonym_table()  # raises if a term is in two groups after normalisation


def test_no_group_mixes_opposite_directions() -> None:
    """No group holds a term and its mirror ("left lower lobe" / "right lower lobe", "anterior" / "posterior")."""
    for group in TABLE["groups"]:
        terms = {tuple(normalize_answer(t).split()) for t in group["terms"]}
        for a, b in OPPOSITES:
            for term in terms:
                mirrored = tuple(b if w == a else a if w == b else w for w in term)
                assert mirrored == term or mirrored not in terms, group["terms"]
                assert term not in ((a,), (b,)) or ((b,) if term == (a,) else (a,)) not in terms


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("enlarged heart", "Cardiomegaly", 1.0),
        ("The answer is: CXR.", "chest x-ray", 1.0),
        ("Transverse plane", "axial", 1.0),
        ("oedema", "edema", 1.0),
        ("MRI", "magnetic resonance imaging", 1.0),
        ("left-sided pleural effusion", "left pleural effusion", 1.0),
        ("left", "right", 0.0),
        ("left lower lobe", "right lower lobe", 0.0),
        ("mass", "tumor", 0.0),
        ("effusion", "pleural effusion", 0.0),
        ("pa", "ap", 0.0),
        ("yes", "Yes", 1.0),
        ("no, the heart is enlarged", "no", 1.0),
        ("", "liver", 0.0),
    ],
)
def test_clinical_score(prediction: str, gold: str, expected: float) -> None:
    assert clinical_score(prediction, gold) == expected


def test_short_abbreviations_only_match_whole_answers() -> None:
    # "us" (ultrasound) must not fire inside a phrase; "ultrasound" inside a phrase does.
    assert canonical("show us liver") != canonical("show ultrasound liver")
    assert canonical("us") == canonical("ultrasound")
