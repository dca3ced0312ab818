"""``medbench run --judge ...`` end to end against a local fake judge server: the caption judge on rocov2, the
equivalence judge on VQA open answers, failure accounting, the judge cache (a rerun makes zero calls), bounded
concurrency, and no key in any file a judged run writes."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_judge import FakeJudgeServer, Reply, field_of

pytest.importorskip("openai")

from medbench.cli import main
from medbench.registry import _MODELS, register_model

SECRET = "sk-deepseek-SECRET-feedc0ffee42"
JUDGE_ARGS = ("--judge", "deepseek", "--judge-max-retries", "1")


@pytest.fixture(autouse=True)
def _setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("DEEPSEEK_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    register_model("scripted", "scripted_model:ScriptedModel", "test model with scripted answers")
    yield
    _MODELS.pop("scripted", None)


def run(tmp_path: Path, name: str, server: FakeJudgeServer, *extra: str, tasks: str = "rocov2") -> dict[str, Any]:
    out = tmp_path / name
    argv = ["run", "--demo", "--models", "scripted", "--tasks", tasks, "--output", str(out)]
    argv += [*JUDGE_ARGS, "--judge-base-url", server.base_url, *extra]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())


def rows(tmp_path: Path, name: str, task: str) -> list[dict[str, Any]]:
    path = tmp_path / name / "predictions" / "scripted" / f"{task}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- the caption judge ------------------------------------------------------------------------------------------
def test_caption_judge_score_with_ci_and_a_rerun_makes_zero_judge_calls(tmp_path: Path) -> None:
    with FakeJudgeServer() as server:
        server.answer("Scripted caption of ROCOv2_2023_test_000001.", "Reasoning: close.\nScore: 5")
        first = run(tmp_path, "a", server)
        calls = server.calls
        assert calls == 6  # one per caption
        again = run(tmp_path, "b", server)
        assert server.calls == calls  # the rerun asked nothing
    caption = first["metrics"]["scripted"]["rocov2"]["caption"]
    entry = caption["judge_score"]
    assert entry["value"] == pytest.approx((5 + 4 * 5) / 6)
    assert entry["n"] == 6 and entry["scale"] == "1-5"
    lo, hi = entry["ci95"]
    assert 4.0 <= lo <= entry["value"] <= hi <= 5.0
    assert caption["judge_failures"]["value"] == 0 and caption["judge_failure_rate"]["value"] == 0.0
    assert again["metrics"]["scripted"]["rocov2"]["caption"]["judge_score"] == entry
    assert first["counts"]["scripted"]["rocov2"] | {} == {
        "n": 6,
        "generated": 6,
        "cached": 0,
        "skipped": 0,
        "generation_failed": 0,
        "empty_outputs": 0,
        "judged": 6,
        "judge_cached": 0,
        "judge_requested": 6,
        "judge_failures": 0,
    }
    counts_b = again["counts"]["scripted"]["rocov2"]
    assert (counts_b["generated"], counts_b["judge_cached"], counts_b["judge_requested"]) == (0, 6, 0)
    # The run records which judge, which served model, which prompt.
    judge = first["judge"]
    assert (judge["name"], judge["model"], judge["backend"]) == ("deepseek", "deepseek-chat", "openai-compatible")
    assert judge["base_url"] == server.base_url and judge["temperature"] == 0.0
    assert judge["server_models"] == ["fake-served-model-v1"]
    assert len(judge["templates"]["caption"]["sha256"]) == 64
    row = rows(tmp_path, "a", "rocov2")[0]
    assert row["judge"]["kind"] == "caption_score" and row["judge"]["score"] == 5
    assert row["judge"]["server_model"] == "fake-served-model-v1" and row["judge"]["judge_model"] == "deepseek-chat"
    assert row["judge"]["raw"].endswith("Score: 5") and row["scores"]["judge_score"] == 5
    assert rows(tmp_path, "b", "rocov2")[0]["judge"]["cached"] is True


def test_judge_failures_are_counted_and_excluded_not_zeros(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeJudgeServer() as server:
        server.on_prompt("ROCOv2_2023_test_000002.", Reply.error(500, retry_after="0"))
        server.answer("ROCOv2_2023_test_000003.", "Reasoning: great\nScore: 9")
        server.answer("ROCOv2_2023_test_000004.", "I cannot judge this.")
        server.answer("ROCOv2_2023_test_000005.", "Reasoning: poor.\nScore: 2")
        results = run(tmp_path, "a", server)
        caption = results["metrics"]["scripted"]["rocov2"]["caption"]
        assert caption["judge_score"]["value"] == pytest.approx((4 + 2 + 4) / 3)  # 1, 5, 6 scored
        assert caption["judge_score"]["n"] == 3
        assert caption["judge_failures"] == {"value": 3, "ci95": None, "n": 6}
        assert caption["judge_failure_rate"]["value"] == pytest.approx(0.5)
        failures = {r["id"][-1]: r["judge"]["failure"] for r in rows(tmp_path, "a", "rocov2")}
        assert "HTTP 500" in failures["2"] and "after 2 attempt(s)" in failures["2"]
        assert "outside 1-5" in failures["3"] and "no 'Score:' line" in failures["4"]
        assert failures["1"] is None and failures["5"] is None
        assert results["counts"]["scripted"]["rocov2"]["judge_failures"] == 3
        assert "warning: 3 of 6 judgements failed" in " ".join(capsys.readouterr().err.split())
        # Failures are not cached: once the judge behaves, only they are asked again.
        server._rules.clear()
        server.answers.clear()
        before = server.calls
        second = run(tmp_path, "b", server)
        assert server.calls == before + 3
        counts = second["counts"]["scripted"]["rocov2"]
        assert (counts["judge_cached"], counts["judge_requested"], counts["judge_failures"]) == (3, 3, 0)


def test_judge_concurrency_is_bounded(tmp_path: Path) -> None:
    with FakeJudgeServer(latency=0.1) as server:
        run(tmp_path, "a", server, "--judge-concurrency", "2")
        assert server.max_in_flight == 2 and server.calls == 6


# --- the equivalence judge -------------------------------------------------------------------------------------
EQUIVALENT = {("Both lungs", "in both lung fields"), ("X-Ray", "radiograph")}


def equivalence_responder(prompt: str) -> str:
    reference, answer = field_of(prompt, "Reference answer:"), field_of(prompt, "Model answer:")
    if answer == "transverse plane":  # a judge error on an exact match: clinical must keep it correct
        return '{"equivalent": false, "reason": "judge slip"}'
    same = (reference, answer) in EQUIVALENT or reference.lower() == answer.lower()
    return '```json\n{"equivalent": %s, "reason": "scripted"}\n```' % ("true" if same else "false")


def test_equivalence_judge_on_open_answers_and_its_agreement_with_strict(tmp_path: Path) -> None:
    with FakeJudgeServer(responder=equivalence_responder) as server:
        server.on_prompt("Model answer: scanner", Reply.error(503, retry_after="0"))
        results = run(tmp_path, "a", server, tasks="slake")
        calls = server.calls
        judged_rows = rows(tmp_path, "a", "slake")
        again = run(tmp_path, "b", server, tasks="slake")
        assert server.calls == calls + 2 * 2  # only the two failures are asked again (2 attempts each)
    # Closed questions and empty answers are never judged; every other open answer is.
    for row in judged_rows:
        if row["answer_type"] == "closed" or not row["answer"]:
            assert "judge" not in row
        else:
            assert row["judge"]["kind"] == "equivalence"
    report = results["judge_agreement"]["scripted"]["slake"]
    assert (report["open"], report["judged"], report["not_judged"], report["failures"]) == (9, 8, 1, 2)
    assert report["table"] == {"strict1_judge1": 0, "strict1_judge0": 1, "strict0_judge1": 3, "strict0_judge0": 2}
    assert report["agreement_with_strict"]["value"] == pytest.approx(2 / 6)
    assert report["agreement_with_strict"]["n"] == 6
    assert (report["clinical_added_by_table"], report["clinical_added_by_judge"]) == (2, 1)
    # kappa from the table: p_o = 2/6; strict marginals 1/6 and 5/6, judge marginals 3/6 and 3/6 -> p_e = 1/2
    assert report["kappa"] == pytest.approx((2 / 6 - 1 / 2) / (1 - 1 / 2))
    metrics = results["metrics"]["scripted"]["slake"]
    clinical, strict = metrics["clinical"], metrics["strict"]
    # clinical: the two judge failures are left out of the open accuracy, not counted wrong.
    assert clinical["open_accuracy"]["value"] == pytest.approx(4 / 7) and clinical["open_accuracy"]["n"] == 7
    assert strict["open_accuracy"]["value"] == pytest.approx(1 / 9) and strict["open_accuracy"]["n"] == 9
    assert clinical["judge_failures"]["value"] == 2 and clinical["judge_failure_rate"]["value"] == pytest.approx(2 / 8)
    assert clinical["judge_agreement_with_strict"] == report["agreement_with_strict"]
    assert clinical["closed_accuracy"] == strict["closed_accuracy"]  # closed answers are not the judge's business
    by_answer = {r["answer"]: r for r in judged_rows if "judge" in r}
    plane = by_answer["transverse plane"]
    assert plane["scores"]["clinical"] == 1.0 and plane["scores"]["clinical/judge"] == 0.0
    lungs = by_answer["in both lung fields"]
    assert (lungs["scores"]["strict"], lungs["scores"]["clinical/table"], lungs["scores"]["clinical"]) == (0, 0, 1)
    assert lungs["judge"]["reason"] == "scripted" and lungs["judge"]["server_model"] == "fake-served-model-v1"
    assert by_answer["scanner"]["scores"]["clinical"] is None and "HTTP 503" in by_answer["scanner"]["judge"]["failure"]
    assert again["judge_agreement"]["scripted"]["slake"]["failures"] == 2


def test_medbench_score_reuses_recorded_verdicts_while_they_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeJudgeServer(responder=equivalence_responder) as server:
        server.on_prompt("Model answer: scanner", Reply.error(503, retry_after="0"))
        server.answer("ROCOv2_2023_test_000001.", "Reasoning: close.\nScore: 5")
        results = run(tmp_path, "a", server, tasks="slake,rocov2")
    predictions = tmp_path / "a" / "predictions" / "scripted"
    capsys.readouterr()
    assert (
        main(
            [
                "score",
                str(predictions / "slake.jsonl"),
                str(predictions / "rocov2.jsonl"),
                "--protocol",
                "clinical",
                "--json",
            ]
        )
        == 0
    )
    scored = json.loads(capsys.readouterr().out)
    clinical = results["metrics"]["scripted"]["slake"]["clinical"]
    assert scored["tasks"]["slake"]["open_accuracy"] == clinical["open_accuracy"]
    assert scored["tasks"]["slake"]["judge_failures"] == clinical["judge_failures"]
    caption = results["metrics"]["scripted"]["rocov2"]["caption"]
    assert scored["tasks"]["rocov2"]["judge_score"] == caption["judge_score"]
    assert "judge_records_ignored" not in scored
    # Edit one judged prediction: its verdict no longer applies and is dropped, not reused.
    lines = (predictions / "slake.jsonl").read_text().splitlines()
    edited = []
    for line in lines:
        row = json.loads(line)
        if row["answer"] == "in both lung fields":
            row["prediction"] = "The answer is: upper lobe"
        edited.append(json.dumps(row))
    (predictions / "slake.jsonl").write_text("\n".join(edited) + "\n")
    assert main(["score", str(predictions / "slake.jsonl"), "--protocol", "clinical", "--json"]) == 0
    rescored = json.loads(capsys.readouterr().out)
    assert rescored["judge_records_ignored"] == {"slake": 1}
    # That sample now counts on the table alone (wrong): 3 of the 7 decided open answers are right.
    assert rescored["tasks"]["slake"]["open_accuracy"]["value"] == pytest.approx(3 / 7)


# --- secrets ------------------------------------------------------------------------------------------------------
def test_no_key_in_any_file_a_judged_run_writes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", SECRET)
    cache = tmp_path / "cache" / "medbench.sqlite"
    caplog.set_level(logging.DEBUG)
    with FakeJudgeServer(require_key=SECRET, responder=equivalence_responder) as server:
        server.answer("Model generated description: Scripted", "Reasoning: fine.\nScore: 3")
        # An error body that echoes the Authorization header (as some proxies do) must be scrubbed.
        server.on_prompt("ROCOv2_2023_test_000006.", Reply.error(500, retry_after="0"))
        # The fake server is not DeepSeek's host, so $DEEPSEEK_API_KEY goes to it only when named explicitly.
        key_args = ("--judge-api-key-env", "DEEPSEEK_API_KEY")
        run(tmp_path, "out", server, "--cache", str(cache), *key_args, tasks="rocov2,slake")
        assert server.auth_headers and set(server.auth_headers) == {f"Bearer {SECRET}"}  # the key was really used
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    written += [p for p in cache.parent.iterdir() if p.is_file()]  # the SQLite file and its WAL/SHM files
    assert any(p.name == "results.json" for p in written) and any(p.suffix == ".sqlite" for p in written)
    captured = capfd.readouterr()
    for path in written:
        data = path.read_bytes()
        assert SECRET.encode() not in data, f"the key leaked into {path}"
    for text in (captured.out, captured.err, caplog.text):
        assert SECRET not in text
    failure = next(r for r in rows(tmp_path, "out", "rocov2") if r["judge"]["failure"])["judge"]["failure"]
    assert "Bearer ***" in failure  # the echoed header, scrubbed
    run_json = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run_json["judge"]["api_key_env"] == "DEEPSEEK_API_KEY"


def test_url_credentials_are_not_recorded(tmp_path: Path) -> None:
    url = "http://judge-user:hunter2pw@127.0.0.1:9/v1"  # nothing listens on port 9: every judgement fails
    argv = ["run", "--demo", "--models", "scripted", "--tasks", "rocov2", "--output", str(tmp_path / "out")]
    assert main([*argv, *JUDGE_ARGS, "--judge-base-url", url, "--judge-timeout", "2"]) == 0
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert b"hunter2pw" not in path.read_bytes(), f"URL credentials leaked into {path}"
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["judge"]["base_url"] == "http://127.0.0.1:9/v1"
    caption = results["metrics"]["scripted"]["rocov2"]["caption"]
    assert caption["judge_score"]["value"] is None and caption["judge_failures"]["value"] == 6


# --- command-line errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--judge-model", "m"], "need --judge NAME"),
        (["--judge", "deepseek"], "DEEPSEEK_API_KEY"),
        (["--judge", "mystery"], "not a preset"),
        (["--judge", "hf:/nonexistent/judge", "--judge-model", "m"], "takes no --judge-base-url"),
        (["--judge", "hf:/nonexistent/judge"], "no config.json"),
        (
            ["--judge", "deepseek", "--judge-base-url", "http://127.0.0.1:9/v1", "--judge-concurrency", "0"],
            "must be a whole number >= 1",
        ),
    ],
)
def test_judge_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    try:
        code = main(["run", "--demo", "--models", "yes", "--tasks", "slake", "--output", str(tmp_path / "x"), *argv])
    except SystemExit as exc:  # argparse refuses a malformed option value itself, with exit 2
        code = int(exc.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err
