"""``timing`` separates generation (model calls only) from scoring and judging, and weights load outside it."""

from __future__ import annotations

from pathlib import Path

from runkit import imgecho, medbench, read_json  # noqa: F401 (fixtures, see runkit)


def test_timing_separates_generation_from_scoring(medbench, imgecho, tmp_path: Path) -> None:
    loads: list[int] = []
    imgecho.load = lambda self: loads.append(1)  # type: ignore[method-assign]
    try:
        args = ["run", "--demo", "--models", "imgecho,yes", "--tasks", "vqa_rad,rocov2"]
        assert medbench(*args, "--output", str(tmp_path / "a"))[0] == 0
        assert len(loads) == 2  # once per task with something to generate, before the first batch
        assert medbench(*args, "--output", str(tmp_path / "b"))[0] == 0
        assert len(loads) == 2  # everything cached: the weights are never loaded
    finally:
        del imgecho.load
    results = read_json(tmp_path / "a" / "results.json")
    counts = results["counts"]["imgecho"]
    for task in ("vqa_rad", "rocov2"):
        timing = results["tasks"][task]["timing"]["imgecho"]
        assert set(timing) == {"seconds", "generation", "scoring_seconds", "judging_seconds"}
        assert timing["generation"]["samples"] == counts[task]["generated"] > 0
        assert timing["generation"]["new_tokens"] is None  # this adapter does not count tokens
        assert timing["judging_seconds"] is None  # no judge
        assert timing["generation"]["seconds"] <= timing["seconds"]
    cached = read_json(tmp_path / "b" / "results.json")["tasks"]["vqa_rad"]["timing"]["imgecho"]["generation"]
    assert cached["samples"] == 0 and cached["samples_per_s"] is None
