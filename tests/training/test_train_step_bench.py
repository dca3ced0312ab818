"""benchmarks/train_step.py on the tiny Mllama (CPU): the pieces the medbench training path is made of, and the
``--tiny`` run end to end.

What is guarded here:
* checkpointing reaches every layer: HF's own flag recomputes the decoder layers but not one vision encoder layer
  (the gap the benchmark exists to close), ``checkpoint_every_layer`` recomputes all of them, once each, and gives
  the same gradients as no checkpointing;
* the tile cut: the patched tile embeddings are the stock ones bit for bit on uncut input and the first tiles'
  slice on cut input; the cut batch has one tile per 512 px-like image; the model's output does change (valid
  patches no longer attend to padded tiles), as the benchmark's docstring says;
* the labelled-positions loss equals HF's loss;
* NF4 replaces every linear layer but ``lm_head`` and peft puts its 4-bit LoRA layers on them;
* the ``--tiny`` command: every path, every batch, the table, the JSON, clear errors for bad flags.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"

# transformers' deprecation notices raised from inside peft and the checkpointing helpers
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_step_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_step_bench"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


ts = _load_bench()


@pytest.fixture(scope="module")
def shape() -> Any:
    return ts.model_shape(tiny=True)


@pytest.fixture(scope="module")
def batch(shape: Any) -> tuple[dict[str, Any], Any]:
    """Two rows of 64 tokens, 16 labelled; 4 tiles per image, 1 valid (as the processor pads a 512 px image)."""
    return ts.make_batch(shape, ts.image_processor(shape), 2, 64, 16)


def _fp32_lora_model(shape: Any) -> Any:
    """The tiny model in fp32 with the paper preset's LoRA and no dropout: deterministic, exact comparisons."""
    from peft import get_peft_model

    from medbench.training import presets

    model = ts.build_model(shape, torch.device("cpu")).float()
    return get_peft_model(model, presets.lora_config("mllama", "paper", rank=4, dropout=0.0))


def _one_step(peft_model: Any, inputs: dict[str, Any], labels: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """Forward + backward with the recompute check on; (layers recomputed, LoRA gradients)."""
    hf = peft_model.get_base_model()
    peft_model.train()
    check = ts.RecomputeCheck(hf)
    loss = ts.labelled_loss(hf, inputs, labels)
    check.backward_starts()
    loss.backward()
    check.close()
    grads = {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad and p.grad is not None}
    return check.recomputed(), grads


def test_the_batch_is_shaped_like_the_processors_512px_output(shape: Any, batch: Any) -> None:
    inputs, labels = batch
    assert shape.image_px == 51  # 512 * 56 / 560: one tile's worth, as 512 px is of a 560 px tile
    assert tuple(inputs["pixel_values"].shape) == (2, 1, 4, 3, 56, 56)
    assert inputs["aspect_ratio_mask"].tolist() == [[[1, 0, 0, 0]], [[1, 0, 0, 0]]]
    assert inputs["cross_attention_mask"][:, 0].sum() == 0  # BOS precedes the image token
    assert inputs["cross_attention_mask"][:, 1:, 0].tolist() == [[[1, 0, 0, 0]] * 63] * 2
    assert (labels[:, :48] == -100).all() and (labels[:, 48:] != -100).all()
    assert not (labels == shape.image_token_id).any()


def test_hf_flag_leaves_the_vision_layers_while_every_layer_recomputes_all(shape: Any, batch: Any) -> None:
    # Guards the point of the medbench path: HF's flag alone recomputes no vision encoder layer (the old path);
    # checkpoint_every_layer recomputes all 3 (2 local + 1 global) and the 4 decoder layers, each exactly once.
    inputs, labels = batch
    naive = _fp32_lora_model(shape)
    ts.enable_hf_checkpointing(naive.get_base_model())
    recomputed, _ = _one_step(naive, inputs, labels)
    assert recomputed == {"vision": "0/3", "language": "4/4"}

    full = _fp32_lora_model(shape)
    assert ts.checkpoint_every_layer(full.get_base_model()) == {"vision": 3}
    recomputed, grads = _one_step(full, inputs, labels)
    assert recomputed == {"vision": "3/3", "language": "4/4"}

    plain = _fp32_lora_model(shape)  # same seed, same weights, no checkpointing
    _, expected = _one_step(plain, inputs, labels)
    assert grads.keys() == expected.keys() and any("vision_model" in n for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_wrapped_layers_checkpoint_only_when_training_with_gradients(
    shape: Any, batch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Evaluation (eval mode or no_grad) must run the vision layers plainly, not through torch.utils.checkpoint.
    import torch.utils.checkpoint as tuc

    calls: list[int] = []
    real = tuc.checkpoint

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tuc, "checkpoint", spy)  # before wrapping: the wrapper binds it then
    model = _fp32_lora_model(shape)
    hf = model.get_base_model()
    ts.checkpoint_every_layer(hf)
    model.train()
    ts.labelled_loss(hf, *batch)
    assert len(calls) == 3  # 2 local + 1 global vision layers, through the wrapper
    calls.clear()
    with torch.no_grad():
        ts.labelled_loss(hf, *batch)
    model.eval()
    ts.labelled_loss(hf, *batch)
    assert calls == []


def test_patched_tile_embeddings_are_stock_when_uncut_and_a_slice_when_cut(shape: Any) -> None:
    # Guards the tile cut's claim: no change at all on the processor's 4 tiles, the first tiles' slice otherwise.
    model = ts.build_model(shape, torch.device("cpu")).float()
    stock = copy.deepcopy(model)
    assert ts.enable_tile_cut(model) == 3
    ids = torch.tensor([[1], [2]])  # aspect ratios [1, 1] and [1, 2]
    for name in ("pre_tile_positional_embedding", "post_tile_positional_embedding", "gated_positional_embedding"):
        patched = getattr(model.model.vision_model, name)
        original = getattr(stock.model.vision_model, name)
        with torch.no_grad():  # a gate of 0 would hide the tile embedding
            patched.gate.fill_(0.3)
            original.gate.fill_(0.3)
        hidden = torch.randn(2, 4, 17, 64)  # (images, tiles, 16 patches + class, hidden)
        full = original(hidden, ids)
        assert torch.equal(patched(hidden, ids), full), name
        assert torch.equal(patched(hidden[:, :2], ids), full[:, :2]), name


def test_cut_batch_has_one_tile_and_changes_the_output(shape: Any, batch: Any) -> None:
    inputs = batch[0]
    cut = ts.cut_padded_tiles(inputs)
    assert tuple(cut["pixel_values"].shape) == (2, 1, 1, 3, 56, 56)
    assert tuple(cut["aspect_ratio_mask"].shape) == (2, 1, 1)
    assert tuple(cut["cross_attention_mask"].shape) == (2, 64, 1, 1)
    assert inputs["pixel_values"].shape[2] == 4  # the input is left as it was
    model = ts.build_model(shape, torch.device("cpu")).float().eval()
    with torch.no_grad():
        padded = model(**inputs, use_cache=False).logits
        ts.enable_tile_cut(model)
        again = model(**inputs, use_cache=False).logits
        trimmed = model(**cut, use_cache=False).logits
    assert torch.equal(again, padded)  # patched, uncut: unchanged
    assert torch.isfinite(trimmed).all()
    # Not output-preserving, as documented: HF's vision mask lets valid patches attend to the padded tiles.
    assert not torch.allclose(trimmed, padded, atol=1e-4)


def test_cut_refuses_a_valid_tile_after_a_padded_one(batch: Any) -> None:
    inputs = dict(batch[0])
    inputs["aspect_ratio_mask"] = torch.tensor([[[1, 0, 1, 0]], [[1, 0, 0, 0]]])
    with pytest.raises(ts.UsageError, match="valid tile after a padded one"):
        ts.cut_padded_tiles(inputs)


def test_labelled_loss_equals_hf_loss(shape: Any, batch: Any) -> None:
    inputs, labels = batch
    model = ts.build_model(shape, torch.device("cpu")).float().eval()
    with torch.no_grad():
        expected = model(**inputs, labels=labels, use_cache=False).loss
        got = ts.labelled_loss(model, inputs, labels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_nf4_replaces_every_linear_but_lm_head_and_takes_4bit_lora(shape: Any, batch: Any) -> None:
    bnb = pytest.importorskip("bitsandbytes")
    model = ts.build_model(shape, torch.device("cpu"))
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    assert ts.quantize_nf4(model, torch.device("cpu")) == len(linears)
    kinds = {n: type(m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert kinds.pop("lm_head") is torch.nn.Linear
    assert set(kinds.values()) == {bnb.nn.Linear4bit}
    assert {m.weight.quant_type for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)} == {"nf4"}
    peft_model, trainable = ts.add_lora(model, "paper", 4)
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit

    assert sum(isinstance(m, LoraLinear4bit) for m in peft_model.modules()) == len(linears) - 1  # not the projector
    assert trainable > 0
    assert {p.dtype for p in peft_model.parameters() if p.requires_grad} == {torch.float32}


def test_tiny_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    argv = ["--tiny", "--batches", "1,2", "--steps", "1", "--warmup", "0", "--seq", "32", "--answer-tokens", "8"]
    assert ts.main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "path             batch tiles   s/step  samples/s  peak alloc GiB  peak resv GiB  OOM" in printed
    record = json.loads(out.read_text(encoding="utf-8"))
    assert {"torch", "transformers", "peft", "device"} <= record["environment"].keys()
    paths = {p["path"]: p for p in record["paths"]}
    assert list(paths) == ["naive", "medbench-4tiles", "medbench", "qlora"]
    assert paths["naive"]["recomputed"] == {"vision": "0/3", "language": "4/4"}
    assert paths["medbench"]["recomputed"] == {"vision": "3/3", "language": "4/4"}
    for name in ("naive", "medbench-4tiles", "medbench"):
        rows = paths[name]["rows"]
        assert [r["batch"] for r in rows] == [1, 2]
        assert all(not r["oom"] and r["samples_per_s"] > 0 for r in rows)
        assert {r["tiles"] for r in rows} == ({1} if name == "medbench" else {4})
    if paths["qlora"]["skipped"]:
        assert f"qlora: {ts.PATH_NOTES['qlora']}\n  skipped: " in printed
    else:
        assert paths["qlora"]["quantized_linears"] > 0 and len(paths["qlora"]["rows"]) == 2
    assert all("not evaluated: --tiny model" in line for line in record["targets"]) and len(record["targets"]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tiny", "--answer-tokens", "300"], "--answer-tokens must be between 1 and --seq - 2 = 254"),
        (["--tiny", "--preset", "everything"], "unknown LoRA preset 'everything'"),
        (["--tiny", "--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_bad_flags_are_clear_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ts.main(argv) == 2
    assert message in capsys.readouterr().err


def test_full_size_needs_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the full run would start")
    assert ts.main(["--batches", "1"]) == 2
    assert "the 11B run needs a CUDA GPU" in capsys.readouterr().err


def test_a_path_out_of_memory_is_recorded_and_the_larger_batches_skipped(
    shape: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OOM handling: the configuration is recorded, memory freed, the run goes on; larger batches are not tried.
    args = ts.parse_args(
        ["--tiny", "--batches", "1,2,4", "--steps", "1", "--warmup", "0", "--seq", "16", "--answer-tokens", "4"]
    )
    batches = {size: ts.make_batch(shape, ts.image_processor(shape), size, 16, 4) for size in args.batches}
    real_step = ts._step

    def step(*args_: Any, **kwargs: Any) -> Any:
        inputs = args_[3][0]
        if inputs["input_ids"].shape[0] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_step(*args_, **kwargs)

    monkeypatch.setattr(ts, "_step", step)
    report = ts.run_path("medbench", shape, batches, args, ts.Device(torch))
    assert [(r.batch, r.oom) for r in report.rows] == [(1, False), (2, True), (4, True)]
    assert report.rows[2].note == "not run: batch 2 ran out of memory"
    assert "2     1        -          -" in ts.format_table([report])


def test_runs_from_a_checkout_without_medbench_installed(tmp_path: Path) -> None:
    # The GPU machine has torch/transformers/peft but no medbench install: the script loads it from its checkout.
    code = (
        "import runpy, sys\n"
        "sys.modules['medbench'] = None  # as if not installed\n"
        f"sys.argv = ['train_step.py', '--tiny', '--batches', '1', '--steps', '1', '--warmup', '0', '--seq', '16',"
        f" '--answer-tokens', '4', '--paths', 'medbench', '--json', {str(tmp_path / 'out.json')!r}]\n"
        f"try:\n    runpy.run_path({str(BENCH)!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "print(sys.modules['medbench.training.presets'].__file__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str(BENCH.parents[1] / "training" / "presets.py")
    assert json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))["paths"][0]["path"] == "medbench"
