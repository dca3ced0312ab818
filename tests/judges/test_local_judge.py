"""``--judge hf:<path>``: the judge prompts through a local transformers model (a tiny scripted Llama built
offline), through the library API and the command line, with its own cache scope."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # scripted_model, registered below by module name

pytest.importorskip("transformers")

from medbench.cli import main
from medbench.judges.caption import judge_captions
from medbench.judges.local import LocalJudge
from medbench.registry import _MODELS, register_model
from medbench.testing import build_tiny_judge

SCORE_4 = "Reasoning: the same finding.\nScore: 4"


@pytest.fixture(autouse=True)
def _scripted_model() -> Iterator[None]:
    register_model("scripted", "scripted_model:ScriptedModel", "test model with scripted answers")
    yield
    _MODELS.pop("scripted", None)


@pytest.fixture(scope="module")
def score4_judge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_judge(tmp_path_factory.mktemp("judge") / "score4", SCORE_4)


def test_local_judge_batches_and_decodes_greedily(score4_judge: Path) -> None:
    judge = LocalJudge(str(score4_judge), batch_size=2)
    prompts = ["short", "a much longer prompt with many more words in it than the others", "x", "the ground truth"]
    replies = judge.complete_many(prompts)
    assert [r.text for r in replies] == [SCORE_4] * 4  # a sampling checkpoint, decoded greedily: always the same
    assert all(r.ok and r.server_model == f"hf:{score4_judge}" for r in replies)
    described = judge.describe()
    assert described["backend"] == "local-transformers" and described["chat_template"] is True
    assert described["temperature"] == 0.0 and described["architecture"] == "LlamaForCausalLM"
    assert judge.cache_scope == "local:" + described["weights_digest"]["value"][:16]
    judgements = judge_captions(judge, None, [("gt one", "gen one"), ("gt two", "gen two")])
    assert [j.value for j in judgements] == [4, 4]


def test_plain_prompts_without_a_chat_template_and_blank_replies_fail(tmp_path: Path) -> None:
    path = build_tiny_judge(tmp_path / "plain", '{"equivalent": true, "reason": "same"}', chat_template=False)
    judge = LocalJudge(str(path))
    # The prompt's last word is unknown to this vocabulary -> the scripted reply; "hello" is known -> </s> at once.
    ok, blank = judge.complete_many(["Model answer: 17mm", "hello"])
    assert ok.ok and ok.text == '{"equivalent": true, "reason": "same"}'
    assert not blank.ok and "blank completion" in (blank.error or "")


def _run(tmp_path: Path, name: str, judge: Path, tasks: str = "rocov2") -> dict[str, Any]:
    out = tmp_path / name
    argv = ["run", "--demo", "--models", "scripted", "--tasks", tasks, "--output", str(out), "--judge", f"hf:{judge}"]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())


def test_local_judge_through_the_command_line_with_its_own_cache_scope(tmp_path: Path) -> None:
    judge_dir = build_tiny_judge(tmp_path / "judge", SCORE_4)
    first = _run(tmp_path, "a", judge_dir)
    entry = first["metrics"]["scripted"]["rocov2"]["caption"]["judge_score"]
    assert (entry["value"], entry["ci95"], entry["n"]) == (4.0, [4.0, 4.0], 6)
    assert first["judge"]["backend"] == "local-transformers" and first["judge"]["model"] == f"hf:{judge_dir}"
    assert first["counts"]["scripted"]["rocov2"]["judge_requested"] == 6
    again = _run(tmp_path, "b", judge_dir)
    assert again["counts"]["scripted"]["rocov2"]["judge_cached"] == 6
    # Other weights at the same path are another judge: nothing is reused.
    build_tiny_judge(judge_dir, "Reasoning: different.\nScore: 2")
    third = _run(tmp_path, "c", judge_dir)
    assert third["counts"]["scripted"]["rocov2"]["judge_requested"] == 6
    assert third["metrics"]["scripted"]["rocov2"]["caption"]["judge_score"]["value"] == 2.0


def test_a_local_judge_that_answers_off_format_gives_failures_not_zeros(tmp_path: Path, score4_judge: Path) -> None:
    results = _run(tmp_path, "a", score4_judge, tasks="slake")  # a caption-score reply to equivalence prompts
    clinical = results["metrics"]["scripted"]["slake"]["clinical"]
    report = results["judge_agreement"]["scripted"]["slake"]
    assert report["failures"] == report["judged"] == 8 and clinical["judge_failure_rate"]["value"] == 1.0
    # Only the answers the synonym table or strict settle are scored; the rest are left out, not counted wrong.
    assert clinical["open_accuracy"]["n"] == 1 + 2 + 1  # transverse plane (strict), 2 x radiograph (table), empty
    rows = [json.loads(line) for line in (tmp_path / "a" / "predictions" / "scripted" / "slake.jsonl").open()]
    reasons = {r["judge"]["failure"] for r in rows if "judge" in r}
    assert reasons == {"parse failure: no JSON object in the reply"}


def test_out_of_memory_halves_the_batch_then_fails_only_that_prompt(
    score4_judge: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The judge batches through medbench.models.hf_runtime.run_in_batches, as the HF adapter does (it used to
    re-implement the halving, with its own message): a batch too big is retried at half its size."""
    import torch

    judge = LocalJudge(str(score4_judge), batch_size=4)
    real = judge._lm.generate
    rows: list[int] = []

    def small_gpu(**batch: Any) -> Any:
        rows.append(int(batch["input_ids"].shape[0]))
        if rows[-1] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(**batch)

    monkeypatch.setattr(judge._lm, "generate", small_gpu)
    with caplog.at_level(logging.WARNING):
        replies = judge.complete_many(["one", "two", "three", "four", "five"])
    assert [r.text for r in replies] == [SCORE_4] * 5
    assert rows == [4, 2, 2, 1]  # 4 fails; then 2, 2 and the last one at the size that fitted
    assert f"local judge hf:{score4_judge}: out of memory at batch size 4; retrying at 2" in caplog.text

    def no_gpu(**batch: Any) -> Any:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(judge._lm, "generate", no_gpu)
    failed = judge.complete_many(["one", "two"])
    assert [r.ok for r in failed] == [False, False]
    assert all("OutOfMemoryError: CUDA out of memory" in (r.error or "") for r in failed)


def test_an_error_without_a_message_is_a_failed_reply(score4_judge: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Guards a crash: the failure text took str(exc).splitlines()[0], an IndexError for an exception without text.
    judge = LocalJudge(str(score4_judge))

    def broken(**batch: Any) -> Any:
        raise RuntimeError()

    monkeypatch.setattr(judge._lm, "generate", broken)
    (reply,) = judge.complete_many(["one"])
    assert not reply.ok and reply.error == f"local judge hf:{score4_judge}: RuntimeError: "
