"""Inline SVG charts (medbench.reports.charts): well-formed, escaped, deterministic, one bar per present value."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from medbench.errors import UsageError
from medbench.reports.charts import PALETTE, Interval, format_value, grouped_bars, horizontal_bars

NS = "{http://www.w3.org/2000/svg}"
HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "a & b 'quoted'"]
GROUPS = ["SLAKE closed", "SLAKE open", "VQA-RAD overall"]
SERIES = ["LLaMA32-Med", "zero-shot", "paper"]


def _values() -> dict[tuple[str, str], Interval | None]:
    return {
        ("SLAKE closed", "LLaMA32-Med"): (0.912, 0.89, 0.93),
        ("SLAKE closed", "zero-shot"): (0.719, 0.68, 0.75),
        ("SLAKE closed", "paper"): (0.912, None, None),  # a reported number: no CI, so no whisker
        ("SLAKE open", "LLaMA32-Med"): (0.814, 0.79, 0.84),
        ("SLAKE open", "zero-shot"): None,  # explicit gap
        # ("SLAKE open", "paper") left out: also a gap
        ("VQA-RAD overall", "LLaMA32-Med"): (0.709, 0.66, 0.75),
        ("VQA-RAD overall", "zero-shot"): (0.39, 0.35, 0.43),
        ("VQA-RAD overall", "paper"): (float("nan"), None, None),  # not finite: a gap, never a bar
    }


def _by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{NS}{tag}") if e.get("class") == cls]


def _all_text(root: ET.Element) -> list[str]:
    texts = [t for e in root.iter() for t in (e.text, e.tail) if t]
    return texts + [v for e in root.iter() for v in e.attrib.values()]


def _grouped(**kwargs: object) -> str:
    args: dict[str, object] = {"title": "Overall accuracy", "y_label": "accuracy"} | kwargs
    return grouped_bars(GROUPS, SERIES, _values(), **args)  # type: ignore[arg-type]


def test_grouped_is_well_formed_svg_with_viewbox() -> None:
    root = ET.fromstring(_grouped())
    assert root.tag == f"{NS}svg"
    assert root.get("viewBox", "").startswith("0 0 ")
    # scales with its container: no fixed pixel size
    assert root.get("width") is None and root.get("height") is None
    assert root.find(f"{NS}title") is not None and root.find(f"{NS}title").text == "Overall accuracy"  # type: ignore[union-attr]


def test_grouped_one_bar_per_present_value_and_gaps_for_missing() -> None:
    root = ET.fromstring(_grouped())
    present = [k for k, v in _values().items() if v is not None and v[0] == v[0]]
    assert len(_by_class(root, "rect", "bar")) == len(present) == 6
    # 3 gaps: an explicit None, a missing key, a NaN; each is marked "n/a" with a tooltip
    gaps = _by_class(root, "text", "na")
    assert len(gaps) == 3
    assert all("n/a" in "".join(g.itertext()) for g in gaps)


def test_grouped_whisker_per_value_with_ci() -> None:
    root = ET.fromstring(_grouped())
    with_ci = [v for v in _values().values() if v is not None and v[1] is not None]
    assert len(_by_class(root, "path", "ci")) == len(with_ci) == 5


def test_grouped_tooltip_has_exact_value_and_ci() -> None:
    root = ET.fromstring(_grouped(notes={("SLAKE closed", "LLaMA32-Med"): "n=416"}))
    tips = [b.find(f"{NS}title").text for b in _by_class(root, "rect", "bar")]  # type: ignore[union-attr]
    assert tips[0] == "LLaMA32-Med — SLAKE closed: 91.2% (95% CI 89%–93%); n=416"
    assert "paper — SLAKE closed: 91.2%" in tips
    assert not any("CI" in t for t in tips if t.startswith("paper"))


def test_grouped_legend_ticks_and_palette_cycle() -> None:
    series = [f"model {i}" for i in range(len(PALETTE) + 1)]
    svg = grouped_bars(["g"], series, {("g", s): (0.5, None, None) for s in series}, title="t", y_label="y")
    root = ET.fromstring(svg)
    fills = [b.get("fill") for b in _by_class(root, "rect", "bar")]
    assert fills[: len(PALETTE)] == list(PALETTE) and fills[-1] == PALETTE[0]  # cycles
    assert [s.get("fill") for s in _by_class(root, "rect", "swatch")] == fills
    texts = _all_text(root)
    assert all(s in texts for s in series)
    assert {"0%", "20%", "40%", "60%", "80%", "100%"} <= set(texts)


def test_grouped_score_scale_ticks() -> None:
    svg = grouped_bars(["rocov2"], ["a"], {("rocov2", "a"): (3.8, 3.7, 3.9)}, title="judge", y_label="score",
                       y_max=5, percent=False)  # fmt: skip
    root = ET.fromstring(svg)
    assert {"0", "1", "2", "3", "4", "5"} <= set(_all_text(root))
    assert _by_class(root, "rect", "bar")[0].find(f"{NS}title").text == "a — rocov2: 3.8 (95% CI 3.7–3.9)"  # type: ignore[union-attr]


def test_grouped_value_above_top_is_clipped_but_tooltip_exact() -> None:
    svg = grouped_bars(["g"], ["a", "b"], {("g", "a"): (1.5, None, None), ("g", "b"): (1.0, None, None)},
                       title="t", y_label="y")  # fmt: skip
    a, b = _by_class(ET.fromstring(svg), "rect", "bar")
    assert a.get("height") == b.get("height") and a.get("y") == b.get("y")
    assert a.find(f"{NS}title").text == "a — g: 150%"  # type: ignore[union-attr]


@pytest.mark.parametrize("where", ["group", "series", "title", "y_label"])
def test_grouped_hostile_text_is_escaped(where: str) -> None:
    groups = [*HOSTILE, "\x00ctrl\x1b"] if where == "group" else ["g"]
    series = [*HOSTILE, "\x00ctrl\x1b"] if where == "series" else ["s"]
    values = {(g, s): (0.5, 0.4, 0.6) for g in groups for s in series}
    title = HOSTILE[1] if where == "title" else "t"
    y_label = HOSTILE[0] if where == "y_label" else "y"
    svg = grouped_bars(groups, series, values, title=title, y_label=y_label)
    assert "<script" not in svg and "<img" not in svg
    # no raw quote from a label can close an attribute: every attribute parses back to the hostile text intact
    root = ET.fromstring(svg)  # control characters were replaced, so it is still well-formed XML
    text = "\n".join(_all_text(root))
    for hostile in HOSTILE[:2]:
        if where in ("group", "series") or hostile in (title, y_label):
            assert hostile in text
    assert [e.tag for e in root.iter() if e.tag in (f"{NS}script", f"{NS}img", "script", "img")] == []


def test_grouped_is_deterministic() -> None:
    first = _grouped()
    reordered = dict(reversed(list(_values().items())))  # the dict's order must not matter, only groups/series
    assert grouped_bars(GROUPS, SERIES, reordered, title="Overall accuracy", y_label="accuracy") == first
    assert _grouped() == first


def test_grouped_long_labels_rotate_and_stay_well_formed() -> None:
    groups = ["a very long subgroup label that cannot fit under a bar " * 2, "short"]
    svg = grouped_bars(groups, ["m"], {(groups[0], "m"): (0.3, 0.2, 0.4)}, title="t", y_label="y")
    labels = _by_class(ET.fromstring(svg), "text", "x-label")
    assert all("rotate(" in (label.get("transform") or "") for label in labels)
    assert len(labels[0].text or "") == 40  # shortened on the axis; the bar's tooltip keeps the full name


def test_grouped_rejects_bad_input() -> None:
    with pytest.raises(UsageError, match="series 'a' is listed twice"):
        grouped_bars(["g"], ["a", "a"], {}, title="t", y_label="y")
    with pytest.raises(UsageError, match="unknown"):
        grouped_bars(["g"], ["a"], {("g", "typo"): (0.1, None, None)}, title="t", y_label="y")
    with pytest.raises(UsageError, match="y_max"):
        grouped_bars(["g"], ["a"], {}, title="t", y_label="y", y_max=0)


def test_grouped_empty_still_renders() -> None:
    root = ET.fromstring(grouped_bars([], [], {}, title="nothing yet", y_label="y"))
    assert _by_class(root, "rect", "bar") == []


def _subgroups() -> dict[str, Interval | None]:
    return {"CT": (0.85, 0.8, 0.9), "MRI": (0.78, None, None), "X-Ray": None, HOSTILE[0]: (0.5, 0.45, 0.55)}


def test_horizontal_bars() -> None:
    labels = ["CT", "MRI", "X-Ray", HOSTILE[0], "missing key"]
    svg = horizontal_bars(labels, _subgroups(), title="SLAKE by modality", x_label="accuracy")
    assert "<script" not in svg
    root = ET.fromstring(svg)
    assert len(_by_class(root, "rect", "bar")) == 3
    assert len(_by_class(root, "path", "ci")) == 2
    assert len(_by_class(root, "text", "na")) == 2
    assert [t.text for t in _by_class(root, "text", "value")] == ["85%", "78%", "50%"]
    assert [t.text for t in _by_class(root, "text", "y-label")] == labels
    tips = [b.find(f"{NS}title").text for b in _by_class(root, "rect", "bar")]  # type: ignore[union-attr]
    assert tips[0] == "CT: 85% (95% CI 80%–90%)"
    assert horizontal_bars(labels, _subgroups(), title="SLAKE by modality", x_label="accuracy") == svg


def test_horizontal_rejects_bad_input() -> None:
    with pytest.raises(UsageError, match="unknown labels"):
        horizontal_bars(["CT"], {"MR": (0.1, None, None)}, title="t")
    with pytest.raises(UsageError, match="x_max"):
        horizontal_bars(["CT"], {}, title="t", x_max=float("nan"))


def test_format_value() -> None:
    assert format_value(0.846, True) == "84.6%"
    assert format_value(0.8462, True) == "84.62%"
    assert format_value(1.0, True) == "100%"
    assert format_value(0.0, True) == "0%"
    assert format_value(3.80, False) == "3.8"
    assert format_value(0.8467, False) == "0.8467"
