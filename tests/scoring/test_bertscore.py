"""BERTScore with the offline MiniLM (needs the hf extra, installed by `make test`): scores, empty and long
captions, and the model/layer checks `choose_model` makes before any task is loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from medbench.errors import UsageError
from medbench.scoring import bertscore as bs
from medbench.scoring.bertscore import BertScoreChoice, bertscore, bertscore_f1, choose_model, variant

pytest.importorskip("torch")
pytest.importorskip("bert_score")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No hub, and an empty Hugging Face cache: nothing this machine happens to have cached leaks into a test."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def minilm() -> str:
    choice = choose_model()
    if choice.num_layers != 6 or choice.model is None:
        pytest.skip("the bundled all-MiniLM-L6-v2 is not the default here (roberta-large is cached)")
    return choice.model


def test_default_choice_is_recorded_and_offline() -> None:
    choice = choose_model()
    assert choice.model is not None and choice.num_layers in (6, 17)
    record = variant(choice)
    assert record["rescale_with_baseline"] is False and record["idf"] is False and "bert-score" in record["library"]
    assert record["threads"] == bs.thread_settings()


def test_scores_are_sensible() -> None:
    choice = choose_model()
    identical, related, unrelated = bertscore_f1(
        ["chest x-ray shows a left pleural effusion"] * 3,
        [
            "chest x-ray shows a left pleural effusion",
            "chest radiograph with left pleural fluid",
            "the weather is nice",
        ],
        choice,
    )
    assert identical == pytest.approx(1.0, abs=1e-4)
    assert identical > related > unrelated


def test_unavailable_choice_raises_with_reason(offline: Path) -> None:
    with pytest.raises(RuntimeError, match="no model here"):
        bertscore_f1(["a"], ["b"], BertScoreChoice(None, None, "no model here"))
    # Was: a choice with model None and exit 0 with an empty BERTScore column. Now: refuse before any task loads.
    with pytest.raises(UsageError, match="some/unknown-model"):
        choose_model("some/unknown-model")


def test_pairs_scored_alone_agree_with_bert_score() -> None:
    """Guards the reimplemented matching: bert-score's own numbers where its batching adds no padding."""
    from bert_score import BERTScorer

    choice = choose_model()
    pairs = [
        ("chest x-ray shows a left pleural effusion", "chest radiograph with left pleural fluid"),
        ("Axial CT of the abdomen showing a liver mass (arrow).", "CT abdomen: hepatic lesion"),
        ("MRI", "Coronal T1-weighted MRI of the shoulder."),
    ]
    scorer = BERTScorer(model_type=choice.model, num_layers=choice.num_layers)
    for cand, ref in pairs:
        expected = [float(t[0]) for t in scorer.score([cand], [ref], verbose=False)]
        got = bertscore([cand], [ref], choice)
        assert [got.precision[0], got.recall[0], got.f1[0]] == pytest.approx(expected, abs=2e-6)


# ---------------------------------------------------------------- empty and long captions


def test_empty_and_whitespace_captions_score_zero_and_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the crash: bert-score's sent_encode calls build_inputs_with_special_tokens for an empty sentence,
    which transformers 5 tokenizers lack (AttributeError after all generation, in `medbench run` and `score`)."""
    choice = choose_model()
    sent: list[str] = []
    embed = bs._embed

    def spy(encoder: object, ids: dict[str, list[int]]) -> dict[str, object]:
        sent.extend(ids)
        return embed(encoder, ids)

    monkeypatch.setattr(bs, "_embed", spy)
    preds = ["", "   \n\t", "a chest x-ray", "left pleural effusion", "\u200b", "CT of the head"]
    refs = ["CT of the head", "MRI of the knee", "", " ", "x-ray", "CT of the head"]
    result = bertscore(preds, refs, choice)
    assert result.empty == [True, True, True, True, True, False]
    assert result.n_empty == 5
    for i in range(5):
        assert (result.precision[i], result.recall[i], result.f1[i]) == (0.0, 0.0, 0.0)
    assert result.f1[5] == pytest.approx(1.0, abs=1e-6)
    # never sent to the model: neither the blank side nor its partner, nor text with no real tokens
    assert sent == ["CT of the head"]
    assert bertscore_f1(["", " "], ["a", "b"], choice) == [0.0, 0.0]


def test_captions_longer_than_the_model_truncate() -> None:
    choice = choose_model()
    long_caption = "chest x-ray shows a left pleural effusion and a small right apical pneumothorax " * 120
    result = bertscore([long_caption, long_caption, "chest x-ray"], [long_caption, "chest x-ray", long_caption], choice)
    assert result.f1[0] == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 < f < 1.0 for f in result.f1[1:]) and result.n_empty == 0


def test_tokenizer_without_a_length_limit_gets_the_models() -> None:
    """A tokenizer with transformers' 1e30 placeholder would let a long caption overflow the position table."""
    tokenizer = SimpleNamespace(model_max_length=int(1e30))
    bs._cap_max_length(tokenizer, SimpleNamespace(max_position_embeddings=512))
    assert tokenizer.model_max_length == 510
    sane = SimpleNamespace(model_max_length=512)
    bs._cap_max_length(sane, SimpleNamespace(max_position_embeddings=512))
    assert sane.model_max_length == 512


# ---------------------------------------------------------------- choose_model checks (before any task loads)


def test_model_without_layer_is_a_usage_error_naming_its_layers(minilm: str, offline: Path) -> None:
    """Was: exit 0 with an empty BERTScore column."""
    with pytest.raises(UsageError) as info:
        choose_model(minilm)
    message = str(info.value)
    assert minilm in message and "6 layers" in message and "--bertscore-layers N (1..6)" in message


@pytest.mark.parametrize("layer", [0, 7, 24])
def test_layer_the_model_lacks_is_a_usage_error(minilm: str, offline: Path, layer: int) -> None:
    """Was: an AssertionError traceback from bert-score's get_model after all generation."""
    with pytest.raises(UsageError, match=rf"--bertscore-layers {layer} does not fit .*6 layers.*\(1\.\.6\)"):
        choose_model(minilm, layer)


def test_valid_explicit_layer_is_used(minilm: str, offline: Path) -> None:
    choice = choose_model(minilm, 3)
    assert (choice.model, choice.num_layers, choice.origin) == (minilm, 3, "user choice")
    assert choice.path == str(Path(minilm).resolve())
    shallow = bertscore_f1(["chest x-ray"], ["chest radiograph"], choice)[0]
    full = bertscore_f1(["chest x-ray"], ["chest radiograph"], choose_model())[0]
    assert 0.0 < shallow < 1.0 and shallow != full  # layer 3 really is a different representation


def _fake_hub_cache(cache: Path, repo_id: str, source: str) -> None:
    """A Hugging Face cache entry for ``repo_id`` holding the MiniLM files (the layout huggingface_hub reads)."""
    commit = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in Path(source).iterdir():
        if file.is_file():
            (snapshot / file.name).symlink_to(file)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_known_model_name_gets_bert_scores_default_layer(
    minilm: str, offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bert_score.utils import model2layers

    _fake_hub_cache(offline, "org/known-minilm", minilm)
    monkeypatch.setitem(model2layers, "org/known-minilm", 4)
    choice = choose_model("org/known-minilm")
    assert choice.num_layers == 4 and "bert-score's default" in choice.origin
    assert choice.path is not None and Path(choice.path, "config.json").is_file()
    monkeypatch.setitem(model2layers, "org/known-minilm", 9)  # a table entry the model cannot satisfy
    with pytest.raises(UsageError, match="--bertscore-layers 9 does not fit"):
        choose_model("org/known-minilm")
    # a hub id neither cached nor reachable: how to get it, not a traceback at scoring time
    with pytest.raises(UsageError, match=r"org/missing.*not in the local Hugging Face cache.*hf download org/missing"):
        choose_model("org/missing", 3)


def test_missing_or_unusable_folders_are_usage_errors(tmp_path: Path, offline: Path) -> None:
    with pytest.raises(UsageError, match="no such folder"):
        choose_model(str(tmp_path / "nope"), 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no config\.json"):
        choose_model(str(tmp_path / "empty"), 3)
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(json.dumps({"num_hidden_layers": 4}))
    with pytest.raises(UsageError, match="no weights"):
        choose_model(str(tmp_path / "noweights"), 3)
    with pytest.raises(UsageError, match="neither an existing folder nor a Hugging Face hub id"):
        choose_model("not a model id", 3)


def test_layers_without_model_and_bad_thread_setting_are_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="--bertscore-layers needs --bertscore-model"):
        choose_model(None, 5)
    monkeypatch.setenv(bs.THREADS_ENV, "many")
    with pytest.raises(UsageError, match="MEDBENCH_BERTSCORE_THREADS must be a whole number"):
        choose_model()


def test_cli_exits_2_with_the_message(minilm: str, tmp_path: Path) -> None:
    """The runner and `medbench score` call choose_model first, so these stop before any work."""
    path = tmp_path / "preds.jsonl"
    row = {"id": "1", "task": "rocov2", "answer_type": None, "reference": "CT of the head", "prediction": ""}
    path.write_text(json.dumps(row) + "\n")
    for extra, expected in (([], "6 layers"), (["--bertscore-layers", "9"], "does not fit")):
        done = subprocess.run(
            [sys.executable, "-m", "medbench.cli", "score", str(path), "--bertscore-model", minilm, *extra],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr


def test_score_command_with_empty_captions_exits_0(tmp_path: Path) -> None:
    """Was: `medbench score` (and `run`) died with the AttributeError traceback once any caption was empty."""
    path = tmp_path / "preds.jsonl"
    rows = [
        {"id": "1", "task": "rocov2", "answer_type": None, "reference": "CT of the head", "prediction": ""},
        {"id": "2", "task": "rocov2", "answer_type": None, "reference": "MRI of the knee", "prediction": "knee MRI"},
        {"id": "3", "task": "rocov2", "answer_type": None, "reference": "Chest x-ray", "prediction": " \n "},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = [sys.executable, "-m", "medbench.cli", "score", str(path), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    entry = json.loads(done.stdout)["tasks"]["rocov2"]["bertscore_f1"]
    knee = bertscore_f1(["knee MRI"], ["MRI of the knee"], choose_model())[0]
    assert entry["n"] == 3 and entry["value"] == pytest.approx(knee / 3)  # the two empty ones count as 0
