"""`hfgal space build` and `hfgal demo`: the Gradio demo as a ready-to-push Space folder, or served locally."""

from __future__ import annotations

import shlex

from ..constants import DEFAULT_DATASET
from ..demo.app import DEFAULT_TITLE  # gradio itself is imported only when a demo is built


def _space_build_cmd(args) -> int:
    from ..demo.space import build_space, push_space

    title = args.title or DEFAULT_TITLE
    if args.push_to:
        from ..hub.access import check_push_access

        # Fail before building: a bad id, a missing token or offline mode should not cost a build first.
        check_push_access(args.push_to, instead="build without --push-to")
    out = build_space(
        args.model,
        args.out,
        examples=args.examples,
        dataset=args.dataset,
        title=title,
        overwrite=args.overwrite,
    )
    print(f"Space written to {out} (run it with: cd {shlex.quote(str(out))} && python app.py)")
    if args.push_to:
        url = push_space(out, args.push_to, private=args.private or None)
        print(f"Pushed to https://huggingface.co/spaces/{args.push_to} ({url})")
    return 0


def _demo_cmd(args) -> int:
    from ..data.imageio import MAX_FILE_BYTES
    from ..demo.app import build_demo

    demo = build_demo(args.model, examples_dir=args.examples, title=args.title or DEFAULT_TITLE)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_FILE_BYTES)
    return 0


def register(subparsers) -> None:
    """Add `hfgal space build` and `hfgal demo`."""
    space = subparsers.add_parser("space", help="build (and push) a Hugging Face Space for the demo")
    space_sub = space.add_subparsers(dest="space_command", metavar="SUBCOMMAND", required=True)
    build = space_sub.add_parser(
        "build",
        help="write a ready-to-push Gradio Space folder",
        description="Write a Gradio Space folder (app.py, pinned requirements.txt, README with Space metadata, "
        "example galaxies, copies of local model folders); optionally push it as one commit.",
    )
    build.add_argument(
        "--model", action="append", required=True, help="model folder or Hub repo id (repeat for several)"
    )
    build.add_argument("--out", required=True, help="Space folder to write")
    build.add_argument(
        "--examples", help="folder of example galaxy images (default: one per class from the GZ10 test split)"
    )
    build.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help=f"GZ10 source for default examples and the card's datasets entry (default: {DEFAULT_DATASET})",
    )
    build.add_argument("--title", help=f"Space title (default: {DEFAULT_TITLE!r})")
    build.add_argument("--push-to", metavar="USER/SPACE", help="upload the folder to this Space as one commit")
    build.add_argument("--private", action="store_true", help="create the Space private (with --push-to)")
    build.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    build.set_defaults(func=_space_build_cmd)

    demo = subparsers.add_parser(
        "demo", help="run the Gradio demo locally", description="Serve the galaxy classifier demo with Gradio."
    )
    demo.add_argument("--model", action="append", required=True, help="model folder or Hub repo id (repeatable)")
    demo.add_argument("--examples", help="folder of example galaxy images")
    demo.add_argument("--title", help=f"page title (default: {DEFAULT_TITLE!r})")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for the network)")
    demo.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    demo.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    demo.set_defaults(func=_demo_cmd)
