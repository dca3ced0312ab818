"""The training recipe (medbench issue 13): `medbench train debug` end to end on a tiny Mllama, a run killed with
SIGKILL resuming to the same adapter, a real learning signal that `medbench run` then scores, the adapter's
save/load round trip, gradient checkpointing reaching the vision encoder, and the refusals (QLoRA on a CPU, a
wrong base, another config's output). Everything runs on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

import torch
from peft import get_peft_model
from peft.utils import get_peft_model_state_dict, load_peft_weights

from medbench.cli import main
from medbench.errors import UsageError
from medbench.models.hf import from_spec
from medbench.models.hf_runtime import load_processor
from medbench.testing.vlms import build_tiny_model
from medbench.training import recipe
from medbench.training.cli import normalise_argv
from medbench.training.collate import Collator
from medbench.training.config import TrainConfig
from medbench.training.data import load_examples
from medbench.training.presets import lora_config
from medbench.training.runcard import tensors_digest

CARD_FIELDS = {
    "config",
    "config_sha256",
    "base",
    "adapter",
    "trainable",
    "gradient_checkpointing",
    "data",
    "optimisation",
    "loss_curve",
    "resumed_at_steps",
    "memory",
    "throughput",
    "environment",
}


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`medbench train debug` run to completion in this process (the reference for the resume test)."""
    out = tmp_path_factory.mktemp("train-debug")
    assert main(["train", "debug", "--output", str(out)]) == 0
    return out


def card(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "run_card.json").read_text())


def test_debug_trains_stage1_then_stage2_continuing_it(debug_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = debug_run / "base"
    assert (base / "config.json").is_file() and (base / "model.safetensors").is_file()
    cards = {}
    for stage in ("stage1", "stage2"):
        folder = debug_run / stage
        assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
        assert not list(folder.glob("*checkpoint-*"))  # a finished run keeps no checkpoints
        cards[stage] = c = card(folder)
        assert set(c) >= CARD_FIELDS
        assert c["memory"] == {"peak_allocated_gib": None, "peak_reserved_gib": None}  # CPU
        assert c["throughput"]["samples_per_s"] > 0 and c["throughput"]["tokens_per_s"] > 0
        assert len(c["loss_curve"]) == c["optimisation"]["steps"] > 0
        assert c["environment"]["versions"]["torch"] and "commit" in c["environment"]["git"]
        trainable = c["trainable"]["per_component"]  # the paper preset: vision + language, no projector
        assert trainable["vision"] > 0 and trainable["language"] > 0 and trainable["projector"] == 0
        assert all(info["data"]["checksum"] for info in c["data"]["tasks"].values())
        # The evaluation reads the base from the adapter: recorded as the absolute folder it was trained on.
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    assert set(cards["stage2"]["data"]["tasks"]) == {"slake", "vqa_rad", "pathvqa"}
    # Stage 2 continued stage 1: its initial tensors are stage 1's saved final ones.
    saved_stage1 = tensors_digest(load_peft_weights(str(debug_run / "stage1"), device="cpu"))
    assert cards["stage2"]["adapter"]["init"] == str(debug_run / "stage1") and cards["stage2"]["adapter"]["continued"]
    assert cards["stage2"]["adapter"]["initial_sha256"] == cards["stage1"]["adapter"]["final_sha256"] == saved_stage1
    assert cards["stage1"]["adapter"]["initial_sha256"] != saved_stage1  # stage 1 itself trained
    # The same command again: both stages are finished, nothing is retrained.
    capsys.readouterr()
    assert main(["train", "debug", "--output", str(debug_run)]) == 0
    assert capsys.readouterr().err.count("nothing to do") == 2
    assert card(debug_run / "stage2")["finished_at"] == cards["stage2"]["finished_at"]


#: Runs ``medbench`` with :func:`medbench.training.checkpoint.save` patched to stop the process (SIGSTOP) right
#: after stage 2's first checkpoint is in place, so that the test kills it exactly there, whatever the machine's speed.
STOP_AFTER_A_STAGE2_CHECKPOINT = """
import os, signal, sys
from medbench.training import checkpoint
save = checkpoint.save
def save_then_stop(output, *args):
    path = save(output, *args)
    if output.name == "stage2":
        os.kill(os.getpid(), signal.SIGSTOP)
    return path
checkpoint.save = save_then_stop
from medbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_killed_with_sigkill_resumes_to_the_same_adapter(
    debug_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Guards resume: weights, optimiser, scheduler, random states and the data position all come back.
    out = tmp_path / "killed"
    log = tmp_path / "killed.log"
    with log.open("w") as stderr:
        command = [sys.executable, "-c", STOP_AFTER_A_STAGE2_CHECKPOINT, "train", "debug", "--output", str(out)]
        job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            _, status = os.waitpid(job.pid, os.WUNTRACED)  # until it stops itself (or ends: a failure)
            assert os.WIFSTOPPED(status), f"the run ended before its checkpoint: {log.read_text()[-3000:]}"
            # Stage 2's first checkpoint is mid-epoch (after 2 of its 3 steps), with 2 micro-batches per step.
            assert [p.name for p in (out / "stage2").glob("checkpoint-*")] == ["checkpoint-000002"]
        finally:
            job.send_signal(signal.SIGKILL)
            job.wait()
    assert job.returncode == -signal.SIGKILL
    assert not (out / "stage2" / "run_card.json").exists()
    capsys.readouterr()
    assert main(["train", "debug", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "debug-stage2: resuming from checkpoint step" in err and "debug-stage1" in err
    for stage in ("stage1", "stage2"):
        want = load_peft_weights(str(debug_run / stage), device="cpu")
        got = load_peft_weights(str(out / stage), device="cpu")
        assert set(got) == set(want)
        assert max(float((got[k] - want[k]).abs().max()) for k in want) <= 1e-6
    resumed, uninterrupted = card(out / "stage2"), card(debug_run / "stage2")
    assert resumed["resumed_at_steps"] and not uninterrupted["resumed_at_steps"]
    assert [p["loss"] for p in resumed["loss_curve"]] == pytest.approx(
        [p["loss"] for p in uninterrupted["loss_curve"]], abs=1e-6
    )


def test_overfitting_a_few_samples_learns_them_and_medbench_run_scores_it(debug_run: Path, tmp_path: Path) -> None:
    # The first 4 VQA-RAD demo test questions (answers X-ray, No, Yes, Yes), trained at evaluation's image size.
    base = debug_run / "base"
    config = TrainConfig.load(
        "stage2",
        [
            f"base={base}",
            "init_adapter=none",
            "data.demo=true",
            "data.tasks=vqa_rad",
            "data.split=test",
            "data.limit=4",
            "lora.rank=16",
            "lora.alpha=32",
            "lora.dropout=0",
            "optim.lr=5e-3",
            "optim.epochs=40",
            "optim.batch_size=4",
            "optim.grad_accum=1",
            "optim.warmup_ratio=0",
            "optim.scheduler=constant",
            "gradient_checkpointing=false",
            "checkpoint_every=1000",
        ],
    )
    adapter = recipe.train(config, tmp_path / "adapter")
    losses = [p["loss"] for p in card(adapter)["loss_curve"]]
    assert losses[-1] < losses[0] - 0.5 and losses[-1] == min(losses[-5:])  # falls, and is still falling or flat
    models = f"hf:{base},hf:{base}+lora:{adapter}"
    run = tmp_path / "run"
    args = ["run", "--demo", "--models", models, "--tasks", "vqa_rad", "--limit", "4", "--no-cache"]
    assert main([*args, "--output", str(run)]) == 0
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    trained = metrics[f"hf:{base}+lora:{adapter}"]["vqa_rad"]["strict"]["overall_accuracy"]
    untrained = metrics[f"hf:{base}"]["vqa_rad"]["strict"]["overall_accuracy"]
    assert trained["n"] == untrained["n"] == 4
    assert trained["value"] == 1.0 > untrained["value"]


def test_the_adapter_round_trips_through_save_and_load(debug_run: Path) -> None:
    # What the recipe had in memory when it saved (the run card's final digest) is what the evaluation loads.
    adapter = debug_run / "stage2"
    model = from_spec(f"hf:{debug_run / 'base'}+lora:{adapter}")
    loaded = get_peft_model_state_dict(model.model)  # type: ignore[attr-defined]
    assert tensors_digest(loaded) == card(adapter)["adapter"]["final_sha256"]
    assert tensors_digest(load_peft_weights(str(adapter), device="cpu")) == card(adapter)["adapter"]["final_sha256"]


def test_an_adapter_is_refused_on_a_base_it_was_not_trained_on(debug_run: Path, tmp_path: Path) -> None:
    qwen = build_tiny_model("qwen2_5_vl", tmp_path / "qwen")
    with pytest.raises(UsageError, match=r"trained on .*base \(mllama\) and does not fit the base model"):
        from_spec(f"hf:{qwen}+lora:{debug_run / 'stage1'}")
    # Continuing it in training onto another base (here, of the same family) is refused by the recipe.
    other = build_tiny_model("mllama", tmp_path / "other-mllama", seed=7)
    config = TrainConfig.load(
        "stage2", [f"base={other}", f"init_adapter={debug_run / 'stage1'}", "data.demo=true", "data.limit=1"]
    )
    with pytest.raises(UsageError, match=f"was trained on {debug_run / 'base'}, not on this run's base"):
        recipe.train(config, tmp_path / "stage2")


def test_another_config_or_a_missing_stage1_is_refused(debug_run: Path, tmp_path: Path) -> None:
    stage1 = recipe.debug_configs(debug_run / "base")["stage1"]
    changed = TrainConfig.load("stage1", [f"base={debug_run / 'base'}", "data.demo=true"])
    assert changed.sha256() != stage1.sha256()
    with pytest.raises(UsageError, match="holds a finished adapter of another training config"):
        recipe.train(changed, debug_run / "stage1")
    lonely = TrainConfig.load("stage2", [f"base={debug_run / 'base'}", "data.demo=true", "data.limit=1"])
    with pytest.raises(UsageError, match="no finished stage-1 adapter in"):
        recipe.train(lonely, tmp_path / "runs" / "stage2")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a CUDA GPU")
def test_qlora_is_refused_on_a_machine_without_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError, match="bitsandbytes, which needs a CUDA GPU, and torch sees none here"):
        recipe.train(TrainConfig.load("stage1-qlora"), tmp_path / "q")
    # Through the command line, spelled as the issue has it (no `run`): exit 2 with the message, no traceback.
    assert main(["train", "stage1-qlora", "--output", str(tmp_path / "q")]) == 2
    assert "quant.enabled=false" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_train_config_is_train_run_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert normalise_argv(["train", "stage1", "optim.lr=1e-4"]) == ["train", "run", "stage1", "optim.lr=1e-4"]
    assert normalise_argv(["train", "--output", "x", "s.toml"]) == ["train", "run", "--output", "x", "s.toml"]
    for kept in (["train", "debug"], ["train", "show-config", "stage1"], ["train", "-h"], ["train"], ["run", "x"]):
        assert normalise_argv(kept) == kept
    assert main(["train", "run", "debug"]) == 2  # two stages: `medbench train debug` runs them
    assert "medbench train debug" in capsys.readouterr().err


def _layer_calls(model: Any) -> dict[str, int]:
    """A counter of forward calls of every vision and language layer's MLP (inside the checkpointed layer: a
    recomputed layer runs it twice per training step)."""
    calls: dict[str, int] = {}
    for name, module in model.named_modules():
        if name.endswith(".mlp") and ("vision_model" in name or "language_model" in name):
            calls[name] = 0
            # A pre-hook: the recompute stops as soon as it has what the backward needs, before the MLP returns.
            module.register_forward_pre_hook(lambda mod, args, name=name: calls.__setitem__(name, calls[name] + 1))
    return calls


@pytest.mark.parametrize("checkpointing", [True, False])
def test_gradient_checkpointing_reaches_the_vision_encoder(debug_run: Path, checkpointing: bool) -> None:
    # Guards the trap: transformers checkpoints Mllama's language layers but not its vision encoder layers.
    from transformers import AutoModelForImageTextToText

    base = debug_run / "base"
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    if checkpointing:
        layers = recipe.enable_checkpointing(model, "mllama")
        assert layers["vision"] == 3 and layers["language"] == 2  # 2 local + 1 global encoder layers; 2 decoder
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in 5.x
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(model, lora_config("mllama", "paper", 4))
    model.train()
    calls = _layer_calls(model)
    assert sum("vision_model" in n for n in calls) == 3 and sum("language_model" in n for n in calls) == 2
    config = TrainConfig.load("stage2", ["data.demo=true", "data.limit=1", "data.tasks=slake"])
    collator = Collator(load_processor(base, "mllama"), "mllama", 256, 64)
    batch = collator(load_examples(config).examples)
    recipe.loss_sum(model, batch, "cpu").backward()
    assert calls == dict.fromkeys(calls, 2 if checkpointing else 1)


def test_examples_the_collator_refuses_are_skipped_and_counted(debug_run: Path, tmp_path: Path) -> None:
    # The demo prompts run from under 80 tokens to over it (image token included): some, not all, are refused.
    short = TrainConfig.load(
        "stage2",
        [
            f"base={debug_run / 'base'}",
            "init_adapter=none",
            "data.demo=true",
            "data.limit=2",
            "data.max_length=80",
            "data.image_size=64",
            "optim.epochs=1",
            "lora.rank=4",
            "lora.alpha=8",
        ],
    )
    c = card(recipe.train(short, tmp_path / "short"))
    refused = c["data"]["refused_by_collator"]
    assert 0 < refused["count"] < c["data"]["examples"] == c["data"]["trained"] + refused["count"]
    assert all("the prompt alone is" in r["reason"] for r in refused["examples"])


def test_the_loss_on_kept_logits_equals_the_loss_on_all_logits(debug_run: Path) -> None:
    # Guards logits_to_keep: only the positions predicting an answer token get logits, with the same loss.
    from transformers import AutoModelForImageTextToText

    base = debug_run / "base"
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    examples = load_examples(TrainConfig.load("stage2", ["data.demo=true", "data.limit=2"])).examples[:4]
    batch = Collator(load_processor(base, "mllama"), "mllama", 256, 64)(examples)  # answers at different positions
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
        everything = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), reduction="sum"
        )
        assert float(recipe.loss_sum(model, batch, "cpu")) == pytest.approx(float(everything), rel=1e-5)
