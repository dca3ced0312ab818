"""Rendering: the Jinja environment (autoescape on) and the sample browser pages.

A sample browser page holds one model's records on one task (``samples/<model>/<task>.html``), or two models'
records joined on sample id (``samples/<A>~vs~<B>/<task>.html``, the side-by-side view). The records travel as
JSON inside the page and the page's script renders 100 at a time with ``textContent``: opening a PathVQA page
parses one JSON document instead of laying out 6,719 table rows, and no field of a record is ever read as HTML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from medbench.reports.samples import CAPTION_SAMPLE_METRICS

#: Samples per page of the browser.
PAGE_SIZE = 100


@lru_cache(maxsize=1)
def environment() -> Any:
    """The Jinja environment for ``reports/templates`` (autoescape on for every template and string)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(
        loader=PackageLoader("medbench.reports", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def script_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``</``, ``<!--`` or U+2028/2029 can end or confuse it."""
    text = json.dumps(data, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_page(path: Path, template: str, **context: Any) -> None:
    """Render ``template`` into ``path`` (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(environment().get_template(template).render(**context), encoding="utf-8")


def subgroup_options(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """``[(field, sorted values)]`` over the records' subgroup fields, for the subgroup filter."""
    found: dict[str, set[str]] = {}
    for record in records:
        for name, value in (record.get("s") or {}).items():
            found.setdefault(name, set()).add(value)
    return [(name, sorted(values)) for name, values in found.items()]


def write_samples_page(
    site: Path,
    relative: str,
    *,
    records: Sequence[Mapping[str, Any]],
    mode: str,
    kind: str,
    heading: str,
    subtitle: str,
    protocols: Sequence[str],
    headline: str,
    demo: bool,
    a_label: str = "",
    b_label: str = "",
    notes: Sequence[str] = (),
) -> None:
    """Write one sample browser page at ``site/relative`` (``mode`` ``single`` or ``pair``)."""
    sides = [r.get("A", {}) for r in records] if mode == "pair" else records
    # the caption metrics these rows have, in the usual order (judge_score only where a judge ran)
    caption_metrics = [m for m in CAPTION_SAMPLE_METRICS if any(m in (x.get("v") or {}) for x in sides)]
    depth = relative.count("/")
    root = "../" * depth
    config = {"mode": mode, "kind": kind, "root": root, "pageSize": PAGE_SIZE, "protocols": list(protocols)}
    write_page(
        site / relative,
        "samples.html.jinja",
        heading=heading,
        subtitle=subtitle,
        notes=list(notes),
        mode=mode,
        kind=kind,
        protocols=list(protocols),
        headline=headline,
        caption_metrics=list(caption_metrics),
        subgroups=subgroup_options(records),
        a_label=a_label,
        b_label=b_label,
        root=root,
        demo=demo,
        published=False,
        records_json=script_json(list(records)),
        config_json=script_json(config),
    )
