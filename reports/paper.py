"""The LLaMA32-Med paper's reported numbers (its Table 1 and Table 2) as typed rows, for the report pages.

The numbers live in ``data/llama32med_paper.json``, transcribed from the paper's text; medbench measured none of
them. Tasks and metrics use medbench's names (``slake``/``pathvqa``/``vqa_rad``/``rocov2``; ``closed_accuracy``,
``open_accuracy``, ``overall_accuracy``; ``judge_score``, ``bleu``, ``token_recall``, ``bertscore_f1``) and
medbench's units: accuracies are fractions in [0, 1] (the paper's percentage / 100, rounded to 4 decimals), like
``results.json``; ``judge_score`` stays on its 1-5 scale. A value the paper does not report ('-') is ``None``.

The file is package data read through :mod:`importlib.resources`, so this works from an installed wheel too.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from medbench.errors import DataError, UsageError

#: The bundled table, relative to this package.
DATA_FILE = "data/llama32med_paper.json"
#: The paper's "Type" column (Table 1); Table 2 has none, so its rows have ``type=None``.
TYPES = ("Non-LLMs", "LLMs")
#: The paper's row groups (Table 1), in the paper's order; Table 2 rows have ``group=None``.
GROUPS = ("Representative SOTA methods", "Zero-shot result", "Our two-stage fine-tuning result")
#: What ``columns[task]["metrics"][metric]["stored_as"]`` may say, and the range a stored value must lie in.
_RANGES = {"fraction": (0.0, 1.0), "1-5": (1.0, 5.0)}


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Table 1 or Table 2, with medbench task and metric names.

    ``method`` is the name as printed without the reference in brackets (``reference``, e.g. ``"Li et al.,
    2023b"``, or ``None`` for the paper's own models); ``values[task][metric]`` is the reported value or ``None``
    (not reported); ``citation`` is the key of :func:`citation`, the work these numbers are reported in.
    """

    method: str
    reference: str | None
    table: str
    type: str | None
    group: str | None
    # read-only views; left out of the hash (a mapping is unhashable) but compared
    values: Mapping[str, Mapping[str, float | None]] = field(hash=False)
    citation: str
    note: str | None = None

    @property
    def label(self) -> str:
        """The row's name as the paper prints it, e.g. ``"M2I2 (Li et al., 2023b)"``."""
        return f"{self.method} ({self.reference})" if self.reference else self.method

    def value(self, task: str, metric: str) -> float | None:
        """The reported value of ``metric`` on ``task``; ``None`` when the paper reports none."""
        return self.values.get(task, {}).get(metric)


def _fail(where: str, message: str) -> DataError:
    return DataError(
        f"{where}: {message}. This is medbench's bundled copy of the paper's tables; reinstall medbench "
        f"or restore the file from the repository."
    )


def _number(raw: object, where: str, stored_as: str) -> float | None:
    """A stored value checked against its unit's range (``None`` = not reported)."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise _fail(where, f"{raw!r} is not a number or null")
    low, high = _RANGES[stored_as]
    if not low <= raw <= high:
        raise _fail(where, f"{raw!r} is outside [{low:g}, {high:g}] for a value stored as {stored_as}")
    return float(raw)


def _parse_row(raw: Any, index: int, columns: Mapping[str, Any], key: str, source: str) -> PaperRow:
    """One ``rows[index]`` entry as a :class:`PaperRow`; every task it has must carry every column metric."""
    where = f"{source}: rows[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("method"), str) or not raw["method"]:
        raise _fail(where, "a row needs a non-empty 'method' string")
    where = f"{where} ({raw['method']})"
    if raw.get("type") not in (*TYPES, None):
        raise _fail(where, f"type {raw.get('type')!r} is not one of {TYPES} or null")
    if raw.get("group") not in (*GROUPS, None):
        raise _fail(where, f"group {raw.get('group')!r} is not one of {GROUPS} or null")
    table = raw.get("table")
    per_task = raw.get("values")
    if not isinstance(per_task, dict) or not per_task:
        raise _fail(where, "'values' must map task -> metric -> value")
    parsed: dict[str, Mapping[str, float | None]] = {}
    for task, values in per_task.items():
        spec = columns.get(task)
        if spec is None:
            raise _fail(where, f"unknown task {task!r} (columns has {sorted(columns)})")
        if spec["table"] != table:
            raise _fail(where, f"task {task!r} belongs to {spec['table']}, but the row is in {table!r}")
        wanted = spec["metrics"]
        if not isinstance(values, dict) or set(values) != set(wanted):
            got = sorted(values) if isinstance(values, dict) else values
            raise _fail(
                where, f"{task} must list exactly the metrics {sorted(wanted)} (null if not reported), got {got}"
            )
        parsed[task] = MappingProxyType(
            {m: _number(values[m], f"{where} {task}.{m}", wanted[m]["stored_as"]) for m in wanted}
        )
    return PaperRow(
        method=raw["method"],
        reference=raw.get("reference"),
        table=str(table),
        type=raw.get("type"),
        group=raw.get("group"),
        values=MappingProxyType(parsed),
        citation=key,
        note=raw.get("note"),
    )


def parse_table(raw: Any, source: str = DATA_FILE) -> tuple[PaperRow, ...]:
    """Check a loaded table (the JSON's shape) and build its rows; ``source`` names the file in error messages."""
    if not isinstance(raw, dict) or not isinstance(raw.get("rows"), list) or not isinstance(raw.get("columns"), dict):
        raise _fail(source, "expected an object with 'citation', 'columns' and a 'rows' list")
    cite = raw.get("citation")
    key = cite.get("key") if isinstance(cite, dict) else None
    if not isinstance(key, str) or not key:
        raise _fail(source, "'citation' needs a 'key'")
    columns = raw["columns"]
    for task, spec in columns.items():
        metrics = spec.get("metrics") if isinstance(spec, dict) else None
        if not isinstance(metrics, dict) or not all(isinstance(s, dict) for s in metrics.values()):
            raise _fail(f"{source}: columns.{task}", "needs 'metrics': {metric: {paper_column, stored_as, ...}}")
        bad = [m for m, s in metrics.items() if s.get("stored_as") not in _RANGES]
        if bad or "table" not in spec:
            raise _fail(f"{source}: columns.{task}", f"needs a 'table' and stored_as in {sorted(_RANGES)} ({bad})")
    rows = tuple(_parse_row(row, i, columns, key, source) for i, row in enumerate(raw["rows"]))
    seen: set[tuple[str, str]] = set()
    for row in rows:
        if (row.table, row.method) in seen:
            raise _fail(source, f"{row.table} lists {row.method!r} twice")
        seen.add((row.table, row.method))
    return rows


@lru_cache(maxsize=1)
def _load() -> tuple[dict[str, Any], tuple[PaperRow, ...]]:
    """The bundled JSON and its checked rows, read once."""
    try:
        text = resources.files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8")
        raw = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise _fail(f"medbench.reports/{DATA_FILE}", f"cannot be read ({exc})") from None
    return raw, parse_table(raw, f"medbench.reports/{DATA_FILE}")


def paper_rows() -> list[PaperRow]:
    """Every row of Table 1 then Table 2, in the paper's order."""
    return list(_load()[1])


def paper_row(method: str, *, table: str = "Table 1") -> PaperRow:
    """The row named ``method`` (as in :attr:`PaperRow.method`) of ``table``; :class:`UsageError` if none."""
    for row in _load()[1]:
        if row.method == method and row.table == table:
            return row
    names = sorted({r.method for r in _load()[1] if r.table == table})
    raise UsageError(f"the paper's {table} has no row {method!r}; its rows are {names}")


def citation() -> dict[str, Any]:
    """Where the numbers come from: ``key``, ``title``, ``authors``, ``affiliations``, ``status``, ``tables`` (a
    short "Table 1 (Section 4.1) and Table 2 (Section 4.3)"), ``table_sections`` (table -> what and where) and
    ``note`` (reported numbers, not measured by medbench). A copy: callers may change it freely."""
    return copy.deepcopy(_load()[0]["citation"])


def paper_columns() -> dict[str, Any]:
    """``task -> {paper_name, table, metrics: {metric -> {paper_column, paper_unit, stored_as, note?}}}``: how
    each paper column maps to a medbench task and metric, with caveats where the paper leaves a metric undefined."""
    return copy.deepcopy(_load()[0]["columns"])
