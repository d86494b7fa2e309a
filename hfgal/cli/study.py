"""`hfgal study run | report | push`: run a benchmark study (one fine-tuning process per run, resumable), write
its tables, plots and report, and publish it as a Hub dataset."""

from __future__ import annotations

import argparse
from typing import Any

RUN_EXAMPLES = """\
examples:
  hfgal study run --config full --output-dir studies/full          # a study shipped with hfgal, by name
  hfgal study run --config smoke --launcher python                 # offline, 2 CPU cores, a few minutes
  hfgal study run --config my_study.yaml --emit-commands cmds.txt  # one line per run, for a SLURM array

Finished runs are skipped and interrupted ones resume from their last checkpoint, so running the same command
again after a crash or a kill picks up where the study stopped.
"""


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `hfgal study run` (and of `recipes/study.py`, its entry point in a checkout)."""
    from ..study.plan import shipped_studies
    from ..study.runner import DEFAULT_LAUNCHER, RECIPE_MODULE

    names = ", ".join(shipped_studies())
    parser.add_argument("--config", required=True, help=f"study YAML, or a study shipped with hfgal: {names}")
    parser.add_argument("--output-dir", default=None, help="study folder (default: studies/<study name>)")
    parser.add_argument("--dry-run", action="store_true", help="print every run and its exact command, run nothing")
    parser.add_argument("--emit-commands", metavar="FILE", help="write one command per unfinished run, run nothing")
    parser.add_argument("--force", action="store_true", help="reuse an output folder that holds a different study")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, each its own process (default 1)")
    parser.add_argument("--gpus", default=None, help="comma-separated GPU ids: one run per GPU at a time (e.g. 0,1)")
    parser.add_argument(
        "--launcher", default=DEFAULT_LAUNCHER, help=f"command prefix of every run (default: {DEFAULT_LAUNCHER})"
    )
    parser.add_argument(
        "--recipe",
        default=RECIPE_MODULE,
        help=f"fine-tuning recipe: a module run with -m, or a script's path (default: {RECIPE_MODULE})",
    )


def run_command_line(args: argparse.Namespace) -> int:
    """Handler of `hfgal study run` / `recipes/study.py`: run the study the parsed flags describe."""
    from ..study.runner import run_study

    return run_study(
        args.config,
        args.output_dir,
        launcher=args.launcher,
        recipe=args.recipe,
        jobs=args.jobs,
        dry_run=args.dry_run,
        emit_commands=args.emit_commands,
        force=args.force,
        gpus=args.gpus.split(",") if args.gpus else None,
    )


def _report(args) -> int:
    from ..study.report import write_report

    print(write_report(args.study_dir))
    return 0


def _push(args) -> int:
    from ..study.publish import push_study

    print(push_study(args.study_dir, args.repo_id, private=args.private or None))
    return 0


def register(subparsers: Any) -> None:
    """Add `hfgal study run | report | push` to the `hfgal` command line."""
    study = subparsers.add_parser("study", help="run, report or publish a benchmark study")
    sub = study.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    run = sub.add_parser(
        "run",
        help="run every unfinished run of a study, one process each, then write its report",
        description="Run a study (Table 1, Table 2, variants) as one fine-tuning process per run, then report it.",
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(run)
    run.set_defaults(func=run_command_line)
    report = sub.add_parser("report", help="write Table 1, Table 2, plots and report.md from a study folder")
    report.add_argument("study_dir", help="folder written by `hfgal study run` (holds study.yaml and runs/)")
    report.set_defaults(func=_report)
    push = sub.add_parser("push", help="publish tables, plots, report and every results.json as a Hub dataset")
    push.add_argument("study_dir", help="folder written by `hfgal study run`")
    push.add_argument("--repo-id", required=True, help="dataset repo, USER/NAME")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.set_defaults(func=_push)
