"""Who may import whom (ARCHITECTURE.md, "Layers"): a module imports only from its own layer or lower ones.

Every ``import medbench...`` counts, including the ones inside functions (a lazy import is still a dependency:
the old ``models/hf.py`` -> ``runner`` circle was one). Two documented exceptions: the registry finds task and
model plugins by importing them (that is its job), and the package root re-exports the API lazily.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# repository folder -> package, as pyproject.toml maps them (a new source folder is covered without editing this)
FOLDERS = {
    folder: package
    for package, folder in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ].items()
}

#: Lowest first. A unit is ``medbench.<name>`` (a module or a subpackage).
LAYERS: list[tuple[str, set[str]]] = [
    (
        "foundation",
        {
            "errors",
            "schema",
            "images",
            "provenance",
            "fileio",
            "stats",
            "filehash",
            "cache",
            "distributed",
            "endpoint",
            "data",
            "prompts",
            "registry",
        },
    ),
    ("scoring", {"scoring"}),
    ("tasks", {"tasks"}),
    ("models", {"models"}),
    ("judges", {"judges"}),
    ("contracts", {"results", "evaluation", "runconfig", "configfile", "generation", "preparation", "scorefile"}),
    ("runner", {"runner"}),
    ("api", {"api"}),
    ("front ends", {"cli", "console", "testing", "reports", "training", ""}),
]
#: What reports (and the regression gate, which lives with them) may read: run directories, never models or judges.
REPORT_ALLOWED = {
    "results",
    "evaluation",
    "stats",
    "scoring",
    "errors",
    "schema",
    "provenance",
    "fileio",
    "images",
    "scorefile",  # the gate reads prediction JSONL files as `medbench score` does
    "reports",
}
EXCEPTIONS = {("registry", "models"), ("registry", "tasks"), ("", "api"), ("", "results")}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(name: str) -> int:
    for index, (_, names) in enumerate(LAYERS):
        if name in names:
            return index
    raise AssertionError(f"medbench.{name} is in no layer: add it to LAYERS (and ARCHITECTURE.md)")


def module_name(path: Path) -> str:
    folder = path.relative_to(ROOT).parts[0]
    parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([FOLDERS[folder], *parts])


def imports(source: str) -> set[str]:
    """Every medbench module ``source`` imports (``from medbench import x`` counts as ``medbench.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "medbench":
            if node.module == "medbench":
                found.update(f"medbench.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "medbench")
    return found


def violations(module: str, source: str) -> list[str]:
    here = unit(module)
    out = []
    for target in sorted(imports(source)):
        there = unit(target)
        if there == here or (here, there) in EXCEPTIONS or there in ("", "__version__"):
            continue
        if layer_of(there) > layer_of(here):
            out.append(f"{module} imports {target} ({LAYERS[layer_of(there)][0]} is above {LAYERS[layer_of(here)][0]})")
        if here == "reports" and there not in REPORT_ALLOWED:
            out.append(f"{module} imports {target}: reports read run directories only")
    return out


def sources() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def test_no_module_imports_a_higher_layer() -> None:
    problems = [v for path in sources() for v in violations(module_name(path), path.read_text(encoding="utf-8"))]
    assert problems == []


def test_every_unit_has_a_layer() -> None:
    for path in sources():
        layer_of(unit(module_name(path)))


@pytest.mark.parametrize(
    ("module", "source", "problem"),
    [
        ("medbench.scoring.vqa", "def f():\n    from medbench.runner import execute\n", "medbench.runner"),
        ("medbench.models.hf", "from medbench import runner\n", "medbench.runner"),
        ("medbench.reports.site", "from medbench.models.hf import HFModel\n", "reports read run directories only"),
        ("medbench.tasks.slake", "import medbench.judges.client\n", "medbench.judges.client"),
    ],
)
def test_the_checker_catches_an_upward_import(module: str, source: str, problem: str) -> None:
    assert any(problem in v for v in violations(module, source))
