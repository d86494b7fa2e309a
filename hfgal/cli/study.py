"""`hfgal study report | push`: the tables, plots and report of a study folder, and its publication as a Hub
dataset (run the study itself with recipes/study.py)."""

from __future__ import annotations


def _report(args) -> int:
    from ..study.report import write_report

    print(write_report(args.study_dir))
    return 0


def _push(args) -> int:
    from ..study.publish import push_study

    print(push_study(args.study_dir, args.repo_id, private=args.private or None))
    return 0


def register(subparsers) -> None:
    study = subparsers.add_parser("study", help="report or publish a benchmark study (run it with recipes/study.py)")
    sub = study.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    report = sub.add_parser("report", help="write Table 1, Table 2, plots and report.md from a study folder")
    report.add_argument("study_dir", help="folder written by recipes/study.py (holds study.yaml and runs/)")
    report.set_defaults(func=_report)
    push = sub.add_parser("push", help="publish tables, plots, report and every results.json as a Hub dataset")
    push.add_argument("study_dir", help="folder written by recipes/study.py")
    push.add_argument("--repo-id", required=True, help="dataset repo, USER/NAME")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.set_defaults(func=_push)
