#!/usr/bin/env python
"""Run a whole study (Table 1, Table 2, variants) as one fine-tuning process per run, then write the report.

    python recipes/study.py --config recipes/study/full.yaml --output-dir studies/full
    python recipes/study.py --config recipes/study/smoke.yaml --launcher python        # offline, 2 CPU cores
    python recipes/study.py --config recipes/study/table1.yaml --emit-commands commands.txt   # SLURM array

The study runner is `hfgal.study.runner.run_study` (also `hfgal study run ...` from an install, where
`--config full` names a shipped study); this file is its entry point in a checkout. Every run launches the
installed recipe module (`accelerate launch --num_processes 1 -m hfgal.train ...`). Finished runs are skipped and
interrupted ones resume from their last checkpoint, so re-running the same command after a crash or a kill picks
up where the study stopped.
"""

from __future__ import annotations

import argparse

from hfgal.cli import HfgalArgumentParser
from hfgal.cli.study import add_run_arguments, run_command_line
from hfgal.errors import run_cli


def main() -> int:
    parser = HfgalArgumentParser(
        prog="study.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return run_command_line(parser.parse_args())


if __name__ == "__main__":
    run_cli(main, prog="study.py")
