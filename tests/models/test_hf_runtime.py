"""medbench.models.hf_runtime, the runtime the HF adapter, the local judge and the training recipe share (medbench
issue 10, item 4): device/dtype policy, out-of-memory batching, memory release, greedy decoding settings, the
chat every family gets, and the adapter no longer importing the runner or other modules' private names."""

from __future__ import annotations

import ast
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from PIL import Image

from medbench.errors import UsageError
from medbench.models import hf, hf_runtime
from medbench.testing import build_tiny_models

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_vlms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """The session's shared tiny models (built once, with test_hf.py and test_testing.py)."""
    return build_tiny_models(tmp_path_factory.getbasetemp() / "tiny_vlms", reuse=True)


# -- out of memory ------------------------------------------------------------------------------------------------
def oom() -> BaseException:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_is_oom() -> None:
    assert hf_runtime.is_oom(oom())
    assert hf_runtime.is_oom(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not hf_runtime.is_oom(RuntimeError("shape mismatch"))
    assert not hf_runtime.is_oom(ValueError("out of memory"))  # only runtime errors carry it as text


class Runner:
    """A batch function that runs out of memory above ``fits`` items and records every batch it is given."""

    def __init__(self, fits: int, broken: frozenset[int] = frozenset()) -> None:
        self.fits, self.broken, self.batches = fits, broken, []

    def __call__(self, batch: list[int]) -> list[str]:
        self.batches.append(list(batch))
        if len(batch) > self.fits:
            raise oom()
        if self.broken & set(batch):
            raise ValueError(f"cannot do {sorted(self.broken & set(batch))}")
        return [f"out{i}" for i in batch]


@pytest.fixture
def releases(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(hf_runtime, "release_memory", lambda: calls.append(1))
    return calls


def test_batches_are_halved_on_out_of_memory_and_the_size_kept(
    releases: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    run = Runner(fits=2)
    with caplog.at_level(logging.WARNING):
        results, size = hf_runtime.run_in_batches(list(range(9)), run, 8, label="model m")
    assert results == [f"out{i}" for i in range(9)] and size == 2
    assert [len(b) for b in run.batches] == [8, 4, 2, 2, 2, 2, 1]
    assert "model m: out of memory at batch size 8; retrying at 4" in caplog.text
    assert "model m: out of memory at batch size 4; retrying at 2" in caplog.text
    assert len(releases) == 2  # freed before each retry
    # What fits is not halved; a short last batch is not taken for the batch size.
    results, size = hf_runtime.run_in_batches(list(range(5)), Runner(fits=4), 4, label="m")
    assert size == 4 and len(results) == 5


def test_what_cannot_be_retried_propagates_or_goes_to_on_failure(releases: list[int]) -> None:
    with pytest.raises(torch.cuda.OutOfMemoryError):  # a single item that does not fit
        hf_runtime.run_in_batches([1, 2], Runner(fits=0), 2, label="m")
    run = Runner(fits=8, broken=frozenset({3}))
    with pytest.raises(ValueError, match=r"cannot do \[3\]"):  # other errors: at once, no retry
        hf_runtime.run_in_batches([1, 2, 3, 4], run, 4, label="m")
    assert len(run.batches) == 1
    seen: list[tuple[list[int], str]] = []

    def failed(batch: list[int], exc: Exception) -> list[str]:
        seen.append((batch, type(exc).__name__))
        return ["failed"] * len(batch)

    results, size = hf_runtime.run_in_batches(
        [1, 2, 3, 4, 5], Runner(2, frozenset({3})), 2, label="m", on_failure=failed
    )
    assert results == ["out1", "out2", "failed", "failed", "out5"] and size == 2
    assert seen == [([3, 4], "ValueError")]
    results, _ = hf_runtime.run_in_batches([1, 2], Runner(fits=0), 2, label="m", on_failure=failed)
    assert results == ["failed", "failed"] and seen[1:] == [([1], "OutOfMemoryError"), ([2], "OutOfMemoryError")]


def test_a_batch_function_giving_the_wrong_number_of_results_is_an_error() -> None:
    with pytest.raises(ValueError, match="a batch of 2 gave 1 results"):
        hf_runtime.run_in_batches([1, 2], lambda batch: ["one"], 2, label="m")


def test_release_memory_collects_then_empties_the_cuda_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(hf_runtime.gc, "collect", lambda: calls.append("collect"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    hf_runtime.release_memory()
    assert calls == ["collect", "empty_cache"]


# -- device and dtype ---------------------------------------------------------------------------------------------
@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A pretend CUDA machine (GPU 0 current, bf16 supported), without touching a real GPU."""
    state = SimpleNamespace(bf16=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: state.bf16)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return state


def test_auto_is_bf16_on_cuda_fp16_without_bf16_and_each_rank_its_gpu(
    gpu: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert hf_runtime.device_and_dtype() == (torch.bfloat16, "cuda:0")
    assert hf_runtime.device_and_dtype("cuda:1", "float32") == (torch.float32, "cuda:1")
    gpu.bf16 = False
    assert hf_runtime.device_and_dtype("cuda") == (torch.float16, "cuda:0")
    monkeypatch.setenv("LOCAL_RANK", "3")  # under torchrun
    assert hf_runtime.device_and_dtype("auto", "bfloat16") == (torch.bfloat16, "cuda:3")
    assert hf_runtime.device_and_dtype("cpu") == (torch.float32, "cpu")


def test_auto_is_fp32_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert hf_runtime.device_and_dtype() == (torch.float32, "cpu")
    assert hf_runtime.device_and_dtype("cpu", "bfloat16") == (torch.bfloat16, "cpu")
    with pytest.raises(UsageError, match="device cuda:0 asked for, but torch sees no CUDA GPU"):
        hf_runtime.device_and_dtype("cuda:0")
    assert hf_runtime.device_map("cpu") is None and hf_runtime.device_map("cuda:1") == {"": "cuda:1"}
    assert hf_runtime.dtype_name(torch.bfloat16) == "bfloat16"


def test_option_values_are_checked() -> None:
    assert [hf_runtime.check_dtype("m", v) for v in ("BF16", "half", "float", None, "auto")] == [
        "bfloat16",
        "float16",
        "float32",
        "auto",
        "auto",
    ]
    with pytest.raises(UsageError, match=r"model m: dtype must be auto, bf16, .*; got 'int8'"):
        hf_runtime.check_dtype("m", "int8")
    assert [hf_runtime.check_device("m", v) for v in ("cuda:2", "mps", "", None)] == ["cuda:2", "mps", "auto", "auto"]
    with pytest.raises(UsageError, match="model m: device must be auto, cpu, mps, cuda or cuda:N; got 'gpu'"):
        hf_runtime.check_device("m", "gpu")
    assert hf_runtime.positive_int("m", "batch_size", "3") == 3
    with pytest.raises(UsageError, match="model m: batch_size must be a positive integer, got 'x'"):
        hf_runtime.positive_int("m", "batch_size", "x")


# -- decoding and inputs ------------------------------------------------------------------------------------------
def test_greedy_config_keeps_only_the_checkpoints_token_ids() -> None:
    from transformers import GenerationConfig

    sampling = GenerationConfig(
        do_sample=True, temperature=0.6, top_p=0.9, repetition_penalty=1.05, bos_token_id=1, eos_token_id=[2, 3]
    )
    tokenizer = SimpleNamespace(eos_token_id=9, pad_token_id=7)
    config = hf_runtime.greedy_generation_config(sampling, tokenizer, max_new_tokens=12)
    assert (config.do_sample, config.num_beams, config.max_new_tokens) == (False, 1, 12)
    unset = GenerationConfig()  # none of the checkpoint's sampling settings is carried over
    assert (config.temperature, config.top_p, config.repetition_penalty) == (
        unset.temperature,
        unset.top_p,
        unset.repetition_penalty,
    )
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, [2, 3], 7)  # pad: the tokenizer's
    padded = GenerationConfig(pad_token_id=4)
    assert hf_runtime.greedy_generation_config(padded, tokenizer).pad_token_id == 4
    assert hf_runtime.greedy_generation_config(padded, tokenizer, pad_token_id=5).pad_token_id == 5
    assert hf_runtime.greedy_generation_config(padded, tokenizer).eos_token_id == 9


def test_left_padded_pads_on_the_left_with_eos_when_there_is_no_pad_token() -> None:
    tokenizer = SimpleNamespace(padding_side="right", pad_token=None, pad_token_id=None, eos_token="</s>")
    assert hf_runtime.left_padded(tokenizer) is tokenizer
    assert (tokenizer.padding_side, tokenizer.pad_token) == ("left", "</s>")
    own = SimpleNamespace(padding_side="right", pad_token="<pad>", pad_token_id=0, eos_token="</s>")
    assert hf_runtime.left_padded(own).pad_token == "<pad>"


#: The prompt each family's chat template makes of medbench's conversation (the tiny models' templates follow
#: the real checkpoints'): the image first, then the text, in one user turn, then the assistant's turn opened.
RENDERED = {
    "mllama": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>What is shown?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "qwen2_5_vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>What is shown?<|im_end|>\n<|im_start|>assistant\n",
    "gemma3": "<bos><start_of_turn>user\n<start_of_image>What is shown?<end_of_turn>\n<start_of_turn>model\n",
    "llava": "USER: <image>\nWhat is shown? ASSISTANT:",
}


@pytest.mark.parametrize("family", sorted(RENDERED))
def test_the_conversation_each_family_gets(tiny_vlms: dict[str, tuple[Path, Path]], family: str) -> None:
    processor = hf_runtime.load_processor(tiny_vlms[family][0], family)
    image = Image.new("RGB", (40, 30), "gray")
    chat = hf_runtime.conversation(image, "What is shown?")
    assert chat == [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is shown?"}]}
    ]
    assert processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == RENDERED[family]
    batch = hf_runtime.batch_inputs(processor, [image, image], ["short", "a much longer prompt than the first"])
    mask = batch["attention_mask"].tolist()
    assert mask[0][0] == 0 and mask[0][-1] == mask[1][0] == 1  # left-padded: every prompt ends at the last column
    assert batch["input_ids"][0, -3:].tolist() == batch["input_ids"][1, -3:].tolist()  # the assistant turn's opening


# -- what the modules import --------------------------------------------------------------------------------------
def test_the_adapter_does_not_import_the_runner(
    tiny_vlms: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Guards the import circle runner -> models -> runner: describe() imported medbench.runner for its
    # MAX_NEW_TOKENS and, where that failed, recorded "per request" instead of the numbers (now from schema).
    monkeypatch.setitem(sys.modules, "medbench.runner", None)  # any import of it now raises ImportError
    model = hf.HFModel("m", str(tiny_vlms["llava"][0]), device="cpu")
    assert model.describe()["generation"]["max_new_tokens"] == {"vqa": 32, "caption": 256}


def private_imports(path: Path) -> list[str]:
    """``from medbench.x import _y`` names in ``path``: another module's private names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medbench")
        for alias in node.names
        if alias.name.startswith("_")
    ]


def test_no_private_names_cross_the_runtime_modules() -> None:
    # Guards the old `from medbench.models.hf import _is_oom, _torch_settings` in judges/local.py.
    found = {
        name: private_imports(ROOT / name)
        for name in (
            "harness/models/hf.py",
            "harness/models/hf_runtime.py",
            "harness/models/hf_families.py",
            "harness/scoring/bertscore.py",
            "judges/local.py",
        )
    }
    assert found == {name: [] for name in found}


def test_one_loader_passes_a_4bit_config_and_names_what_went_wrong(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The hf: adapter's quant option and the training recipe's QLoRA share this loader (and its config).
    import torch
    from transformers import AutoModelForImageTextToText

    config = hf_runtime.four_bit("nf4", True, torch.bfloat16)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    seen: dict[str, Any] = {}

    def fake(path: Any, **kwargs: Any) -> str:
        seen.update(kwargs)
        return "model"

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", fake)
    got = hf_runtime.load_model(
        tmp_path, label="m", model_type="mllama", dtype=torch.bfloat16, device="cuda:0", quantization=config
    )
    assert got == "model" and seen["quantization_config"] is config and seen["device_map"] == {"": "cuda:0"}

    def missing(path: Any, **kwargs: Any) -> str:
        raise ImportError("Using `bitsandbytes` 4-bit quantization requires the latest version of bitsandbytes")

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", missing)
    with pytest.raises(UsageError, match=r"m: .*bitsandbytes.*pip install"):
        hf_runtime.load_model(
            tmp_path, label="m", model_type="mllama", dtype=torch.bfloat16, device="cpu", quantization=config
        )
