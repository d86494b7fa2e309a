"""The `hfgal` command line: one sub-command per concern, each registered by the module that implements it."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .utils import OneLineUsageErrors, run_cli

# Each module exposes `register_cli(subparsers)` adding its sub-commands; handlers are `args.func(args)`.
# Modules keep heavy imports inside their handlers so `hfgal --help` does not import torch.
_COMMAND_MODULES = (
    "hfgal.data",  # hfgal data build | synthetic
    "hfgal.cards",  # hfgal card
    "hfgal.hub",  # hfgal push
    "hfgal.inference",  # hfgal predict
    "hfgal.study",  # hfgal study report | push
    "hfgal.space",  # hfgal space build, hfgal demo
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
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    full = ["hfgal", *argv]

    def _run() -> int | None:
        parser = build_parser()
        args = parser.parse_args(full[1:])
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return args.func(args)

    run_cli(_run, full)


if __name__ == "__main__":
    main()
