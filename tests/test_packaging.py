"""Packaging: the wheel maps the repository folders into one ``medbench`` namespace and nothing else.

* The wheel is built with ``python -m build --wheel --no-isolation`` (setuptools and wheel come from the running
  environment, no network) from a fresh copy of the working tree: building in place would write ``build/`` and
  ``*.egg-info`` into the shared checkout, and setuptools reuses a stale ``build/lib``, so a module deleted from
  the sources could still end up in the wheel and hide a packaging mistake.
* The slow test installs that wheel into a brand-new virtual environment (no system site packages, so the
  editable install is invisible; dependencies come from the package index) and runs the demo from outside the
  repository.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]
# repository folder -> import package it installs as (pyproject.toml [tool.setuptools] package-dir)
SOURCE_ROOTS = {
    "harness": "medbench",
    "tasks": "medbench.tasks",
    "judges": "medbench.judges",
    "reports": "medbench.reports",
    "training": "medbench.training",
}
VQA_TASKS = ("slake", "pathvqa", "vqa_rad")
ALL_TASKS = (*VQA_TASKS, "rocov2")
# pip output that means the package index could not be reached (as opposed to a genuine install failure)
OFFLINE_MARKERS = (
    "Failed to establish a new connection",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "nodename nor servname provided",
    "Network is unreachable",
    "No route to host",
    "Connection refused",
    "ConnectTimeoutError",
    "Read timed out",
    "ProxyError",
    "Could not fetch URL",
    "SSLError",
)
_TOP_LEVEL_IGNORED = {".venv", ".git", "build", "dist", "runs"}
_IGNORED_EVERYWHERE = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def _project_version() -> str:
    # a regex rather than tomllib, which Python 3.10 (still supported) lacks
    match = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    assert match, "no version in pyproject.toml"
    return match.group(1)


def _clean_env() -> dict[str, str]:
    """The environment for child processes: no leaked interpreter paths, no user data directory."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MEDBENCH_DATA", "PIP_USER", "PYTHONSTARTUP"):
        env.pop(key, None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _source_files(folder: str) -> list[Path]:
    root = REPO / folder
    # hidden files (.gitkeep placeholders) are not package data: setuptools globs skip them
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not (_IGNORED_EVERYWHERE & set(p.relative_to(root).parts))
        and not p.name.startswith(".")
        and p.suffix != ".pyc"
    )


def _wheel_path(folder: str, file: Path) -> str:
    """Where a repository file lands in the wheel (``tasks/slake.py`` -> ``medbench/tasks/slake.py``)."""
    rel = file.relative_to(REPO / folder)
    return str(PurePosixPath(*SOURCE_ROOTS[folder].split("."), *rel.parts))


def _expected_packages() -> set[str]:
    """Every folder under the source roots that holds an ``__init__.py``, as a dotted package name."""
    packages = set()
    for folder, package in SOURCE_ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            if _IGNORED_EVERYWHERE & set(rel.parts):
                continue
            packages.add(".".join([package, *rel.parts]))
    return packages


def _ignore(directory: str, names: list[str]) -> set[str]:
    ignored = {n for n in names if n in _IGNORED_EVERYWHERE or n.endswith((".egg-info", ".pyc"))}
    if Path(directory).resolve() == REPO:
        ignored |= _TOP_LEVEL_IGNORED & set(names)
    return ignored


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for dist, minimum in (("setuptools", (77,)), ("wheel", (0,)), ("build", (1,))):
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{dist} is not installed in {sys.prefix}; the --no-isolation wheel build needs it")
        major = tuple(int(x) for x in version.split(".")[:1])
        # setuptools >= 77 understands the SPDX string in project.license
        assert major >= minimum, f"{dist} {version} is too old for this pyproject.toml"
    base = tmp_path_factory.mktemp("wheel")
    src, out = base / "src", base / "dist"
    shutil.copytree(REPO, src, ignore=_ignore)
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(),
    )
    assert proc.returncode == 0, f"wheel build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    wheels = list(out.glob("medbench-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


# ---------------------------------------------------------------- (a) wheel contents


def test_wheel_name(wheel: Path) -> None:
    assert wheel.name == f"medbench-{_project_version()}-py3-none-any.whl"


@pytest.mark.parametrize(
    "path",
    ["medbench/__init__.py", "medbench/cli.py", "medbench/py.typed", "medbench/tasks/__init__.py",
     "medbench/tasks/slake.py", "medbench/tasks/pathvqa.py", "medbench/tasks/vqa_rad.py",
     "medbench/tasks/rocov2.py", "medbench/scoring/vqa.py", "medbench/stats.py", "medbench/endpoint.py",
     "medbench/judges/runs.py", "medbench/judges/templates/caption_appendix_d.jinja",
     "medbench/judges/templates/open_equivalence.jinja", "medbench/reports/paper.py", "medbench/reports/charts.py",
     "medbench/reports/data/llama32med_paper.json"],
)  # fmt: skip
def test_wheel_contains(wheel_names: set[str], path: str) -> None:
    assert path in wheel_names


def test_wheel_top_level_is_only_medbench(wheel_names: set[str]) -> None:
    top = {name.split("/", 1)[0] for name in wheel_names}
    assert not top & {"tasks", "harness", "judges", "reports", "training", "tests", "scripts"}
    assert top == {"medbench", f"medbench-{_project_version()}.dist-info"}


def test_wheel_packages_match_source_folders(wheel_names: set[str]) -> None:
    """A folder with an ``__init__.py`` that pyproject.toml forgets to list is missing from the wheel."""
    in_wheel = {str(PurePosixPath(n).parent).replace("/", ".") for n in wheel_names if n.endswith("/__init__.py")}
    expected = _expected_packages()
    assert {"medbench", "medbench.tasks", "medbench.scoring"} <= expected
    assert sorted(expected - in_wheel) == [], "packages missing from the wheel"
    assert sorted(in_wheel - expected) == [], "unexpected packages in the wheel"


@pytest.mark.parametrize("folder", list(SOURCE_ROOTS))
def test_wheel_has_every_module(wheel_names: set[str], folder: str) -> None:
    expected = {_wheel_path(folder, f) for f in _source_files(folder) if f.suffix == ".py"}
    assert sorted(expected - wheel_names) == []


@pytest.mark.parametrize("folder", list(SOURCE_ROOTS))
def test_wheel_ships_every_source_file(wheel_names: set[str], folder: str) -> None:
    """Data files next to the code (JSON tables, templates, demo data) must be package data too."""
    expected = {_wheel_path(folder, f) for f in _source_files(folder)}
    assert sorted(expected - wheel_names) == []


def test_wheel_has_demo_data(wheel_names: set[str]) -> None:
    demo = [f for f in _source_files("tasks") if "demo" in f.relative_to(REPO / "tasks").parts[:1]]
    for task in ALL_TASKS:
        assert any(f.relative_to(REPO / "tasks" / "demo").parts[0] == task for f in demo), task
    missing = sorted({_wheel_path("tasks", f) for f in demo} - wheel_names)
    assert missing == []


def test_wheel_has_prompts_and_templates(wheel_names: set[str]) -> None:
    prompts = sorted((REPO / "harness" / "prompts").glob("*.jinja"))
    assert prompts
    assert sorted({_wheel_path("harness", p) for p in prompts} - wheel_names) == []
    templates = [f for f in _source_files("reports") if f.relative_to(REPO / "reports").parts[0] == "templates"]
    assert sorted({_wheel_path("reports", f) for f in templates} - wheel_names) == []


def test_paper_table_loads_from_the_unpacked_wheel(wheel: Path, tmp_path: Path) -> None:
    """The paper's tables are package data read through importlib.resources: they must load from an installed
    layout, not only from the repository (guards the "data/*.json" package-data entry)."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path / "site")
    code = (
        "import json, medbench.reports.paper as p\n"
        "print(json.dumps({'file': p.__file__, 'rows': len(p.paper_rows()), 'key': p.citation()['key']}))"
    )
    env = _clean_env() | {"PYTHONPATH": str(tmp_path / "site")}  # ahead of the editable install's finder
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert Path(loaded["file"]).resolve().is_relative_to((tmp_path / "site").resolve())
    assert loaded["rows"] == 14 and loaded["key"] == "llama32med"


def test_wheel_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        info = f"medbench-{_project_version()}.dist-info"
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
        metadata = zf.read(f"{info}/METADATA").decode()
    assert "medbench = medbench.cli:main" in entry_points
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    # the light core installs without torch; torch only comes with the hf extra
    assert not [r for r in requires if r.startswith("torch") and "extra" not in r]
    assert any(r.startswith("torch") and 'extra == "hf"' in r for r in requires)


# ---------------------------------------------------------------- (b) fresh virtual environment


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_clean_env())


@pytest.mark.slow
def test_wheel_installs_and_runs_in_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    proc = _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    py, script = venv / "bin" / "python", venv / "bin" / "medbench"

    # the new environment must not see the editable install
    proc = _run([str(py), "-c", "import medbench"], cwd=tmp_path)
    assert proc.returncode != 0, "a fresh venv already imports medbench: it is not isolated"

    # at least one retry: pip only prints the connection error (our offline marker) when it retries
    proc = _run(
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--retries", "2", str(wheel)],
        cwd=tmp_path,
        timeout=600,
    )
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if any(marker in output for marker in OFFLINE_MARKERS):
            pytest.skip(f"package index unreachable:\n{output[-2000:]}")
        pytest.fail(f"pip install of the wheel failed:\n{output[-6000:]}")

    proc = _run([str(script), "--version"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"medbench {_project_version()}"

    run_dir = tmp_path / "run"
    proc = _run([str(script), "run", "--output", str(run_dir)], cwd=tmp_path)
    assert proc.returncode == 0, f"medbench run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert results["data"] == "demo"
    assert {"prior", "yes"} <= set(results["metrics"])
    for model in ("prior", "yes"):
        for task in ALL_TASKS:
            per_task = results["metrics"][model][task]
            headline = per_task[results["headline"][task]]
            name = "overall_accuracy" if task in VQA_TASKS else "bleu"
            value = headline[name]["value"]
            assert isinstance(value, float) and 0.0 <= value <= 1.0, (model, task, headline)
            assert headline[name]["n"] > 0
    for model in ("prior", "yes"):
        for task in ALL_TASKS:
            assert (run_dir / "predictions" / model / f"{task}.jsonl").is_file()

    code = (
        "import json, sysconfig, medbench, medbench.tasks\n"
        "print(json.dumps({'medbench': medbench.__file__, 'tasks': medbench.tasks.__file__,"
        " 'purelib': sysconfig.get_paths()['purelib']}))"
    )
    proc = _run([str(py), "-c", code], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    paths = {k: Path(v).resolve() for k, v in json.loads(proc.stdout).items()}
    assert paths["purelib"].is_relative_to(venv.resolve())
    assert paths["medbench"] == paths["purelib"] / "medbench" / "__init__.py"
    assert paths["tasks"] == paths["purelib"] / "medbench" / "tasks" / "__init__.py"

    # no bare top-level modules: only the medbench namespace is installed
    proc = _run([str(py), "-c", "import tasks"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "ModuleNotFoundError" in proc.stderr
    for name in ("harness", "judges", "reports", "training"):
        proc = _run([str(py), "-c", f"import {name}"], cwd=tmp_path)
        assert proc.returncode != 0, name


# ---------------------------------------------------------------- (c) the editable install in this environment


def test_editable_install_resolves_to_repo(tmp_path: Path) -> None:
    code = (
        "import json, medbench, medbench.tasks, medbench.scoring, medbench.judges, medbench.reports,"
        " medbench.training\n"
        "print(json.dumps({m: __import__(m, fromlist=['_']).__file__ for m in"
        " ('medbench', 'medbench.tasks', 'medbench.scoring', 'medbench.judges', 'medbench.reports',"
        " 'medbench.training')}))"
    )
    proc = _run([sys.executable, "-c", code], cwd=tmp_path)  # outside the repo: only the install can help
    assert proc.returncode == 0, proc.stderr
    files = {k: Path(v).resolve() for k, v in json.loads(proc.stdout).items()}
    assert files == {
        "medbench": REPO / "harness" / "__init__.py",
        "medbench.tasks": REPO / "tasks" / "__init__.py",
        "medbench.scoring": REPO / "harness" / "scoring" / "__init__.py",
        "medbench.judges": REPO / "judges" / "__init__.py",
        "medbench.reports": REPO / "reports" / "__init__.py",
        "medbench.training": REPO / "training" / "__init__.py",
    }


def test_version_via_module(tmp_path: Path) -> None:
    import medbench

    proc = _run([sys.executable, "-m", "medbench.cli", "--version"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"medbench {medbench.__version__}"
    assert medbench.__version__ == _project_version() == importlib.metadata.version("medbench")


def test_console_script_version(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "medbench"
    if not script.exists():
        pytest.fail(f"no medbench console script next to {sys.executable}")
    proc = _run([str(script), "--version"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"medbench {_project_version()}"
