"""``medbench testing tiny-model [--family F] [--seed N] [--lora DIR] OUT``: save a tiny random model of a family
offline, to try medbench's Hugging Face path (``medbench run --demo --models hf:OUT``) without downloading weights.

:func:`configure_parser` adds the subcommands to ``medbench testing``'s parser (their ``func`` has the signature of
``medbench.cli``'s commands); :func:`main` runs them on their own (``python -m medbench.testing``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from medbench.errors import MedbenchError, UsageError
from medbench.testing.families import FAMILIES
from medbench.testing.vlms import LORA_SEED_OFFSET, build_tiny_lora, build_tiny_model


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``tiny-model`` subcommand under ``parser`` (``medbench testing``); ``args.func(args, argv)`` runs it
    and returns the exit code."""
    sub = parser.add_subparsers(dest="testing_command", required=True, metavar="COMMAND")
    tiny = sub.add_parser(
        "tiny-model",
        help="save a tiny random image-text-to-text model of a family (offline, about a second)",
        description="Save a tiny, randomly initialised model of a family (config, weights, tokenizer, processor, "
        "chat template) that loads like the real checkpoint. Its outputs are random text: it tests the pipeline, "
        "not medicine.",
    )
    tiny.add_argument("out", metavar="OUT", type=Path, help="a new or empty folder to save the model in")
    tiny.add_argument("--family", choices=FAMILIES, default="mllama", help="the model_type (default: mllama)")
    tiny.add_argument("--seed", type=int, default=0, help="random seed of the weights (default: 0)")
    tiny.add_argument("--lora", metavar="DIR", type=Path, help="also save a random LoRA adapter for it in DIR")
    tiny.set_defaults(func=cmd_tiny_model)


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"building a tiny model needs {', '.join(missing)}, which is not installed: "
            "pip install 'medbench[hf]' (on a CPU-only machine add -c constraints-cpu.txt)"
        )


def _empty_folder(path: Path, what: str) -> None:
    """Refuse a folder with files in it: the new checkpoint must not be mixed with another one's files."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        kind = "folder" if path.is_dir() else "file"
        raise UsageError(
            f"{what} {path} is an existing {'non-empty ' if kind == 'folder' else ''}{kind}; give a new or empty folder"
        )


def cmd_tiny_model(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    """Build what ``args`` (from :func:`configure_parser`) asks for, print where it is and how to run it; 0."""
    lora: Path | None = args.lora
    _require("torch", "transformers", "tokenizers", *(["peft"] if lora else []))
    _empty_folder(args.out, "OUT")
    if lora is not None:
        if lora.resolve() == args.out.resolve():
            raise UsageError(f"--lora {lora} is OUT itself; the adapter needs a folder of its own")
        _empty_folder(lora, "--lora")
    model = build_tiny_model(args.family, args.out, seed=args.seed).resolve()
    print(f"tiny {args.family} model: {model}")
    name = f"hf:{model}"
    if lora is not None:
        adapter = build_tiny_lora(model, lora, seed=args.seed + LORA_SEED_OFFSET).resolve()
        print(f"LoRA adapter: {adapter}")
        name += f"+lora:{adapter}"
    print(f"try it: medbench run --demo --models {name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``medbench testing`` on its own: ``main(["tiny-model", "--family", "llava", "OUT"])``; the exit code
    (2, with the message on stderr, for a :class:`~medbench.errors.MedbenchError`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="medbench testing", description="Offline test fixtures for medbench.")
    configure_parser(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args, ["medbench", "testing", *argv]))
    except MedbenchError as exc:
        print(f"medbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
