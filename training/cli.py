"""``medbench train ...``: the training module's commands.

* ``medbench train show-config NAME|FILE [key=value ...]``: the resolved config (what a run card records);
* ``medbench train count-params --preset NAME [--model DIR] [--rank R]``: trainable LoRA parameters per component,
  counted on the model's architecture built on the ``meta`` device (no weights are read or downloaded).

:func:`configure_parser` adds them under ``medbench train`` (each ``func`` has the signature of ``medbench.cli``'s
commands).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from medbench.training.config import PRESET_NAMES, TrainConfig, shipped


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``show-config`` and ``count-params`` subcommands under ``parser`` (``medbench train``)."""
    sub = parser.add_subparsers(dest="train_command", required=True, metavar="COMMAND")
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


def cmd_show_config(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    config = TrainConfig.load(args.train_config, args.overrides)
    print(json.dumps({"config": config.resolved(), "sha256": config.sha256()}, indent=2))
    return 0


def cmd_count_params(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    from medbench.training.presets import main_count_params

    return main_count_params(args.preset, args.model, args.rank)
