"""The judge inside ``medbench run``: which backend ``--judge`` names, which rows are judged, and what is recorded.

``--judge deepseek`` (or any preset / ``--judge-base-url`` + ``--judge-model``) builds a
:class:`~medbench.judges.client.JudgeClient`; ``--judge hf:<path-or-hub-id>`` builds a
:class:`~medbench.judges.local.LocalJudge` (``--judge-concurrency`` is then its batch size).
``--judge-concurrency`` defaults to :data:`DEFAULT_CONCURRENCY` (32): for an endpoint the most requests in flight,
lowered while the server answers HTTP 429 (AIMD, see :mod:`medbench.judges.client`).

Per (model, task), :func:`judge_rows`:

* captions: every row gets the Appendix D score (``row["judge"]``, kind ``caption_score``);
* VQA: every *open* question with a non-empty extracted answer gets an equivalence verdict (kind
  ``equivalence``) — including the ones ``strict`` already accepts, so the judge's agreement with ``strict`` is
  measured on both sides; closed questions are never judged (yes/no needs no judge);

then folds the verdicts into the scores (:func:`medbench.scoring.judged.apply_judge_records`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medbench.errors import UsageError
from medbench.judges import caption, equivalence
from medbench.judges.cache import JudgeCache
from medbench.judges.client import DEFAULT_CONCURRENCY
from medbench.judges.core import JudgeBackend, Judgement
from medbench.scoring.aggregate import answer_of
from medbench.scoring.judged import CAPTION_KIND, EQUIVALENCE_KIND, apply_judge_records


@dataclass(frozen=True)
class JudgeSpec:
    """What the command line says about the judge. Holds the *name* of the key variable, never the key."""

    name: str
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    max_retries: int = 6
    timeout: float = 600.0

    @property
    def is_local(self) -> bool:
        return self.name.startswith("hf:")


def build_judge(spec: JudgeSpec) -> JudgeBackend:
    """The backend for ``spec`` (loads a local model, or checks the endpoint settings and key variable)."""
    if spec.concurrency < 1:
        raise UsageError(f"--judge-concurrency must be at least 1 (got {spec.concurrency})")
    if spec.is_local:
        if spec.base_url or spec.model or spec.api_key_env:
            raise UsageError(
                f"--judge {spec.name}: a local judge takes no --judge-base-url, --judge-model or --judge-api-key-env "
                "(the model is the path after hf:)"
            )
        if len(spec.name) <= 3:
            raise UsageError("--judge hf:<path-or-hub-id>: the model is missing after hf:")
        from medbench.judges.local import LocalJudge

        return LocalJudge(spec.name[3:], batch_size=spec.concurrency)
    from medbench.judges.client import JudgeClient, JudgeConfig

    config = JudgeConfig(
        spec.name,
        base_url=spec.base_url,
        model=spec.model,
        api_key_env=spec.api_key_env,
        concurrency=spec.concurrency,
        max_retries=spec.max_retries,
        timeout=spec.timeout,
    )
    return JudgeClient(config)


def describe(backend: JudgeBackend) -> dict[str, Any]:
    """The run record's ``judge`` block: the backend and the hash of every judge prompt template."""
    return backend.describe() | {
        "templates": {
            "caption": {"file": caption.TEMPLATE_NAME, "sha256": caption.template_sha256()},
            "equivalence": {"file": equivalence.TEMPLATE_NAME, "sha256": equivalence.template_sha256()},
        },
        "cache_scope": backend.cache_scope,
    }


def _record(judgement: Judgement, backend: JudgeBackend, prompt: str) -> dict[str, Any]:
    # The prompt's hash ties the verdict to exactly what was judged: `medbench score` reuses a recorded verdict
    # only while the row (and the template) still render the same prompt.
    return judgement.record(backend.model) | {"prompt_sha256": _sha256(prompt)}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _caption_prompt(row: Mapping[str, Any]) -> str:
    return caption.render_prompt(str(row["reference"]), str(row["prediction"]))


def _equivalence_prompt(row: Mapping[str, Any]) -> str:
    # The answer is extracted from the prediction again, so a stored "answer" field cannot mask an edit.
    return equivalence.render_prompt(str(row["question"]), str(row["reference"]), answer_of("vqa", row["prediction"]))


def reuse_recorded(rows: Sequence[dict[str, Any]]) -> int:
    """Fold the judge records already in prediction rows (from a judged run) into their scores, for re-scoring
    without a judge. A record whose prompt no longer matches its row (an edited prediction, another template) is
    removed, not used; returns how many were removed."""
    stale = 0
    for row in rows:
        record = row.get("judge")
        if not isinstance(record, Mapping):
            continue
        render = {CAPTION_KIND: _caption_prompt, EQUIVALENCE_KIND: _equivalence_prompt}.get(str(record.get("kind")))
        try:
            current = _sha256(render(row)) if render is not None else None
        except KeyError:
            current = None
        if current is None or current != record.get("prompt_sha256"):
            del row["judge"]
            stale += 1
    apply_judge_records(list(rows))
    return stale


def targets(kind: str, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a judge is asked about: every caption; VQA open questions with a non-empty extracted answer."""
    if kind == "caption":
        return list(rows)
    return [r for r in rows if r.get("answer_type") != "closed" and str(r.get("answer") or "").strip()]


def judge_rows(
    kind: str,
    rows: Sequence[dict[str, Any]],
    backend: JudgeBackend,
    cache: JudgeCache | None,
    advance: Callable[[int], Any] | None = None,
) -> dict[str, int]:
    """Judge one task's scored prediction rows in place (see the module docstring). Returns counts:
    ``judged`` (rows with a judgement), ``judge_cached`` (answered from the cache), ``judge_requested`` (rows
    whose judgement needed a request), ``judge_failures``."""
    chosen = targets(kind, rows)
    if kind == "caption":
        judgements = caption.judge_captions(
            backend, cache, [(str(r["reference"]), str(r["prediction"])) for r in chosen], advance
        )
        for row, judgement in zip(chosen, judgements, strict=True):
            record = _record(judgement, backend, _caption_prompt(row))
            row["judge"] = {"kind": CAPTION_KIND, "score": judgement.value, **record}
    else:
        items = [(str(r["question"]), str(r["reference"]), str(r["answer"])) for r in chosen]
        judgements = equivalence.judge_equivalence(backend, cache, items, advance)
        for row, judgement in zip(chosen, judgements, strict=True):
            verdict = judgement.value or {}
            row["judge"] = {
                "kind": EQUIVALENCE_KIND,
                "equivalent": verdict.get("equivalent"),
                "reason": verdict.get("reason"),
                **_record(judgement, backend, _equivalence_prompt(row)),
            }
    apply_judge_records(list(rows))
    return {
        "judged": len(chosen),
        "judge_cached": sum(1 for j in judgements if j.cached),
        "judge_requested": sum(1 for j in judgements if not j.cached),
        "judge_failures": sum(1 for j in judgements if j.failure_reason),
    }
