"""The Hugging Face adapter on tiny offline models of every family, used exactly as a user would:
``medbench.registry.create_model("hf:<dir>[+lora:<adapter>]", **options)``. Random weights: nothing here asserts on
what the decoded text says, only on shapes, determinism, identity and errors."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch

from medbench import registry
from medbench.errors import UsageError
from medbench.models import hf
from medbench.prompts import render_prompt
from medbench.schema import Request
from medbench.tasks.base import LoadOptions, locate
from medbench.testing import FAMILIES, build_tiny_lora, build_tiny_models, to_hub_layout

VLMs = dict[str, tuple[Path, Path]]
# Short generations keep the file fast on 2 CPU cores; the runner's values are 32 (VQA) and 256 (captions).
MAX_NEW_TOKENS = {"vqa": 8, "caption": 12}


@pytest.fixture(scope="session")
def tiny_vlms(tmp_path_factory: pytest.TempPathFactory) -> VLMs:
    """family -> (model directory, LoRA adapter directory), built once per session (about 1 s) and shared with
    the other test modules that build the same set (tests/test_testing.py).

    Here rather than in tests/models/conftest.py: a second ``conftest`` module would shadow tests/conftest.py
    for the test modules that do ``from conftest import build_slake, ...``."""
    return build_tiny_models(tmp_path_factory.getbasetemp() / "tiny_vlms", reuse=True)


def create(name: str, **options: Any) -> Any:
    """``create_model`` as a user calls it, pinned to the CPU (fp32) so results do not depend on the machine."""
    return registry.create_model(name, **{"device": "cpu", **options})


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure ``hf:`` and ``llama32med`` resolve to this adapter, whether or not medbench.models registers
    them yet; restored after each test so other tests see the real registry."""
    models = registry.model_registry()
    entries = {
        "hf:": registry.ModelEntry("hf:", "medbench.models.hf:from_spec", "Hugging Face model", prefix=True),
        "llama32med": registry.ModelEntry("llama32med", "medbench.models.hf:llama32med", "LLaMA32-Med"),
    }
    for name, entry in entries.items():
        if name not in models:
            monkeypatch.setitem(registry._MODELS, name, entry)


@pytest.fixture(scope="module")
def demo_requests() -> list[Request]:
    """Requests as the runner builds them, from the bundled demo set: VQA first, then captions (so that the
    adapter's per-max_new_tokens grouping keeps them in order); half keep their original image size."""
    picks = {"slake": 3, "vqa_rad": 2, "pathvqa": 2, "rocov2": 2}
    out: list[Request] = []
    for name, count in picks.items():
        task = registry.get_task(name)
        samples = task.load(locate(task, "test", data_dir=None, demo=True), "test", LoadOptions()).samples
        for s in samples[:count]:
            prompt = render_prompt("role", task.kind, s.question)
            size = 512 if len(out) % 2 == 0 else None
            out.append(Request(s.id, name, task.kind, prompt, s.question, s.image, size, MAX_NEW_TOKENS[task.kind]))
    return out


def run(model: Any, requests: list[Request], *, cut_at_eos: bool = True) -> tuple[list[str], list[list[int]]]:
    """Texts from ``generate`` (in request order) and the new token ids behind them, in the order the model
    generated them (up to the first end-of-sequence token; ``cut_at_eos=False``: every new position, the padding
    after it included)."""
    rows: list[list[int]] = []
    real = model.model.generate
    eos = model.generation.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos]) if cut_at_eos else set()

    def spy(**inputs: Any) -> Any:
        out = real(**inputs)
        for row in out[:, inputs["input_ids"].shape[1] :].tolist():
            cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            rows.append(row[:cut])
        return out

    model.model.generate = spy
    try:
        texts = model.generate(requests)
    finally:
        model.model.generate = real
    return texts, rows


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_1_and_8_give_identical_outputs(
    tiny_vlms: dict[str, tuple[Path, Path]], demo_requests: list[Request], family: str
) -> None:
    path = tiny_vlms[family][0]
    one = create(f"hf:{path}", batch_size="1")
    eight = create(f"hf:{path}", batch_size="8")
    assert one.uses_images and one.batch_size == 1 and eight.batch_size == 8
    texts1, ids1 = run(one, demo_requests)
    texts8, ids8 = run(eight, demo_requests)
    assert len(texts1) == len(demo_requests) and all(isinstance(t, str) for t in texts1)
    assert ids1 == ids8
    assert texts1 == texts8
    assert all(0 < len(row) <= MAX_NEW_TOKENS[r.kind] for row, r in zip(ids1, demo_requests, strict=True))
    # Greedy although the checkpoint's generation_config asks for sampling: a second pass is identical.
    assert run(eight, demo_requests)[1] == ids8


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_adapter_loads_and_changes_fingerprint_and_outputs(
    tiny_vlms: VLMs, demo_requests: list[Request], family: str
) -> None:
    path, adapter = tiny_vlms[family]
    base = create(f"hf:{path}")
    tuned = create(f"hf:{path}+lora:{adapter}")
    described = tuned.describe()["adapter"]
    assert described["path"] == str(adapter.resolve()) and len(described["digest"]["value"]) == 64
    assert described["digest"]["algorithm"] == "blake3"
    assert base.describe()["adapter"] is None
    assert tuned.fingerprint() != base.fingerprint()
    # The option form is the same model: same fingerprint.
    assert create(f"hf:{path}", adapter=str(adapter)).fingerprint() == tuned.fingerprint()
    requests = demo_requests[:3]
    assert run(tuned, requests)[1] != run(base, requests)[1]


def test_two_adapters_give_two_fingerprints(tiny_vlms: VLMs, tmp_path: Path) -> None:
    path, adapter = tiny_vlms["llava"]
    other = build_tiny_lora(path, tmp_path / "other", seed=7)
    first = create(f"hf:{path}+lora:{adapter}")
    second = create(f"hf:{path}+lora:{other}")
    assert first.describe()["adapter"]["digest"] != second.describe()["adapter"]["digest"]
    assert first.fingerprint() != second.fingerprint()


@pytest.mark.parametrize("family", FAMILIES)
def test_fingerprint_is_stable_across_loads(tiny_vlms: VLMs, family: str) -> None:
    path = tiny_vlms[family][0]
    first, second = create(f"hf:{path}"), create(f"hf:{path}")
    assert first.fingerprint() == second.fingerprint()
    info = first.describe()
    assert info["model"]["model_type"] == family and info["model"]["path"] == str(path.resolve())
    assert info["dtype"] == "float32" and info["device"] == "cpu"
    assert info["generation"]["do_sample"] is False and info["generation"]["max_new_tokens"]
    assert create(f"hf:{path}", dtype="bf16").fingerprint() != first.fingerprint()


def test_mismatched_adapter_names_both_models(tiny_vlms: VLMs) -> None:
    mllama = tiny_vlms["mllama"][0]
    qwen_adapter = tiny_vlms["qwen2_5_vl"][1]
    with pytest.raises(UsageError) as err:
        create(f"hf:{mllama}+lora:{qwen_adapter}")
    message = str(err.value)
    assert "qwen2_5_vl" in message and "mllama" in message and str(qwen_adapter) in message


def test_mismatched_adapter_without_recorded_base(
    tiny_vlms: VLMs, tmp_path: Path, demo_requests: list[Request]
) -> None:
    """No base recorded in adapter_config.json: peft creates the LoRA layers (the names q_proj, ... exist in
    both) but the weights do not match; that must be an error, not a silently half-loaded adapter. Only loading
    the weights shows it, which happens on the first generate (construction loads no weights)."""
    adapter = shutil.copytree(tiny_vlms["qwen2_5_vl"][1], tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    model = create(f"hf:{tiny_vlms['mllama'][0]}+lora:{adapter}")
    with pytest.raises(UsageError, match="does not fit the base model"):
        model.generate(demo_requests[:1])


def test_llama32med_requires_its_adapter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_vlms: VLMs) -> None:
    monkeypatch.delenv(hf.LLAMA32MED_ENV, raising=False)
    with pytest.raises(UsageError) as err:
        create("llama32med")
    assert "llama32med.adapter=" in str(err.value) and hf.LLAMA32MED_ENV in str(err.value)
    # With the variable set, the adapter is taken and the (uncached, offline) base model is what fails.
    monkeypatch.setenv(hf.LLAMA32MED_ENV, str(tiny_vlms["mllama"][1]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UsageError, match="not in the local Hugging Face cache"):
        create("llama32med")


def test_uncached_hub_id_offline_says_how_to_fetch_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UsageError) as err:
        create("hf:medbench-tests/not-cached")
    message = str(err.value)
    assert "not in the local Hugging Face cache" in message
    assert "huggingface-cli download medbench-tests/not-cached" in message and "hf:/" in message


def test_cached_hub_model_records_its_commit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_vlms: VLMs) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--medbench-tests--tiny-llava"
    shutil.copytree(tiny_vlms["llava"][0], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    info = create("hf:medbench-tests/tiny-llava").describe()["model"]
    assert info["revision"] == commit and info["path"] is None and info["id"] == "medbench-tests/tiny-llava"


def test_qwen_in_the_hub_layout_loads_without_torchvision(
    tiny_vlms: VLMs, tmp_path: Path, demo_requests: list[Request]
) -> None:
    """Qwen/Qwen2.5-VL-7B-Instruct ships preprocessor_config.json + chat_template.json and names the stock
    processor, which transformers cannot build without torchvision: the image-only fallback must take over."""
    path = to_hub_layout(shutil.copytree(tiny_vlms["qwen2_5_vl"][0], tmp_path / "qwen"))
    model = create(f"hf:{path}")
    assert run(model, demo_requests[:2])[1] == run(create(f"hf:{tiny_vlms['qwen2_5_vl'][0]}"), demo_requests[:2])[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_defaults_to_bf16(tiny_vlms: VLMs, demo_requests: list[Request]) -> None:
    model = registry.create_model(f"hf:{tiny_vlms['llava'][0]}")
    info = model.describe()
    assert info["device"] == "cuda" and info["dtype"] in ("bfloat16", "float16") and model.batch_size == 16
    assert all(isinstance(t, str) for t in model.generate(demo_requests[:3]))


def test_options_are_checked(tiny_vlms: VLMs, tmp_path: Path) -> None:
    path = tiny_vlms["llava"][0]
    for options, match in [
        ({"temperature": "0.7"}, "unknown option"),
        ({"batch_size": "0"}, "batch_size must be a positive integer"),
        ({"dtype": "int3"}, "dtype must be"),
        ({"device": "tpu"}, "device must be"),
        ({"adapter": "a", "lora": "b"}, "different adapters"),
        ({"revision": "main"}, "revision applies to hub ids"),
    ]:
        with pytest.raises(UsageError, match=match):
            create(f"hf:{path}", **options)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(UsageError, match="'bert' is not an image-text-to-text model"):
        create(f"hf:{tmp_path}")
    with pytest.raises(UsageError, match=r"no config\.json"):
        create(f"hf:{tmp_path / 'missing'}")
    model = create(f"hf:{path}", max_new_tokens="3", batch_size="auto")
    assert model.batch_size == 4 and model.describe()["generation"]["max_new_tokens"] == {"vqa": 3, "caption": 3}


@pytest.fixture
def llava(tiny_vlms: VLMs) -> Iterator[Any]:
    yield create(f"hf:{tiny_vlms['llava'][0]}", batch_size="8")


def test_out_of_memory_halves_the_batch(
    llava: Any, demo_requests: list[Request], caplog: pytest.LogCaptureFixture
) -> None:
    expected = llava.generate(demo_requests)
    real = llava.model.generate

    def small_gpu(**inputs: Any) -> Any:
        if inputs["input_ids"].shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(**inputs)

    llava.model.generate = small_gpu
    with caplog.at_level(logging.WARNING, logger="medbench.models.hf"):
        assert llava.generate(demo_requests) == expected
    # The 7 VQA requests: 7 -> 3 (fits); the batch size stays 3 for what follows.
    assert llava.batch_size == 3 and "out of memory at batch size 7; retrying at 3" in caplog.text

    def no_gpu(**inputs: Any) -> Any:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    llava.model.generate = no_gpu
    with pytest.raises(UsageError, match="out of memory generating a single request"):
        llava.generate(demo_requests[:1])


def test_empty_generation_is_an_empty_string(llava: Any, demo_requests: list[Request]) -> None:
    eos = llava.generation.eos_token_id

    def only_eos(**inputs: Any) -> Any:
        ids = inputs["input_ids"]
        return torch.cat([ids, torch.full((ids.shape[0], 1), eos)], dim=1)

    llava.model.generate = only_eos
    assert llava.generate(demo_requests[:2]) == ["", ""]


def test_the_adapter_counts_the_tokens_it_generates(tiny_vlms: VLMs, demo_requests: list[Request]) -> None:
    # The runner's new tokens/s: generated tokens, not the padding after a sequence ended.
    model = create(f"hf:{tiny_vlms['llava'][0]}", batch_size="8")
    assert model.new_tokens == 0
    _, ids = run(model, demo_requests)
    pad = model.generation.pad_token_id
    assert model.new_tokens == sum(sum(1 for t in row if t != pad) for row in ids) > 0


def test_quant_is_checked_refused_without_cuda_and_recorded(tiny_vlms: VLMs) -> None:
    path = tiny_vlms["mllama"][0]
    with pytest.raises(UsageError, match="quant must be none, nf4, fp4"):
        create(f"hf:{path}", quant="int3")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="needs a CUDA GPU"):
            create(f"hf:{path}", quant="nf4")
    assert create(f"hf:{path}").describe()["quantization"] is None
