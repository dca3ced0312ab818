"""A scripted test model: fixed answers per demo question and a fixed caption per image, so a judged run's
outcomes are known in advance. Registered in-process as ``scripted`` by the tests that use it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medbench.models.base import Model
from medbench.schema import Request

#: SLAKE demo (English) open questions -> answers chosen to hit every judge case (see test_judged_runs.py).
ANSWERS = {
    "Where are the lesions located?": "in both lung fields",  # strict 0, table 0: the judge decides (equivalent)
    "What modality is used to take this image?": "radiograph",  # X-Ray: table accepts; MRI gold: wrong
    "What is the scanning plane of this image?": "transverse plane",  # strict 1 (the fake judge rejects it)
    "Which part of the body does this image belong to?": "",  # empty: never judged
    "Is this a CT or an MRI?": "scanner",  # strict 0, table 0: the fake judge fails (HTTP 500)
}


class ScriptedModel(Model):
    """``The answer is: <ANSWERS[question]>`` (default "yes"); captions: ``Scripted caption of <sample id>``."""

    batch_size = 8

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        self.calls = 0

    def generate(self, requests: Sequence[Request]) -> list[str]:
        self.calls += len(requests)
        out = []
        for r in requests:
            if r.kind == "caption":
                out.append(f"Scripted caption of {r.sample_id}.")
            else:
                answer = ANSWERS.get(str(r.question), "yes")
                out.append(f"The answer is: {answer}" if answer else "")
        return out

    def describe(self) -> dict[str, Any]:
        return {"class": "ScriptedModel", "version": 1}
