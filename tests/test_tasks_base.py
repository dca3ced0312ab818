from pathlib import Path

import pytest
from conftest import build_slake

from medbench.errors import DataError
from medbench.registry import get_task
from medbench.tasks.base import DEMO_ROOT, decide_answer_type, locate


@pytest.mark.parametrize(
    ("gold", "label", "rule", "expected"),
    [
        ("Yes", None, "yesno", ("closed", False)),
        ("no.", "OPEN", "yesno", ("closed", False)),
        ("Left", "CLOSED", "yesno", ("open", False)),
        ("Left", "CLOSED", "answer_type", ("closed", False)),
        ("yes", "OPEN", "answer_type", ("open", False)),
        ("yes", None, "answer_type", ("closed", True)),  # no label: yes/no fallback, flagged
        ("not sure", None, "yesno", ("open", False)),
    ],
)
def test_decide_answer_type(gold: str, label: str | None, rule: str, expected: tuple[str, bool]) -> None:
    assert decide_answer_type(gold, label, rule) == expected  # type: ignore[arg-type]


def test_locate_demo_data_dir_alias_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = get_task("slake")
    assert locate(task, "test", data_dir=None, demo=True).root == DEMO_ROOT / "slake"
    build_slake(tmp_path / "Slake1.0")
    found = locate(task, "test", data_dir=tmp_path, demo=False)
    assert found.kind == "local" and found.root == tmp_path / "Slake1.0"
    monkeypatch.setenv("MEDBENCH_DATA", str(tmp_path))
    assert locate(task, "test", data_dir=None, demo=False).root == tmp_path / "Slake1.0"


def test_missing_data_message_names_places_and_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        locate(get_task("pathvqa"), "test", data_dir=tmp_path, demo=False)
    message = str(info.value)
    assert f"{tmp_path}/pathvqa/" in message and "qas/{train,val,test}" in message and "medbench run" in message


def test_offline_hub_without_cache_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"flaviagiammarino/vqa-rad@bcf91e7654.*HF_HUB_OFFLINE is set"):
        locate(get_task("vqa_rad"), "test", data_dir=None, demo=False)


def test_hub_cache_serves_pinned_revision_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot already in the Hugging Face cache is used offline, at exactly the pinned revision."""
    task = get_task("slake")
    cache = tmp_path / "hub"
    repo = cache / "datasets--BoKelvin--SLAKE"
    snap = build_slake(repo / "snapshots" / task.hub.revision, zipped=True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(task.hub.revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    source = locate(task, "test", data_dir=None, demo=False)
    assert source.kind == "hub" and source.root == snap and source.revision == task.hub.revision
    assert source.describe()["repo_id"] == "BoKelvin/SLAKE"
