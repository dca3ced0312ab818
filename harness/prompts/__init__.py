"""Prompt templates (Jinja), one place for all of them.

``role`` is the paper's role-based template (Figure 2); ``generic`` drops the radiologist role (Table 3's
"w/o role-based prompt" ablation). Templates carry only the user text: each adapter wraps it in its family's
chat template.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from medbench.errors import UsageError
from medbench.schema import TaskKind

PROMPT_STYLES: tuple[str, ...] = ("role", "generic")


@cache
def template_source(style: str, kind: TaskKind) -> str:
    """The raw Jinja source of one template."""
    if style not in PROMPT_STYLES:
        raise UsageError(f"unknown prompt style {style!r}; known: {', '.join(PROMPT_STYLES)}")
    return resources.files(__package__).joinpath(f"{style}_{kind}.jinja").read_text(encoding="utf-8")


@cache
def _compiled(style: str, kind: TaskKind):  # type: ignore[no-untyped-def]
    from jinja2 import Environment, StrictUndefined

    env = Environment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)
    return env.from_string(template_source(style, kind))


def render_prompt(style: str, kind: TaskKind, question: str | None) -> str:
    """The user-turn text for one sample."""
    return str(_compiled(style, kind).render(question=question or ""))


def prompt_hash(style: str, kind: TaskKind) -> str:
    """sha256 of the template source, recorded with every result."""
    return hashlib.sha256(template_source(style, kind).encode()).hexdigest()
