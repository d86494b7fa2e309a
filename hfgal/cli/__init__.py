"""The `hfgal` command line: thin handlers over the library, one module per group of sub-commands.

The top of the package: it may import every stage, and no stage imports it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import OneLineUsageErrors, run_cli

# Each module exposes `register(subparsers)` adding its sub-commands; handlers are `args.func(args)`.
# Modules keep heavy imports inside their handlers so `hfgal --help` does not import torch.
_COMMAND_MODULES = (
    "hfgal.cli.train",  # hfgal train (the fine-tuning recipe)
    "hfgal.cli.data",  # hfgal data build | synthetic | download
    "hfgal.cli.publish",  # hfgal card, hfgal push
    "hfgal.cli.predict",  # hfgal predict
    "hfgal.cli.evaluate",  # hfgal evaluate
    "hfgal.cli.study",  # hfgal study report | push
    "hfgal.cli.demo",  # hfgal space build, hfgal demo
)


class HfgalArgumentParser(OneLineUsageErrors, argparse.ArgumentParser):
    """The `hfgal` parser; sub-command parsers inherit its class, so their usage errors are one line too."""


def build_parser() -> argparse.ArgumentParser:
    parser = HfgalArgumentParser(
        prog="hfgal", description="Galaxy morphology classification (Galaxy10 DECaLS) on the Hugging Face stack."
    )
    parser.add_argument("--version", action="version", version=f"hfgal {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    full = ["hfgal", *argv]

    def _run() -> int | None:
        parser = build_parser()
        # `hfgal train` hands every flag to the recipe's own parser (hundreds of Trainer flags): only it may leave
        # arguments unparsed here.
        args, rest = parser.parse_known_args(full[1:])
        if rest and args.command != "train":
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command == "train":
            args.recipe_args = rest + args.recipe_args
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return args.func(args)

    run_cli(_run, full)
