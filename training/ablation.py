"""Table 3 of LLaMA32-Med (the ablation on SLAKE) as one command: ``medbench train ablation``.

The grid is data (:data:`ROWS`): each of the table's five rows is a stage-1 config (or none) and a stage-2 config,
each a shipped training config plus the row's own switches:

============== ======================================= =======================================
row            stage 1                                 stage 2
============== ======================================= =======================================
full           stage1                                  stage2 (init_adapter "previous")
no-stage1      (not trained)                           stage2 + init_adapter=none
generic-prompt stage1 + data.prompt=generic            stage2 + data.prompt=generic
no-vision      stage1 + freeze_vision=true             stage2 + freeze_vision=true
qlora          stage1-qlora (quant.enabled)            stage2-qlora (quant.enabled)
============== ======================================= =======================================

:func:`run` trains every stage of the chosen rows into ``DIR/<row>/stage<N>`` with
:func:`medbench.training.recipe.train` (stage 2 continues ``../stage1``; a finished stage is skipped by ``train``
itself, so the same command again resumes), each config named ``table3-<row>-stage<N>``. The user's ``key=value``
overrides go to every stage of every row, laid under the row's switches: the switch keys
(:data:`SWITCH_KEYS`) are the grid's, so overriding one is refused rather than silently losing to the row.
Whatever cannot run is refused before anything is trained or built: the qlora row without CUDA, an unknown row, an
output path holding a comma (``models`` in a run config is comma-separated), a stage folder finished by another config.

After training it writes the evaluation: ``DIR/table3-role.toml`` (the rows trained with the role prompt) and
``DIR/table3-generic.toml`` (the generic-prompt row: ``prompt`` is a run-level setting of ``medbench run``), each
scoring its rows' stage-2 adapters (``hf:<base as recorded>+lora:<adapter>``) on SLAKE into ``DIR/eval/<prompt>``;
``DIR/table3.json`` indexes the grid; the commands to evaluate and report are printed on stdout.

``--debug`` runs the same grid on a tiny random Mllama built in ``DIR/base``, with ``debug.toml``'s settings laid
over each stage's config (as ``medbench train debug`` does), on the demo data; by default without the qlora row.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from medbench.configfile import read_config, toml_module
from medbench.errors import UsageError
from medbench.training import runcard
from medbench.training.config import TrainConfig

#: The settings that make Table 3's columns; each row sets its own, and a user override of one is refused.
SWITCH_KEYS = ("init_adapter", "data.prompt", "freeze_vision", "quant.enabled")
#: Set by the grid for every stage (distinct names keep every config, and so every run card, distinct).
GRID_KEYS = ("name", "stage")


@dataclass(frozen=True)
class Stage:
    """One stage of a row: a shipped training config and the row's switches laid over it."""

    config: str
    switches: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """One row of Table 3: its method as the paper names it, its stage 1 (None: not trained) and stage 2."""

    name: str
    method: str
    stage1: Stage | None
    stage2: Stage

    def stages(self) -> dict[str, Stage]:
        """``stage1``/``stage2`` -> its stage, in training order (stage 1 left out when the row skips it)."""
        return {k: s for k, s in (("stage1", self.stage1), ("stage2", self.stage2)) if s is not None}


ROWS = (
    Row("full", "LoRA (full)", Stage("stage1"), Stage("stage2")),
    Row("no-stage1", "LoRA w/o stage 1 FT", None, Stage("stage2", {"init_adapter": "none"})),
    Row(
        "generic-prompt",
        "LoRA w/o role-based prompt",
        Stage("stage1", {"data.prompt": "generic"}),
        Stage("stage2", {"data.prompt": "generic"}),
    ),
    Row(
        "no-vision",
        "LoRA w/o vision encoder FT",
        Stage("stage1", {"freeze_vision": True}),
        Stage("stage2", {"freeze_vision": True}),
    ),
    Row("qlora", "QLoRA (full)", Stage("stage1-qlora"), Stage("stage2-qlora")),
)
GRID = {row.name: row for row in ROWS}
#: What ``--debug`` trains unless ``--rows`` says otherwise: the CPU cannot run QLoRA.
DEBUG_ROWS = tuple(name for name in GRID if name != "qlora")


def say(message: str) -> None:
    print(f"medbench train ablation: {message}", file=sys.stderr, flush=True)


# -- the grid's configs -------------------------------------------------------------------------------------------
def select_rows(rows: str | None, debug: bool) -> list[Row]:
    """The rows named in ``rows`` (comma-separated; None: all, or :data:`DEBUG_ROWS` with ``debug``)."""
    if rows is None:
        return [GRID[name] for name in (DEBUG_ROWS if debug else GRID)]
    names = [name.strip() for name in rows.split(",") if name.strip()]
    unknown = [name for name in names if name not in GRID]
    if unknown or not names:
        named = ", ".join(unknown) or "(none given)"
        raise UsageError(f"--rows {rows!r}: unknown row(s) {named}; Table 3's rows are {', '.join(GRID)}")
    return [GRID[name] for name in dict.fromkeys(names)]  # each row once, in the order given


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuse an override of a switch or of a grid key: the rows set those themselves (a row's switch wins)."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in SWITCH_KEYS:
            raise UsageError(
                f"override {item!r}: {key} is one of Table 3's switches ({', '.join(SWITCH_KEYS)}), which each row "
                "sets itself and which win over overrides; drop it, or train that variant alone with "
                f"`medbench train CONFIG {item}`"
            )
        if key in GRID_KEYS:
            raise UsageError(f"override {item!r}: the grid sets {key} for every stage (name: table3-<row>-stage<N>)")


def _debug_settings(stage: str) -> list[str]:
    """``debug.toml``'s ``[common]`` then ``[<stage>]`` settings as overrides (what ``medbench train debug`` lays
    over the shipped config of that name)."""
    from medbench.training.recipe import _dotted

    text = resources.files("medbench.training").joinpath("configs", "debug.toml").read_text(encoding="utf-8")
    doc = toml_module().loads(text)
    settings = _dotted(doc.get("common", {})) | _dotted(doc.get(stage, {}))
    return [f"{key}={json.dumps(value)}" for key, value in settings.items()]


def stage_configs(row: Row, overrides: Sequence[str] = (), debug_base: Path | None = None) -> dict[str, TrainConfig]:
    """``stage1``/``stage2`` -> the row's config of that stage: the shipped config, then (with ``debug_base``) the
    debug settings and that base, then the user's ``overrides``, then the row's switches, then its name."""
    check_overrides(overrides)
    out = {}
    for stage, spec in row.stages().items():
        debug = [*_debug_settings(stage), f"base={json.dumps(str(debug_base))}"] if debug_base else []
        switches = [f"{key}={json.dumps(value)}" for key, value in spec.switches.items()]
        name = f"name={json.dumps(f'table3-{row.name}-{stage}')}"
        out[stage] = TrainConfig.load(spec.config, [*debug, *overrides, *switches, name])
    return out


def switches(configs: Mapping[str, TrainConfig], full: Mapping[str, TrainConfig]) -> dict[str, Any]:
    """Per stage, the settings in which a row's resolved configs differ from the full row's (its name aside);
    None for a stage the row does not train."""
    out: dict[str, Any] = {}
    for stage, reference in full.items():
        if stage not in configs:
            out[stage] = None
            continue
        mine, theirs = _flat(configs[stage].resolved()), _flat(reference.resolved())
        out[stage] = {k: v for k, v in mine.items() if k != "name" and v != theirs.get(k)}
    return out


def _flat(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        out |= _flat(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value}
    return out


# -- refusals before anything runs --------------------------------------------------------------------------------
def refuse_upfront(output: Path, grid: Mapping[str, Mapping[str, TrainConfig]]) -> None:
    """A :class:`UsageError` for anything of the grid that cannot run here, before anything is trained."""
    from medbench.training.recipe import refuse_unsupported

    if "," in str(output):
        raise UsageError(
            f"--output {output}: the path holds a comma, and the evaluation config's models are comma-separated; "
            "choose a folder without one"
        )
    quantised = [row for row, stages in grid.items() if any(c.quant.enabled for c in stages.values())]
    if quantised:
        import torch

        if not torch.cuda.is_available():
            rest = ",".join(row for row in grid if row not in quantised)
            raise UsageError(
                f"row(s) {', '.join(quantised)} train QLoRA (a 4-bit base with bitsandbytes), which needs a CUDA GPU, "
                f"and torch sees none here; pass --rows {rest or 'full,no-stage1,generic-prompt,no-vision'} "
                "to leave them out, or run on a GPU machine"
            )
    for row, stages in grid.items():
        for stage, config in stages.items():
            refuse_unsupported(config)
            base = Path(config.base).expanduser()
            if "," in config.base or (base.exists() and "," in str(base.resolve())):
                raise UsageError(f"base {config.base}: its path holds a comma, which a run config's models cannot")
            card = runcard.read(output / row / stage)
            if card is not None and card.get("config_sha256") != config.sha256():
                raise UsageError(
                    f"{output / row / stage} holds an adapter finished with other settings than this command's "
                    "(another base or other overrides); rerun with the same settings to resume, or choose another "
                    "--output"
                )


# -- the command --------------------------------------------------------------------------------------------------
def run(output: Path, rows: str | None = None, overrides: Sequence[str] = (), debug: bool = False) -> Path:
    """``medbench train ablation``: train the chosen rows into ``output``, write the evaluation config(s) and
    ``table3.json`` (returned), and print the commands that evaluate and report them."""
    output = Path(output).expanduser().resolve()
    chosen = select_rows(rows, debug)
    debug_base = output / "base" if debug else None
    full = stage_configs(GRID["full"], overrides, debug_base)
    grid = {row.name: stage_configs(row, overrides, debug_base) for row in chosen}
    refuse_upfront(output, grid)
    if debug and rows is None:
        say(f"--debug trains the rows {', '.join(DEBUG_ROWS)}, not qlora (the CPU cannot run QLoRA); see --rows")
    from medbench.distributed import world
    from medbench.training.recipe import train

    w = world()  # under torchrun every process trains each stage; one builds the base and writes the files
    if debug_base is not None:
        from medbench.testing.vlms import build_tiny_model

        if w.is_main:
            build_tiny_model("mllama", debug_base)  # deterministic: a rebuild writes the same bytes
        w.barrier()
    for number, (row, stages) in enumerate(grid.items(), 1):
        if w.is_main:
            say(f"row {number}/{len(grid)} {row} ({GRID[row].method}): {', '.join(stages)}")
        for stage, config in stages.items():
            train(config, output / row / stage)
    path = output / "table3.json"
    if not w.is_main:
        return path
    evals = write_eval_configs(output, grid)
    lines = commands(output, evals)
    index: dict[str, Any] = {
        "table": "LLaMA32-Med Table 3: ablation of the fine-tuning strategy, accuracy on SLAKE",
        "output": str(output),
        "debug": debug,
        "overrides": list(overrides),
        "rows": {row: _index_row(output, row, stages, full, evals) for row, stages in grid.items()},
        "eval_configs": {prompt: str(config) for prompt, (config, _) in evals.items()},
        "commands": lines,
    }
    path.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    say(f"trained {len(grid)} row(s); the grid's index is {path}; evaluate and report with:")
    print("\n".join(lines), flush=True)
    return path


def _index_row(
    output: Path,
    row: str,
    stages: Mapping[str, TrainConfig],
    full: Mapping[str, TrainConfig],
    evals: Mapping[str, tuple[Path, Path]],
) -> dict[str, Any]:
    """``table3.json``'s entry of one trained row."""
    stage2, specs = stages["stage2"], GRID[row].stages()
    config, run_dir = evals[stage2.data.prompt]
    trained: dict[str, Any] = dict.fromkeys(("stage1", "stage2"))  # None: a stage the row does not train
    for stage, c in stages.items():
        trained[stage] = {"config": specs[stage].config, "name": c.name, "folder": str(output / row / stage)}
        trained[stage]["config_sha256"] = c.sha256()
    return {
        "method": GRID[row].method,
        "columns": {  # Table 3's ticks, read from the configs trained
            "stage1_ft": "stage1" in stages,
            "role_prompt": stage2.data.prompt == "role",
            "vision_encoder_ft": not stage2.freeze_vision,
            "4bit": stage2.quant.enabled,
        },
        "switches": switches(stages, full),
        "stages": trained,
        "adapter": str(output / row / "stage2"),
        "model": model_name(output / row / "stage2")[0],
        "eval_prompt": stage2.data.prompt,
        "eval_config": str(config),
        "eval_run": str(run_dir),
    }


# -- the evaluation -----------------------------------------------------------------------------------------------
def model_name(adapter: Path) -> tuple[str, str | None]:
    """``(hf:<base as the adapter records it>+lora:<adapter>, the base's hub commit or None)``."""
    from medbench.models.hf_families import read_adapter_config

    saved = read_adapter_config(adapter)
    return f"hf:{saved['base_model_name_or_path']}+lora:{adapter}", saved.get("revision") or None


def write_eval_configs(output: Path, grid: Mapping[str, Mapping[str, TrainConfig]]) -> dict[str, tuple[Path, Path]]:
    """Prompt style -> ``(DIR/table3-<prompt>.toml, its run folder DIR/eval/<prompt>)``: one
    ``medbench run --config`` file per evaluation prompt, scoring those rows' stage-2 adapters on SLAKE; each file
    is read back as ``medbench run`` reads it."""
    groups: dict[str, list[str]] = {}
    for row, stages in grid.items():
        groups.setdefault(stages["stage2"].data.prompt, []).append(row)
    out = {}
    for prompt, rows in groups.items():
        data = grid[rows[0]]["stage2"].data  # the user's data overrides apply to every row alike
        names = [model_name(output / row / "stage2") for row in rows]
        run_dir = output / "eval" / prompt
        lines = [
            f"# LLaMA32-Med Table 3, rows {', '.join(rows)}: each row's stage-2 adapter on SLAKE, {prompt} prompt.",
            "# Written by `medbench train ablation`; run it with `medbench run --config THIS_FILE`.",
            'tasks = "slake"',
            f"prompt = {_string(prompt)}",
            "models = [",
            *[f"  {_string(name)}," for name, _ in names],
            "]",
            f"output = {_string(str(run_dir))}",
            f"image_size = {data.image_size}  # the size the adapters were trained at",
        ]
        if data.demo:
            lines.append("demo = true")
        if data.data_dir:
            lines.append(f"data_dir = {_string(str(Path(data.data_dir).expanduser().resolve()))}")
        for row, (name, revision) in zip(rows, names, strict=True):
            quant = grid[row]["stage2"].quant
            args = [f"revision = {_string(revision)}"] if revision else []  # the hub commit it was trained on
            if quant.enabled:  # a QLoRA adapter is scored on the 4-bit base it was trained on (CUDA only)
                args.append(f"quant = {_string(quant.quant_type)}")
            if args:
                lines += ["", f"[model_args.{_string(name)}]", *args]
        path = output / f"table3-{prompt}.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        read_config(path)  # what medbench run will check: keys, types and model names
        out[prompt] = (path, run_dir)
    return out


def _string(text: str) -> str:
    """``text`` as a TOML basic string (JSON's escapes are TOML's, and DEL must be escaped too)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def commands(output: Path, evals: Mapping[str, tuple[Path, Path]]) -> list[str]:
    """The shell commands that evaluate every row and build one report over the evaluation runs."""
    runs = [f"medbench run --config {shlex.quote(str(path))}" for path, _ in evals.values()]
    folders = " ".join(shlex.quote(str(run_dir)) for _, run_dir in evals.values())
    return [*runs, f"medbench report {folders} --out {shlex.quote(str(output / 'eval' / 'report'))}"]
