"""A fake LLM judge for tests: the fake OpenAI server (tests/models/fake_openai_server.py) answering judge prompts.

Replies are chosen per prompt: the first :meth:`FakeJudgeServer.answer` needle found in the prompt, else the
``responder`` callable (when set), else :data:`GOOD`. Error/hang/malformed scripting, call counting, the
``Authorization`` headers seen and the concurrency high-water mark come from :class:`FakeOpenAIServer`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from fake_openai_server import FakeOpenAIServer, Reply, _Handler

__all__ = ["GOOD", "FakeJudgeServer", "FakeOpenAIServer", "Reply", "field_of"]

GOOD = "Reasoning: both describe a right femur fracture.\nScore: 4"


def field_of(prompt: str, label: str) -> str:
    """The text after ``label`` on its line in a rendered prompt (e.g. ``"Model answer:"``)."""
    for line in prompt.splitlines():
        if line.startswith(label):
            return line[len(label) :].strip()
    raise AssertionError(f"no {label!r} line in the prompt")


class _JudgeHandler(_Handler):
    fake: FakeJudgeServer

    def _ok(self, payload: dict[str, Any], prompt: str) -> None:
        body = {
            "id": "chatcmpl-judge",
            "object": "chat.completion",
            "model": self.fake.served_model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.fake.answer_for(prompt)}}],
        }
        self._send(200, json.dumps(body).encode())


class FakeJudgeServer(FakeOpenAIServer):
    """:class:`FakeOpenAIServer` whose well-formed replies carry judge texts (see the module docstring)."""

    def __init__(self, responder: Callable[[str], str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answers: list[tuple[str, str]] = []
        self.default_answer = GOOD
        self.responder = responder

    def answer(self, needle: str, content: str) -> None:
        with self._lock:
            self.answers.append((needle, content))

    def answer_for(self, prompt: str) -> str:
        with self._lock:
            for needle, content in self.answers:
                if needle in prompt:
                    return content
        return self.responder(prompt) if self.responder is not None else self.default_answer

    def handler_base(self) -> type[BaseHTTPRequestHandler]:
        return _JudgeHandler
