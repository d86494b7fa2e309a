#!/usr/bin/env python
"""Run a whole study (Table 1, Table 2, variants) as one fine-tuning process per run, then write the report.

    python recipes/study.py --config recipes/study/full.yaml --output-dir studies/full
    python recipes/study.py --config recipes/study/smoke.yaml --launcher python        # offline, 2 CPU cores
    python recipes/study.py --config recipes/study/table1.yaml --emit-commands commands.txt   # SLURM array

Finished runs are skipped and interrupted ones resume from their last checkpoint, so re-running the same
command after a crash or a kill picks up where the study stopped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hfgal.errors import OneLineUsageErrors, run_cli
from hfgal.study.runner import DEFAULT_LAUNCHER, run_study


class StudyArgumentParser(OneLineUsageErrors, argparse.ArgumentParser):
    """Usage errors in one line (`study.py: error: ...`), like the errors of the study itself."""


def main() -> int:
    parser = StudyArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="study YAML (recipes/study/*.yaml)")
    parser.add_argument("--output-dir", default=None, help="study folder (default: studies/<study name>)")
    parser.add_argument("--dry-run", action="store_true", help="print every run and its exact command, run nothing")
    parser.add_argument("--emit-commands", metavar="FILE", help="write one command per unfinished run, run nothing")
    parser.add_argument("--force", action="store_true", help="reuse an output folder that holds a different study")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, each its own process (default 1)")
    parser.add_argument(
        "--gpus", default=None, help="comma-separated GPU ids: one run per GPU at a time (e.g. 0,1,2,3)"
    )
    parser.add_argument("--launcher", default=DEFAULT_LAUNCHER, help=f"command prefix (default: {DEFAULT_LAUNCHER})")
    parser.add_argument(
        "--recipe", default=str(Path(__file__).with_name("finetune.py")), help="fine-tuning recipe to launch"
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    args = parser.parse_args()
    return run_study(
        args.config,
        args.output_dir,
        recipe=args.recipe,
        launcher=args.launcher,
        jobs=args.jobs,
        dry_run=args.dry_run,
        emit_commands=args.emit_commands,
        force=args.force,
        gpus=args.gpus.split(",") if args.gpus else None,
    )


if __name__ == "__main__":
    run_cli(main, prog="study.py")
