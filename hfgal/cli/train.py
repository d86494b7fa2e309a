"""`hfgal train`: the fine-tuning recipe (`hfgal.train.finetune`) from the command line of an install."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add `hfgal train` to the `hfgal` command line: every argument goes to the recipe's own parser."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model on GZ10 (the recipe; `hfgal train --help` lists every flag)",
        description="Fine-tune a vision backbone on Galaxy10 DECaLS: `hfgal train --config offline`, "
        "`hfgal train --model facebook/dinov2-base`. Under a launcher: `accelerate launch -m hfgal.train ...`.",
        add_help=False,
    )
    parser.add_argument("recipe_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # see hfgal.cli.main
    parser.set_defaults(func=train_command)


def train_command(args: Any) -> int:
    """Handler of `hfgal train`: parse the recipe's arguments and run it in this process."""
    from ..errors import require_extra

    require_extra("train", "hfgal train")
    from ..train.args import parse_args
    from ..train.finetune import main

    return main(*parse_args(args.recipe_args, prog="hfgal train"))
