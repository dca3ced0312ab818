"""The Hugging Face adapter's identity and lifecycle (medbench issue 9, items 1, 2 and 3), on tiny offline models:

* the fingerprint follows the *content* of the weights and adapter files (a checkpoint rebuilt in place with new
  same-size weights is a new model), without re-reading unchanged files on the next run;
* creating a model checks its configuration and loads no weights (they load on the first generate, and
  ``release`` drops them);
* a ``batch_size`` assigned after creation is what ``generate`` batches by.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from medbench import filehash, registry
from medbench.errors import UsageError
from medbench.models.base import Model
from medbench.prompts import render_prompt
from medbench.schema import Request
from medbench.tasks.base import LoadOptions, locate
from medbench.testing import build_tiny_lora, build_tiny_model

FAMILY = "llava"


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """``hf:`` resolves to the adapter whether or not medbench.models registers it (as in test_hf.py)."""
    if "hf:" not in registry.model_registry():
        entry = registry.ModelEntry("hf:", "medbench.models.hf:from_spec", "Hugging Face model", prefix=True)
        monkeypatch.setitem(registry._MODELS, "hf:", entry)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model and its LoRA adapter, built once; tests that change files work on copies."""
    root = tmp_path_factory.mktemp("fingerprint_vlms")
    model = build_tiny_model(FAMILY, root / FAMILY)
    return model, build_tiny_lora(model, root / "lora")


@pytest.fixture
def copies(built: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    return shutil.copytree(built[0], tmp_path / "model"), shutil.copytree(built[1], tmp_path / "lora")


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash as if the checkpoint had been written an hour ago, so the digest cache trusts its timestamps
    (a file changed in the last seconds is always re-read: see tests/test_filehash.py)."""
    monkeypatch.setattr(filehash, "_clock_ns", lambda: time.time_ns() + 3600 * 10**9)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``AutoModelForImageTextToText.from_pretrained`` call (the weights being loaded)."""
    from transformers import AutoModelForImageTextToText

    seen: list[str] = []
    real = AutoModelForImageTextToText.from_pretrained

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", counting)
    return seen


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything loads or reads weights."""
    from transformers import AutoModelForImageTextToText

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("weights touched")

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", refuse)
    monkeypatch.setattr(filehash, "_hash_file", refuse)


def create(name: str, **options: Any) -> Any:
    return registry.create_model(name, **{"device": "cpu", **options})


def vqa_requests(count: int) -> list[Request]:
    """``count`` VQA requests from the bundled demo sets, all with the same max_new_tokens (one generate group)."""
    out: list[Request] = []
    for name in ("slake", "vqa_rad", "pathvqa"):
        task = registry.get_task(name)
        for s in task.load(locate(task, "test", data_dir=None, demo=True), "test", LoadOptions()).samples:
            prompt = render_prompt("role", task.kind, s.question)
            out.append(Request(s.id, name, task.kind, prompt, s.question, s.image, 64, 4))
    assert len(out) >= count
    return out[:count]


def rebuild_same_size(model_dir: Path, seed: int) -> None:
    """Save new random weights into the same folder, as a fine-tuning run overwriting its output_dir does; the
    premise of the tests: only the weights' bytes change, not any file's name or size."""
    before = {p.name: (p.stat().st_size, p.read_bytes()) for p in model_dir.iterdir()}
    build_tiny_model(FAMILY, model_dir, seed=seed)
    after = {p.name: (p.stat().st_size, p.read_bytes()) for p in model_dir.iterdir()}
    assert {n: s for n, (s, _) in before.items()} == {n: s for n, (s, _) in after.items()}
    assert [n for n in before if before[n][1] != after[n][1]] == ["model.safetensors"]


# -- item 1: the fingerprint covers content -------------------------------------------------------------------
def test_same_size_weight_rewrite_changes_the_fingerprint(copies: tuple[Path, Path]) -> None:
    # Guards the bug: the old fingerprint took weight files by name and size, so this reused old outputs.
    model_dir = copies[0]
    first = create(f"hf:{model_dir}")
    rebuild_same_size(model_dir, seed=1)
    second = create(f"hf:{model_dir}")
    assert second.fingerprint() != first.fingerprint()
    old, new = first.describe()["model"]["weights_digest"], second.describe()["model"]["weights_digest"]
    assert old["algorithm"] == new["algorithm"] == "blake3" and old["value"] != new["value"]
    assert "weights_sha256" not in second.describe()["model"]  # the old field held no hash of the weights


def test_adapter_rewrite_changes_the_fingerprint(copies: tuple[Path, Path]) -> None:
    model_dir, adapter = copies
    first = create(f"hf:{model_dir}+lora:{adapter}")
    size = (adapter / "adapter_model.safetensors").stat().st_size
    build_tiny_lora(model_dir, adapter, seed=7)  # retrained in place
    assert (adapter / "adapter_model.safetensors").stat().st_size == size
    second = create(f"hf:{model_dir}+lora:{adapter}")
    assert second.describe()["adapter"]["digest"] != first.describe()["adapter"]["digest"]
    assert second.fingerprint() != first.fingerprint()


def test_unchanged_checkpoint_is_not_read_again(copies: tuple[Path, Path], reads: list[str], later: None) -> None:
    model_dir, adapter = copies
    first = create(f"hf:{model_dir}+lora:{adapter}")
    weights = os.path.realpath(model_dir / "model.safetensors")
    assert weights in reads
    del reads[:]
    assert create(f"hf:{model_dir}+lora:{adapter}").fingerprint() == first.fingerprint()
    assert reads == []  # a rerun on the unchanged checkpoint reads none of it
    os.utime(model_dir / "model.safetensors")  # touched: hashed again (same content, same fingerprint)
    assert create(f"hf:{model_dir}+lora:{adapter}").fingerprint() == first.fingerprint()
    assert reads == [weights]


def test_subfolders_count_and_trainer_leftovers_do_not(copies: tuple[Path, Path]) -> None:
    model_dir = copies[0]
    first = create(f"hf:{model_dir}").fingerprint()
    (model_dir / "checkpoint-500").mkdir()
    (model_dir / "checkpoint-500" / "optimizer.pt").write_bytes(b"state")
    (model_dir / "README.md").write_text("notes")
    assert create(f"hf:{model_dir}").fingerprint() == first
    (model_dir / "extra").mkdir()
    (model_dir / "extra" / "weights.safetensors").write_bytes(b"x")
    assert create(f"hf:{model_dir}").fingerprint() != first


def test_hub_snapshot_links_are_hashed_as_their_blobs(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub cache's layout: snapshots/<commit>/<file> are links into blobs/. The blob is the content."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--medbench-tests--tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    for i, path in enumerate(sorted(built[0].iterdir())):
        blob = shutil.copy(path, repo / "blobs" / f"blob{i}")
        (repo / "snapshots" / commit / path.name).symlink_to(Path("..", "..", "blobs", f"blob{i}"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    hub = create("hf:medbench-tests/tiny").describe()["model"]
    assert hub["revision"] == commit
    assert hub["weights_digest"] == create(f"hf:{built[0]}").describe()["model"]["weights_digest"]
    os.unlink(blob)  # an interrupted download: a dangling link
    with pytest.raises(UsageError, match="incomplete download"):
        create("hf:medbench-tests/tiny")


# -- item 2: configuration errors before any weights ----------------------------------------------------------
def test_creating_a_model_loads_no_weights(built: tuple[Path, Path], loads: list[str], later: None) -> None:
    model = create(f"hf:{built[0]}+lora:{built[1]}")
    assert loads == [] and not model.loaded
    info = model.describe()  # what the runner needs before generating: identity, without the weights
    assert info["model"]["architecture"] == "LlavaForConditionalGeneration" and model.fingerprint()
    assert loads == [] and not model.loaded


def test_missing_adapter_fails_before_touching_weights(
    built: tuple[Path, Path], tmp_path: Path, no_weights: None
) -> None:
    # Guards the report: the missing adapter was found only after loading the base model.
    with pytest.raises(UsageError, match=r"no adapter_config\.json"):
        create(f"hf:{built[0]}+lora:{tmp_path / 'missing'}")
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(built[1] / "adapter_config.json", config_only)
    with pytest.raises(UsageError, match=r"no weights \(adapter_model\.safetensors"):
        create(f"hf:{built[0]}+lora:{config_only}")
    with pytest.raises(UsageError, match="unknown option"):
        create(f"hf:{built[0]}", temperature="0")


def test_checkpoint_without_weights_is_a_usage_error(
    built: tuple[Path, Path], tmp_path: Path, no_weights: None
) -> None:
    # On the old code this surfaced as an OSError traceback from from_pretrained, after every task was loaded.
    folder = shutil.copytree(built[0], tmp_path / "saved", ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(UsageError) as err:
        create(f"hf:{folder}")
    message = str(err.value)
    assert str(folder.resolve()) in message and "no weights" in message and "model.safetensors" in message
    (folder / "checkpoint-500").mkdir()
    shutil.copy(built[0] / "model.safetensors", folder / "checkpoint-500")
    with pytest.raises(UsageError, match="pass one of checkpoint-500"):
        create(f"hf:{folder}")
    index = {"metadata": {}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors"}}
    index["weight_map"]["b.weight"] = "model-00002-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(built[0] / "model.safetensors", folder / "model-00001-of-00002.safetensors")
    with pytest.raises(UsageError, match=r"1 of the 2 weight shards .* missing \(model-00002-of-00002"):
        create(f"hf:{folder}")


def test_weights_load_on_first_generate_and_again_after_release(built: tuple[Path, Path], loads: list[str]) -> None:
    model = create(f"hf:{built[0]}+lora:{built[1]}")
    requests = vqa_requests(2)
    first = model.generate(requests)
    assert len(first) == 2 and all(isinstance(t, str) for t in first)
    assert model.generate(requests) == first and len(loads) == 1 and model.loaded
    model.release()
    assert not model.loaded
    assert model.generate(requests) == first and len(loads) == 2  # reloaded, same greedy outputs
    assert model.fingerprint() == create(f"hf:{built[0]}+lora:{built[1]}").fingerprint()


def test_out_of_memory_while_loading_is_a_usage_error(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading now happens inside generate: a model too big for the GPU must say so, not be taken for a batch
    too big and retried at smaller batch sizes."""
    import torch
    from transformers import AutoModelForImageTextToText

    calls: list[int] = []

    def too_big(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    model = create(f"hf:{built[0]}")
    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", too_big)
    with pytest.raises(UsageError, match="not enough memory on cpu to load the model in float32"):
        model.generate(vqa_requests(4))
    assert calls == [1]


def test_release_is_a_no_op_by_default() -> None:
    class Plain(Model):
        def generate(self, requests: Any) -> list[str]:
            return ["x" for _ in requests]

    plain = Plain("plain")
    plain.release()
    assert plain.generate([None]) == ["x"]


# -- item 3: --batch-size reaches generate -------------------------------------------------------------------
def test_batch_size_assigned_after_creation_is_one_call(built: tuple[Path, Path]) -> None:
    """The runner sets ``model.batch_size = N`` for ``--batch-size N``: a batch of 8 must be one generate call
    of 8 rows, not two of the CPU default 4. (Passes on the old code too: it guards the integrator's wiring.)"""
    model = create(f"hf:{built[0]}")
    assert model.batch_size == 4
    model.batch_size = 8
    rows: list[int] = []
    real = model.model.generate

    def spy(**inputs: Any) -> Any:
        rows.append(int(inputs["input_ids"].shape[0]))
        return real(**inputs)

    model.model.generate = spy
    assert len(model.generate(vqa_requests(8))) == 8
    assert rows == [8]


# -- end to end: a rebuilt checkpoint is not served from the prediction cache ----------------------------------
def medbench(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medbench.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


def counts(run_dir: Path) -> list[dict[str, Any]]:
    return [
        c for per_task in json.loads((run_dir / "run.json").read_text())["counts"].values() for c in per_task.values()
    ]


def test_cli_rerun_after_rebuilding_the_model_generates_again(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process (the command line's own code path; a subprocess would only add interpreter start-up).
    from medbench.cli import main

    model_dir = shutil.copytree(built[0], tmp_path / "model")
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "cache" / "predictions.sqlite"))
    args = ["run", "--demo", "--models", f"hf:{model_dir}", "--tasks", "slake"]

    def run(out: str) -> list[dict[str, Any]]:
        assert main([*args, "--output", str(tmp_path / out)]) == 0
        return counts(tmp_path / out)

    assert all(c["generated"] > 0 and c["cached"] == 0 for c in run("a"))
    assert all(c["generated"] == 0 and c["cached"] > 0 for c in run("b"))  # unchanged: served from the cache
    rebuild_same_size(model_dir, seed=1)
    assert all(c["generated"] > 0 and c["cached"] == 0 for c in run("c"))  # new weights: generated again
    digests = [
        next(iter(json.loads((tmp_path / out / "results.json").read_text())["models"].values()))["model"][
            "weights_digest"
        ]
        for out in ("a", "c")
    ]
    assert digests[0] != digests[1]
    assert (tmp_path / "cache" / filehash.CACHE_NAME).is_file()  # the digest cache sits by the prediction cache
