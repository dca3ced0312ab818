import subprocess
import sys

import pytest

from medbench.errors import UsageError
from medbench.registry import check_model_name, create_model, get_task, resolve_task_names, task_registry


def test_four_tasks_in_paper_order() -> None:
    assert list(task_registry()) == ["slake", "pathvqa", "vqa_rad", "rocov2"]
    assert resolve_task_names("all") == ["slake", "pathvqa", "vqa_rad", "rocov2"]
    assert resolve_task_names(" rocov2 , slake") == ["rocov2", "slake"]


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown task 'slak'; known tasks: pathvqa, rocov2, slake, vqa_rad"):
        resolve_task_names("slak")
    with pytest.raises(UsageError, match="unknown task"):
        get_task("nope")
    with pytest.raises(UsageError, match=r"unknown model .gpt.; known models: .*prior"):
        check_model_name("gpt")


def test_models_build_by_name() -> None:
    assert create_model("yes").generate([]) == []
    assert create_model("prior").name == "prior"


def test_listing_imports_nothing_heavy() -> None:
    code = (
        "import sys, medbench.registry as r; r.task_registry(); r.model_registry();"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'peft') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
