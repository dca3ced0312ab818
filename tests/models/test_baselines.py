from medbench.models.baselines import PriorBaseline, YesBaseline
from medbench.schema import ImageRef, Request, Sample

IMG = ImageRef("file", "/nonexistent.jpg")  # blind baselines never open images


def sample(q: str | None, a: str, kind: str | None = "open") -> Sample:
    return Sample("x", "t", IMG, q, a, kind, {})  # type: ignore[arg-type]


def request(q: str | None, kind: str = "vqa") -> Request:
    return Request("x", "t", kind, "prompt", q, IMG)  # type: ignore[arg-type]


def test_prior_uses_most_frequent_answer_for_the_question() -> None:
    model = PriorBaseline("prior")
    model.fit(
        "t",
        [
            sample("Which organ?", "Lung"),
            sample("which organ", "lung"),
            sample("Which organ?", "Heart"),
            sample("Is it normal?", "No", "closed"),
            sample("Is there a mass?", "Yes", "closed"),
            sample("Is there fluid?", "Yes", "closed"),
            sample("What plane?", "Axial"),
        ],
    )
    out = model.generate([request("Which organ?"), request("WHICH ORGAN")])
    assert out == ["lung", "lung"]


def test_prior_fallback_predicts_answer_type_from_question_word() -> None:
    model = PriorBaseline("prior")
    model.fit(
        "t",
        [
            sample("Is it normal?", "No", "closed"),
            sample("Is there a mass?", "Yes", "closed"),
            sample("Is there fluid?", "Yes", "closed"),
            sample("What plane?", "Axial"),
            sample("What organ?", "Liver"),
            sample("What modality?", "Axial"),
        ],
    )
    # Unseen "Is ..." question: training questions starting with "is" are closed, whose top answer is "yes".
    # Unseen "What ..." question: "what" questions are open, whose top answer is "axial" (2 of 3).
    # Unseen "Where ..." question: no training question starts with "where", so the overall majority type is
    # used; closed and open tie 3-3, ties break alphabetically -> "closed" -> "yes".
    assert model.generate([request("Is the heart enlarged?"), request("What is abnormal?")]) == ["yes", "axial"]
    assert model.generate([request("Where is the lesion?")]) == ["yes"]


def test_prior_captions_and_ties_are_deterministic() -> None:
    model = PriorBaseline("prior")
    model.fit("c", [sample(None, "B caption", None), sample(None, "A caption", None)])
    assert model.generate([Request("x", "c", "caption", "p", None, IMG)]) == ["A caption"]


def test_yes_baseline() -> None:
    assert YesBaseline("yes").generate([request("anything?"), request("?")]) == ["yes", "yes"]
