"""Inline SVG charts for the static report pages: pure functions, standard library only.

Each chart is one ``<svg>`` string sized by its ``viewBox`` alone (no pixel width/height), so it scales with
the page. The output is a function of the arguments only (no ids, clocks or random numbers): the same input gives
byte-identical SVG, so pages can be diffed. Every piece of text (title, labels, model names, tooltips) passes
through :func:`html.escape` after characters XML 1.0 forbids are replaced, so a model called ``<script>`` or
``"><img onerror=...>`` shows up as text and never as markup.

A value is ``(value, lo, hi)``: the point estimate and its 95% CI (``lo``/``hi`` may be ``None``: no whisker,
e.g. for numbers a paper reports without one). ``None``, a missing key or a non-finite value is drawn as a
labelled gap ("n/a"), never as a zero-height bar.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence

from medbench.errors import UsageError

#: value, CI low, CI high
Interval = tuple[float, float | None, float | None]
#: The Okabe-Ito colour-blind-safe palette (without its black, which would hide the black CI whiskers), cycled.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#999999")

_FONT = 12
_CHAR_W = 0.6 * _FONT  # rough average glyph width: only used to leave room for labels
_MAX_LABEL = 40  # characters shown in axis and legend labels; tooltips keep the full text
_BAR = 18  # width of one bar in a group
_GROUP_PAD = 16
_PLOT_H = 220
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _esc(text: object) -> str:
    """Text safe inside an element or a double-quoted attribute, and well-formed XML."""
    return html.escape(_XML_ILLEGAL.sub("\ufffd", str(text)), quote=True)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"


def _width(text: str, size: float = _FONT) -> float:
    return len(_short(text)) * 0.6 * size


def _trim(number: str) -> str:
    trimmed = number.rstrip("0").rstrip(".") if "." in number else number
    return "0" if trimmed in ("-0", "") else trimmed


def format_value(value: float, percent: bool) -> str:
    """How a value is printed: ``0.846`` -> ``"84.6%"`` with ``percent``, else up to 4 decimals (``"3.8"``)."""
    return _trim(f"{value * 100:.2f}") + "%" if percent else _trim(f"{value:.4f}")


def _ticks(top: float) -> list[float]:
    """0 and up to five evenly spaced round ticks not above ``top``."""
    raw = top / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if top / (m * magnitude) <= 5 + 1e-9)
    return [round(i * step, 10) for i in range(math.floor(top / step + 1e-9) + 1)]


def _interval(raw: Interval | None) -> Interval | None:
    """A drawable interval: None when the value is missing or not finite; a CI only when both ends are finite."""
    if raw is None or raw[0] is None or not math.isfinite(raw[0]):
        return None
    value, lo, hi = raw
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return (float(value), None, None)
    return (float(value), float(min(lo, hi)), float(max(lo, hi)))


def _tooltip(name: str, iv: Interval | None, percent: bool, note: str | None) -> str:
    if iv is None:
        text = f"{name}: n/a (no value)"
    else:
        text = f"{name}: {format_value(iv[0], percent)}"
        if iv[1] is not None and iv[2] is not None:
            text += f" (95% CI {format_value(iv[1], percent)}–{format_value(iv[2], percent)})"
    return f"{text}; {note}" if note else text


def _unique(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise UsageError(f"chart {what} {name!r} is listed twice; give each {what} a distinct name")
        seen.add(name)


def _check_top(top: float, name: str) -> None:
    if not (isinstance(top, int | float) and math.isfinite(top) and top > 0):
        raise UsageError(f"chart {name} must be a positive number, got {top!r}")


def _open(width: float, height: float, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.1f} {height:.1f}" role="img" '
        f'aria-label="{_esc(title)}" class="mb-chart" font-family="system-ui, sans-serif" font-size="{_FONT}">',
        f"<title>{_esc(title)}</title>",
        f'<text class="chart-title" x="{width / 2:.1f}" y="20" text-anchor="middle" font-size="14" '
        f'font-weight="bold">{_esc(_short(title) if len(title) > 2 * _MAX_LABEL else title)}</text>',
    ]


def _whisker(x: float, y_lo: float, y_hi: float, cap: float, vertical: bool = True) -> str:
    """A CI whisker with end caps: vertical at ``x`` from ``y_lo`` to ``y_hi``, or horizontal (arguments swapped)."""
    a, b, lo, hi = f"{x - cap:.1f}", f"{x + cap:.1f}", f"{y_lo:.1f}", f"{y_hi:.1f}"
    d = f"M{x:.1f} {lo}V{hi}M{a} {lo}H{b}M{a} {hi}H{b}" if vertical else f"M{lo} {x:.1f}H{hi}M{lo} {a}V{b}M{hi} {a}V{b}"
    return f'<path class="ci" d="{d}" stroke="#000" stroke-width="1.2" fill="none"/>'


def grouped_bars(
    groups: list[str],
    series: list[str],
    values: Mapping[tuple[str, str], Interval | None],
    *,
    title: str,
    y_label: str,
    y_max: float = 1.0,
    percent: bool = True,
    notes: Mapping[tuple[str, str], str] | None = None,
) -> str:
    """A grouped bar chart (like the paper's Figure 3): one cluster per group (e.g. "SLAKE closed"), one bar per
    series (e.g. a model) coloured from :data:`PALETTE`, 95% CI whiskers, y ticks, a legend, and a ``<title>``
    tooltip per bar with the exact value, CI and ``notes[(group, series)]`` if given. Values above ``y_max`` are
    clipped to the top (the tooltip keeps the exact value); missing values leave a gap marked "n/a"."""
    _check_top(y_max, "y_max")
    _unique(groups, "group")
    _unique(series, "series")
    stray = sorted(repr(k) for k in [*values, *(notes or {})] if k[0] not in groups or k[1] not in series)
    if stray:
        raise UsageError(f"chart {title!r}: values for unknown (group, series) {', '.join(stray[:5])}")
    group_w = len(series) * _BAR + _GROUP_PAD
    plot_w = max(len(groups) * group_w, 120)
    left, right = 64, 16
    legend = [(name, _width(name) + 12 + 6 + 18) for name in series]
    legend_w = max(plot_w, 360)
    rows: list[list[tuple[int, float]]] = [[]]  # legend rows of (series index, x offset)
    x_off = 0.0
    for index, (_, w) in enumerate(legend):
        if rows[-1] and x_off + w > legend_w:
            rows.append([])
            x_off = 0.0
        rows[-1].append((index, x_off))
        x_off += w
    top = 36 + 18 * len(rows) + 10
    rotate = any(_width(g) > group_w - 4 for g in groups)
    bottom = (12 + max((_width(g) for g in groups), default=0) * 0.6 + 10) if rotate else 30
    width = max(
        left + plot_w + right, left + legend_w + right, _width(title, 16) + 20
    )  # bold 14 px runs wider than the average glyph
    height = top + _PLOT_H + bottom
    base = top + _PLOT_H

    def y_of(v: float) -> float:
        return top + _PLOT_H * (1 - min(max(v, 0.0), y_max) / y_max)

    out = _open(width, height, title)
    out.append('<g class="legend">')
    for r, row in enumerate(rows):
        for index, offset in row:
            x, y = left + offset, 36.0 + 18 * r
            name = series[index]
            out.append(
                f'<g><title>{_esc(name)}</title><rect class="swatch" x="{x:.1f}" y="{y:.1f}" width="12" height="12" '
                f'fill="{PALETTE[index % len(PALETTE)]}"/><text x="{x + 18:.1f}" y="{y + 10.5:.1f}">'
                f"{_esc(_short(name))}</text></g>"
            )
    out.append('</g><g class="axis">')
    for tick in _ticks(y_max):
        y = y_of(tick)
        out.append(f'<line x1="{left:.1f}" x2="{left + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(
            f'<text x="{left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">{_esc(format_value(tick, percent))}</text>'
        )
    out.append(f'<line x1="{left:.1f}" x2="{left + plot_w:.1f}" y1="{base:.1f}" y2="{base:.1f}" stroke="#333"/>')
    mid = top + _PLOT_H / 2
    out.append(
        f'<text class="y-label" x="14" y="{mid:.1f}" text-anchor="middle" transform="rotate(-90 14 {mid:.1f})">'
        f"{_esc(_short(y_label))}</text>"
    )
    for gi, group in enumerate(groups):
        cx = left + gi * group_w + group_w / 2
        if rotate:
            out.append(
                f'<text class="x-label" x="{cx:.1f}" y="{base + 14:.1f}" text-anchor="end" '
                f'transform="rotate(-35 {cx:.1f} {base + 14:.1f})">{_esc(_short(group))}</text>'
            )
        else:
            out.append(
                f'<text class="x-label" x="{cx:.1f}" y="{base + 18:.1f}" text-anchor="middle">{_esc(group)}</text>'
            )
    out.append('</g><g class="bars">')
    for gi, group in enumerate(groups):
        for si, name in enumerate(series):
            x = left + gi * group_w + _GROUP_PAD / 2 + si * _BAR
            iv = _interval(values.get((group, name)))
            tip = _esc(_tooltip(f"{name} — {group}", iv, percent, (notes or {}).get((group, name))))
            if iv is None:
                out.append(
                    f'<text class="na" x="{x + _BAR / 2 - 1:.1f}" y="{base - 4:.1f}" text-anchor="middle" '
                    f'font-size="9" fill="#555"><title>{tip}</title>n/a</text>'
                )
                continue
            y = y_of(iv[0])
            out.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{_BAR - 2}" height="{base - y:.1f}" '
                f'fill="{PALETTE[si % len(PALETTE)]}" stroke="#333" stroke-width="0.5"><title>{tip}</title></rect>'
            )
            if iv[1] is not None and iv[2] is not None:
                out.append(_whisker(x + (_BAR - 2) / 2, y_of(iv[1]), y_of(iv[2]), 3))
    out.append("</g></svg>")
    return "\n".join(out)


def horizontal_bars(
    labels: list[str],
    values: Mapping[str, Interval | None],
    *,
    title: str,
    x_label: str = "",
    x_max: float = 1.0,
    percent: bool = True,
    colour: str = PALETTE[0],
    notes: Mapping[str, str] | None = None,
) -> str:
    """One horizontal bar per label (e.g. a subgroup breakdown: SLAKE modality -> accuracy), top to bottom in
    ``labels`` order, with 95% CI whiskers, the value printed at the end of the bar, and x ticks; missing values
    print "n/a" instead of a bar. ``colour`` must be a CSS colour (it is escaped, not validated)."""
    _check_top(x_max, "x_max")
    _unique(labels, "label")
    stray = sorted(repr(k) for k in [*values, *(notes or {})] if k not in labels)
    if stray:
        raise UsageError(f"chart {title!r}: values for unknown labels {', '.join(stray[:5])}")
    row_h, bar_h, plot_w = 22, 14, 320
    left = max((_width(lab) for lab in labels), default=0) + 16
    top, right = 36, 80
    height = top + row_h * max(len(labels), 1) + 46
    width = max(left + plot_w + right, _width(title, 16) + 20)  # bold 14 px title
    base = top + row_h * len(labels)

    def x_of(v: float) -> float:
        return left + plot_w * min(max(v, 0.0), x_max) / x_max

    out = _open(width, height, title)
    out.append('<g class="axis">')
    for tick in _ticks(x_max):
        x = x_of(tick)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{base:.1f}" stroke="#ddd"/>')
        out.append(
            f'<text x="{x:.1f}" y="{base + 16:.1f}" text-anchor="middle">{_esc(format_value(tick, percent))}</text>'
        )
    out.append(f'<line x1="{left:.1f}" x2="{left:.1f}" y1="{top:.1f}" y2="{base:.1f}" stroke="#333"/>')
    if x_label:
        out.append(
            f'<text class="x-label" x="{left + plot_w / 2:.1f}" y="{base + 36:.1f}" text-anchor="middle">'
            f"{_esc(_short(x_label))}</text>"
        )
    out.append('</g><g class="bars">')
    for i, label in enumerate(labels):
        y = top + i * row_h + (row_h - bar_h) / 2
        cy = y + bar_h / 2
        iv = _interval(values.get(label))
        tip = _esc(_tooltip(label, iv, percent, (notes or {}).get(label)))
        out.append(
            f'<text class="y-label" x="{left - 8:.1f}" y="{cy + 4:.1f}" text-anchor="end">{_esc(_short(label))}</text>'
        )
        if iv is None:
            out.append(
                f'<text class="na" x="{left + 4:.1f}" y="{cy + 4:.1f}" fill="#555"><title>{tip}</title>n/a</text>'
            )
            continue
        end = x_of(iv[0])
        out.append(
            f'<rect class="bar" x="{left:.1f}" y="{y:.1f}" width="{end - left:.1f}" height="{bar_h}" '
            f'fill="{_esc(colour)}" stroke="#333" stroke-width="0.5"><title>{tip}</title></rect>'
        )
        if iv[1] is not None and iv[2] is not None:
            out.append(_whisker(cy, x_of(iv[1]), x_of(iv[2]), 3, vertical=False))
            end = max(end, x_of(iv[2]))
        out.append(
            f'<text class="value" x="{end + 4:.1f}" y="{cy + 4:.1f}">{_esc(format_value(iv[0], percent))}</text>'
        )
    out.append("</g></svg>")
    return "\n".join(out)
