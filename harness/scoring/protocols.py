"""Named VQA scoring protocols, side by side.

A protocol maps one (prediction, reference, answer_type) to per-sample values: ``score`` (what the protocol's
closed/open/overall accuracies average) plus any extra per-sample values it reports. A protocol may define its
own closed/open rule (MultiMedEval: gold is yes/no), which then overrides the row's ``answer_type``.
Every run computes every protocol; ``--protocol`` only picks the headline. Definitions: docs/scoring.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medbench.errors import UsageError

SampleScorer = Callable[[Any, str, str | None], dict[str, float]]


@dataclass(frozen=True)
class Protocol:
    """One scoring protocol. ``extra_metrics`` maps a metric name to (per-sample key, subset) with subset
    one of ``closed``, ``open``, ``all``."""

    name: str
    description: str
    score: SampleScorer
    closed_rule: Callable[[str], bool] | None = None
    extra_metrics: dict[str, tuple[str, str]] = field(default_factory=dict)

    def is_closed(self, reference: str, answer_type: str | None) -> bool:
        if self.closed_rule is not None:
            return self.closed_rule(reference)
        return answer_type == "closed"


_PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    _PROTOCOLS[protocol.name] = protocol
    return protocol


def protocols() -> dict[str, Protocol]:
    """All registered protocols in registration order (importing the built-in ones)."""
    import medbench.scoring.builtin_protocols  # noqa: F401  (registers the built-ins)

    return dict(_PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    known = protocols()
    if name not in known:
        raise UsageError(f"unknown protocol {name!r}; known protocols: {', '.join(known)}")
    return known[name]
