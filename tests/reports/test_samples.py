"""The sample browser's records and the protocol disagreement summary."""

from __future__ import annotations

from reportkit import PROTOCOLS, vqa_rows

from medbench.reports.samples import compact, disagreement, joined
from medbench.reports.thumbs import Thumb


def test_compact_keeps_what_a_reader_checks_and_marks_disagreement() -> None:
    rows = vqa_rows([("1", "transverse plane", "The answer is: transverse"), ("2", "yes", "yes")], "m")
    rows[0]["metadata"] = {"modality": "CT", "location": "Abdomen", "unused": "x"}
    rows[0]["image"] = {"kind": "file", "path": "a.jpg", "sha256": "ab" * 32}
    rows[0]["judge"] = {"kind": "equivalence", "equivalent": True, "reason": "same plane", "failure": None}
    thumbs = {"ab" * 32: Thumb("thumbs/ab.jpg")}
    first, second = (compact(r, "vqa", PROTOCOLS, ("modality", "location"), thumbs) for r in rows)
    assert first["q"] == "question 1?" and first["g"] == "transverse plane"
    assert first["o"] == "The answer is: transverse" and first["a"] == "transverse"
    assert first["s"] == {"modality": "CT", "location": "Abdomen"}
    assert first["i"] == "thumbs/ab.jpg" and first["w"] is None
    assert first["j"]["r"] == "same plane" and first["j"]["x"] is True
    # strict: wrong; llava-med gives token-recall credit on the open answer: the protocols disagree
    assert first["v"]["strict"] == 0 and first["v"]["llava-med"] > 0 and first["d"] == 1
    assert second["d"] == 0 and second["w"] == "no image recorded for this row"
    summary = disagreement([first, second], PROTOCOLS)
    assert (summary.n, summary.disagree) == (2, 1)
    assert summary.pairs["llava-med"]["strict"] == 1 and summary.pairs["strict"]["llava-med"] == 0
    assert [r["id"] for r in summary.examples] == ["1"]


def test_joined_pairs_records_by_id_and_counts_the_rest() -> None:
    a = [{"id": "1", "q": "q1", "o": "x"}, {"id": "2", "q": "q2", "o": "y"}]
    b = [{"id": "2", "q": "q2", "o": "z"}, {"id": "3", "q": "q3", "o": "w"}]
    shared, only_a, only_b = joined(a, b)
    assert [r["id"] for r in shared] == ["2"] and shared[0]["A"]["o"] == "y" and shared[0]["B"]["o"] == "z"
    assert (only_a, only_b) == (1, 1)
