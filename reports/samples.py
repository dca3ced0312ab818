"""The sample browser's data: one compact record per prediction row, and the protocol disagreement summary.

A record (``compact``) keeps what a person checks when reading a model's answer: the question, the gold answer,
the raw output and the extracted answer, each protocol's verdict (VQA) or the per-sample caption metrics, the judge's
verdict and reasoning, the subgroup fields and the thumbnail. Keys are one letter because a PathVQA page holds 6,719
of them. Everything is data: the page renders it with ``textContent``, never as HTML.

**Protocol disagreement**: a VQA sample on which the protocols' scores are not all the same (strict says wrong,
llava-med gives it full or partial credit, ...). Scoring explains most of the 4–15 point gaps between
harnesses, so the report counts such samples per protocol pair and lists them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medbench.reports.thumbs import Thumb

#: Longest judge reply kept on a page (the full reply stays in the prediction file).
_MAX_JUDGE_TEXT = 2000
#: Per-sample caption metrics shown in the browser, in this order.
CAPTION_SAMPLE_METRICS = ("judge_score", "token_recall", "rouge1", "bertscore_f1", "bleu4_sentence")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def verdicts(row: Mapping[str, Any], protocols: Sequence[str]) -> dict[str, float | None]:
    """``{protocol: score}``: the row's score under each VQA protocol — 1 right, 0 wrong, a fraction for partial
    credit (llava-med and multimedeval score open answers by token recall), None when not scored (a judge failed)."""
    scores = row.get("scores") or {}
    out: dict[str, float | None] = {}
    for p in protocols:
        value = scores.get(p)
        out[p] = None if value is None else round(float(value), 4)
    return out


def _judge(row: Mapping[str, Any]) -> dict[str, Any] | None:
    record = row.get("judge")
    if not isinstance(record, Mapping):
        return None
    reply = record.get("reason") or record.get("raw") or ""
    verdict = record.get("score") if record.get("kind") == "caption_score" else record.get("equivalent")
    return {
        "x": verdict,
        "r": _text(reply)[:_MAX_JUDGE_TEXT],
        "f": _text(record.get("failure")) or None,
        "m": _text(record.get("server_model") or record.get("judge_model")) or None,
    }


def compact(
    row: Mapping[str, Any],
    kind: str,
    protocols: Sequence[str],
    subgroup_fields: Sequence[str],
    thumbs: Mapping[str, Thumb],
) -> dict[str, Any]:
    """The browser record of one prediction row."""
    metadata = row.get("metadata") or {}
    image = row.get("image") or {}
    thumb = thumbs.get(str(image.get("sha256", "")))
    out: dict[str, Any] = {
        "id": _text(row.get("id")),
        "q": _text(row.get("question")),
        "g": _text(row.get("reference")),
        "o": _text(row.get("prediction")),
        "a": _text(row.get("answer")),
        "t": row.get("answer_type"),
        "s": {f: _text(metadata.get(f)) for f in subgroup_fields if metadata.get(f) not in (None, "")},
        "i": thumb.src if thumb else None,
        "w": (thumb.why if thumb else "no image recorded for this row") if not (thumb and thumb.src) else None,
    }
    if kind == "vqa":
        v = verdicts(row, protocols)
        out["v"] = v
        known = {x for x in v.values() if x is not None}
        out["d"] = int(len(known) > 1)
    else:
        scores = row.get("scores") or {}
        out["v"] = {m: scores.get(m) for m in CAPTION_SAMPLE_METRICS if m in scores}
    judge = _judge(row)
    if judge is not None:
        out["j"] = judge
    return out


@dataclass
class Disagreement:
    """How the VQA protocols disagree on one model's rows of one task."""

    n: int
    disagree: int
    # pairs[p][q]: samples protocol p scores higher than protocol q (right vs wrong, or more partial credit)
    pairs: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)


def disagreement(records: Sequence[Mapping[str, Any]], protocols: Sequence[str], examples: int = 8) -> Disagreement:
    """Count, per ordered protocol pair, the samples one scores higher than the other; keep the first few."""
    pairs = {p: {q: 0 for q in protocols if q != p} for p in protocols}
    found: list[dict[str, Any]] = []
    total = 0
    for record in records:
        v = record.get("v") or {}
        if not record.get("d"):
            continue
        total += 1
        for p in protocols:
            for q in protocols:
                x, y = v.get(p), v.get(q)
                if p != q and x is not None and y is not None and x > y:
                    pairs[p][q] += 1
        if len(found) < examples:
            found.append(dict(record))
    return Disagreement(len(records), total, pairs, found)


def joined(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int, int]:
    """Side-by-side records of two models on the samples both answered (A's order): the shared fields once, each
    model's output, answer, verdicts and judge under ``A`` / ``B``; plus the counts of ids only A / only B has."""
    by_id = {r["id"]: r for r in b}
    out = []
    for ra in a:
        rb = by_id.get(ra["id"])
        if rb is None:
            continue
        shared = {k: ra[k] for k in ("id", "q", "g", "t", "s", "i", "w") if k in ra}
        shared["A"] = {k: ra[k] for k in ("o", "a", "v", "j", "d") if k in ra}
        shared["B"] = {k: rb[k] for k in ("o", "a", "v", "j", "d") if k in rb}
        out.append(shared)
    ids_a = {r["id"] for r in a}
    return out, len(ids_a) - len(out), len(by_id.keys() - ids_a)
