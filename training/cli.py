"""``medbench train ...``: the training module's commands.

* ``medbench train CONFIG [key=value ...] [--output DIR]`` (``medbench train run ...``): train one stage into the
  adapter folder ``DIR`` (default ``runs/train/stage<N>``, so that stage 2 finds stage 1 beside it); the same command
  again resumes a killed run from its last checkpoint (:func:`medbench.training.recipe.train`);
* ``medbench train debug [--output DIR]``: both stages on a tiny random Mllama on the CPU
  (:func:`medbench.training.recipe.debug`);
* ``medbench train ablation [--output DIR] [--rows a,b,...] [--debug] [key=value ...]``: Table 3's ablation grid,
  every row's stages trained into ``DIR/<row>/stage<N>``, then the ``medbench run --config`` files that score every
  row's adapter on SLAKE (:func:`medbench.training.ablation.run`);
* ``medbench train show-config NAME|FILE [key=value ...]``: the resolved config (what a run card records);
* ``medbench train count-params --preset NAME [--model DIR] [--rank R]``: trainable LoRA parameters per component,
  counted on the model's architecture built on the ``meta`` device (no weights are read or downloaded).

:func:`configure_parser` adds them under ``medbench train`` (each ``func`` has the signature of ``medbench.cli``'s
commands). :func:`normalise_argv` lets ``medbench train CONFIG ...`` stand for ``medbench train run CONFIG ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from medbench.errors import UsageError
from medbench.training.config import PRESET_NAMES, TrainConfig, shipped

#: The ``medbench train`` subcommands; any other word after ``train`` is a config for ``run``.
COMMANDS = ("run", "debug", "ablation", "show-config", "count-params")


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``train X ...`` read as ``train run X ...`` when X is no subcommand nor a help flag, so that
    ``medbench train stage1 optim.lr=1e-4`` trains (the issue's spelling)."""
    argv = list(argv)
    if len(argv) > 1 and argv[0] == "train" and argv[1] not in (*COMMANDS, "-h", "--help"):
        return ["train", "run", *argv[1:]]
    return argv


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``run``, ``debug``, ``ablation``, ``show-config`` and ``count-params`` subcommands under ``parser``
    (``medbench train``)."""
    sub = parser.add_subparsers(dest="train_command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="train one stage (also `medbench train CONFIG ...`); rerun to resume")
    run.add_argument(
        "train_config", metavar="CONFIG", help=f"a shipped config ({', '.join(shipped())}) or a .toml file"
    )
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. optim.lr=1e-4 lora.rank=16")
    run.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="the adapter folder (default: runs/train/stage<N>); the same DIR again resumes a killed run",
    )
    run.set_defaults(func=cmd_run)
    debug = sub.add_parser("debug", help="both stages on a tiny random Mllama on the CPU (about a minute)")
    debug.add_argument(
        "--output",
        type=Path,
        default=Path("runs/train-debug"),
        metavar="DIR",
        help="where the tiny base, stage1/ and stage2/ go (default: runs/train-debug)",
    )
    debug.set_defaults(func=cmd_debug)
    ablation = sub.add_parser(
        "ablation", help="Table 3's ablation grid: train every row, write configs that evaluate them; rerun to resume"
    )
    ablation.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="for every stage of every row, e.g. base=DIR optim.epochs=1"
    )
    ablation.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="where DIR/<row>/stage<N>, the evaluation configs and table3.json go "
        "(default: runs/table3, or runs/table3-debug with --debug)",
    )
    ablation.add_argument(
        "--rows",
        metavar="A,B,...",
        help="the rows to train: full, no-stage1, generic-prompt, no-vision, qlora (default: all; with --debug all "
        "but qlora)",
    )
    ablation.add_argument(
        "--debug", action="store_true", help="on a tiny random Mllama built in DIR/base, with the debug settings"
    )
    ablation.set_defaults(func=cmd_ablation)
    show = sub.add_parser("show-config", help="print a training config with overrides applied, as JSON")
    show.add_argument(
        "train_config", metavar="CONFIG", help=f"a shipped config ({', '.join(shipped())}) or a .toml file"
    )
    show.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. optim.lr=1e-4 lora.rank=16")
    show.set_defaults(func=cmd_show_config)
    count = sub.add_parser("count-params", help="trainable LoRA parameters per component of a preset")
    count.add_argument("--preset", choices=PRESET_NAMES, default="paper", help="where LoRA goes (default: paper)")
    count.add_argument(
        "--model",
        metavar="DIR",
        help="a model folder with config.json (default: the Llama 3.2 11B Vision architecture)",
    )
    count.add_argument("--rank", type=int, default=32, help="LoRA rank (default: 32, the paper's)")
    count.set_defaults(func=cmd_count_params)


def cmd_run(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    from medbench.training.recipe import train

    if args.train_config == "debug":  # both stages of the tiny run, not one stage's config
        raise UsageError("the debug config holds two stages: run it with `medbench train debug [--output DIR]`")
    config = TrainConfig.load(args.train_config, args.overrides)
    output = args.output or Path("runs") / "train" / f"stage{config.stage}"
    return _interruptible(lambda: print(train(config, output)))


def cmd_debug(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    from medbench.training.recipe import debug

    return _interruptible(lambda: print(debug(args.output)["stage2"]))


def cmd_ablation(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    from medbench.training.ablation import run

    output = args.output or Path("runs") / ("table3-debug" if args.debug else "table3")
    return _interruptible(lambda: run(output, args.rows, args.overrides, debug=args.debug))


def _interruptible(work: Callable[[], object]) -> int:
    """Run ``work``; Ctrl-C ends with exit code 130 and says how to resume."""
    try:
        work()
    except KeyboardInterrupt:
        print("medbench train: interrupted; the same command again resumes from the last checkpoint", file=sys.stderr)
        return 130
    return 0


def cmd_show_config(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    config = TrainConfig.load(args.train_config, args.overrides)
    print(json.dumps({"config": config.resolved(), "sha256": config.sha256()}, indent=2))
    return 0


def cmd_count_params(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    from medbench.training.presets import main_count_params

    return main_count_params(args.preset, args.model, args.rank)
