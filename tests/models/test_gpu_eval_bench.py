"""benchmarks/gpu_eval_throughput.py in its --tiny CPU mode (what CI can run of issue 14's benchmark): every family
and path measured through the real hf: adapter, the fast path's outputs equal to the naive path's on the same
inputs, the valid-tiles path for Mllama only, the Qwen2.5-VL-7B architecture right, and clear errors for bad flags.
No speed is asserted."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_eval_throughput.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_eval_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_eval_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_tiny_run_measures_every_path_and_fast_equals_naive(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    assert bench.main(["--tiny", "--samples", "6", "--batches", "2,3", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    rows = {(r["family"], r["path"], r["batch"]): r for r in record["rows"]}
    want = {
        (f, p, b) for f in ("mllama", "qwen2_5_vl") for p in ("naive", "fast", "static", "compiled") for b in (2, 3)
    }
    want |= {("mllama", "valid-tiles", b) for b in (2, 3)}  # Qwen has no padded tiles to skip
    assert set(rows) == want
    for key, row in rows.items():
        assert not row["oom"] and row["samples_per_s"] > 0 and row["new_tokens_per_s"] > 0, key
        assert row["agreement_with_naive"] is not None, key
        assert row["error"] is None and row["warmup_s"] is not None, key
        if key[1] in ("fast", "static", "compiled"):
            assert row["agreement_with_naive"] == 1.0, key  # these paths give the naive path's outputs
            if key[2] == 2:  # and, on the CPU in fp32, the naive path's logits
                assert row["logits_max_diff"] is not None and row["logits_max_diff"] <= 1e-4, key
    assert any("8,231 questions in" in line for line in record["summary"])
    printed = capsys.readouterr().out
    assert "samples/s" in printed and "valid-tiles" in printed


def test_the_qwen_7b_architecture_has_its_parameter_count(bench: ModuleType, tmp_path: Path) -> None:
    from medbench.testing import build_tiny_model

    folder = build_tiny_model("qwen2_5_vl", tmp_path / "qwen")
    config = bench.qwen_7b_config(transformers.AutoConfig.from_pretrained(folder))
    with torch.device("meta"):
        model = transformers.Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656  # Qwen2.5-VL-7B-Instruct's


def test_bad_flags_and_a_full_run_without_a_gpu_are_refused(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--batches", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--paths", "warp"])
    if not torch.cuda.is_available():
        assert bench.main(["--samples", "2"]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err


def test_the_full_size_swap_in_runs_the_adapter_on_a_model_it_did_not_load(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The GPU run builds the model itself and hands it to the adapter: here the same machinery with train_step's
    # tiny Mllama shape (56 px tiles, 4 tiles) on the CPU, so that a GPU session does not find its bugs first.
    from medbench.testing import build_tiny_model

    shape = bench.ts.model_shape(tiny=True)
    built: list[object] = []

    def build_small(family: str, folder: Path, device: object) -> tuple[object, object]:
        model = bench.ts.build_model(shape, torch.device("cpu")).float()
        built.append(model)
        return model, bench.ts.image_processor(shape)

    monkeypatch.setattr(bench, "build_full", build_small)
    folder = build_tiny_model("mllama-4tiles", tmp_path / "mllama")
    reqs = bench.make_requests(tmp_path, 4, 2, 51, 16, 3)  # 51 px: one valid tile of four 56 px tiles
    outputs = {}
    for path in ("naive", "fast", "valid-tiles"):
        adapter = bench.make_adapter(folder, path, 2, "cpu", full=True)
        assert adapter.model is built[-1] and adapter.processor.image_processor.size["height"] == 56
        outputs[path], *_ = bench.measure(adapter, reqs, 2, cuda=False)
        adapter.release()
    assert len(built) == 3  # a fresh model per path: the fast path's changes never leak into the naive one
    assert outputs["fast"] == outputs["naive"] and all(len(o) == 4 for o in outputs.values())


def test_two_processes_give_the_outputs_of_one(tmp_path: Path) -> None:
    # benchmarks/gpu_eval_scaling.py --tiny: torchrun with 1 and 2 CPU processes (gloo), each rank its share of the
    # requests as medbench run shards them; the merged outputs must be one process's, request for request.
    if not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun not installed")
    spec = importlib.util.spec_from_file_location("gpu_eval_scaling", BENCH.parent / "gpu_eval_scaling.py")
    assert spec is not None and spec.loader is not None
    scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scaling)
    out = tmp_path / "scaling.json"
    assert scaling.main(["--tiny", "--gpus", "1,2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["comparison"]
    assert {(r["processes"], r["path"]) for r in rows} == {(n, p) for n in (1, 2) for p in ("naive", "fast")}
    assert all(not r["oom"] and r["same_outputs_as_first"] == 1.0 and r["samples_per_s"] > 0 for r in rows)
    records = json.loads(out.read_text())["records"]
    assert records["2"]["processes"] == 2 and records["1"]["processes"] == 1


def test_a_path_that_fails_on_the_gpu_is_recorded_and_the_others_still_run(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lent GPU session is short: a compile error on one path must not cost the others (full-size mode only;
    # --tiny raises). Every row reaches the caller as it is measured, so a run cut short keeps what it measured.
    import argparse

    from medbench.testing import build_tiny_model

    folder = build_tiny_model("llava", tmp_path / "llava")
    real = bench.make_adapter

    def make(folder: Path, path: str, batch: int, device: str, full: bool) -> object:
        if path == "static":
            raise RuntimeError("compile failed")
        return real(folder, path, batch, device, full=False)

    monkeypatch.setattr(bench, "make_adapter", make)
    args = argparse.Namespace(tiny=False, paths=["naive", "static", "fast"], batches=[2, 3], new_tokens=3)
    reqs = bench.make_requests(tmp_path, 4, 2, 32, 8, 3)
    seen: list[object] = []
    rows = bench.run_family("llava", folder, args, reqs, cuda=False, done=seen.append)
    assert [(r.path, r.batch) for r in rows] == [("naive", 2), ("naive", 3), ("static", 2), ("fast", 2), ("fast", 3)]
    assert seen == rows
    failed = rows[2]
    assert failed.error == "RuntimeError: compile failed" and failed.samples_per_s is None
    assert all(r.error is None and r.samples_per_s and r.agreement_with_naive == 1.0 for r in rows if r is not failed)
    assert "failed: RuntimeError: compile failed" in bench.format_table(rows)
