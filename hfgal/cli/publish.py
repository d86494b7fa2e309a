"""`hfgal card` and `hfgal push`: a finished run folder -> its model card -> a Hub model repo (one commit)."""

from __future__ import annotations


def _card(args) -> int:
    from ..hub.card import write_model_card

    if args.repo_id:
        from ..hub.access import validate_repo_id

        validate_repo_id(args.repo_id)
    print(f"wrote {write_model_card(args.output_dir, repo_id=args.repo_id)}")
    return 0


def _push(args) -> int:
    from ..hub.push import push_run

    url = push_run(
        args.output_dir,
        args.repo_id,
        private=True if args.private else None,
        revision=args.revision,
        commit_message=args.commit_message,
    )
    print(f"pushed {args.output_dir} to https://huggingface.co/{args.repo_id} ({url})")
    return 0


def register(subparsers) -> None:
    card = subparsers.add_parser("card", help="write the model card (README.md) of a finished run folder")
    card.add_argument("output_dir", metavar="OUTPUT_DIR", help="run folder written by recipes/finetune.py")
    card.add_argument("--repo-id", help="Hub id the model will be published as (USER/NAME), used in the card")
    card.set_defaults(func=_card)

    push = subparsers.add_parser("push", help="publish a finished run folder as a Hub model repo (one commit)")
    push.add_argument("output_dir", metavar="OUTPUT_DIR", help="run folder written by recipes/finetune.py")
    push.add_argument("--repo-id", required=True, metavar="USER/NAME", help="Hub model repo to create or update")
    push.add_argument("--private", action="store_true", help="create the repo private (an existing repo is unchanged)")
    push.add_argument("--revision", metavar="BRANCH", help="push to this branch (created when missing)")
    push.add_argument("--commit-message", metavar="MSG", help="commit title")
    push.set_defaults(func=_push)
