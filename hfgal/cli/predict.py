"""`hfgal predict`: classify galaxy images and folders (JPEG, PNG, TIFF, FITS) into a CSV."""

from __future__ import annotations

import csv
import io
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import HfgalError
from ..io import atomic_write_text

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add `hfgal predict` to the `hfgal` command line."""
    parser = subparsers.add_parser(
        "predict",
        help="classify galaxy images (JPEG, PNG, TIFF, FITS) with a GZ10 model",
        description="Classify galaxy images or folders of them with a fine-tuned model and write a CSV "
        "(path, label, probability, top_k).",
    )
    parser.add_argument("--model", required=True, help="Hub repo id or local run folder")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    parser.add_argument("--tta", action="store_true", help="average over the 8 rotations/flips of each image")
    parser.add_argument("--top-k", type=int, default=5, help="labels listed in the top_k column (default 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--output", "-o", help="CSV file to write (atomically); printed to stdout when omitted")
    parser.add_argument("--revision", help="Hub branch, tag or commit of --model")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow custom modelling code from the model repo"
    )
    parser.set_defaults(func=predict_command)


def predict_command(args: Any) -> int:
    """Handler of `hfgal predict`: classify every image, write the CSV, exit 1 if any image was unreadable."""
    from tqdm import tqdm

    from ..data.imageio import collect_image_paths, load_image
    from ..inference import load_classifier

    if args.top_k < 1:
        raise HfgalError(f"--top-k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise HfgalError(f"--batch-size must be at least 1, got {args.batch_size}")
    files = collect_image_paths(args.paths)
    classifier = load_classifier(
        args.model, args.revision, device=args.device, trust_remote_code=args.trust_remote_code
    )
    top_k = min(args.top_k, classifier.num_labels)
    rows: list[list[str]] = []
    failed: list[tuple[Path, str]] = []
    started = time.perf_counter()
    with tqdm(total=len(files), unit="img", desc="hfgal predict", file=sys.stderr, disable=None) as bar:
        for start in range(0, len(files), args.batch_size):
            chunk, images = [], []
            for path in files[start : start + args.batch_size]:
                try:
                    images.append(load_image(path))
                    chunk.append(path)
                except HfgalError as err:
                    failed.append((path, str(err)))
                    tqdm.write(f"hfgal: warning: skipping {err}", file=sys.stderr)
            if images:
                probs = classifier.predict_proba(images, tta=args.tta, batch_size=args.batch_size)
                for path, row in zip(chunk, probs, strict=True):
                    best = classifier.ranked_labels(row, top_k)
                    top = ";".join(f"{p['label']}:{p['score']:.4f}" for p in best)
                    rows.append([str(path), best[0]["label"], f"{best[0]['score']:.6f}", top])
            bar.update(len(files[start : start + args.batch_size]))
    text = _csv_text(rows)
    if args.output:
        atomic_write_text(args.output, text)
        logger.info("wrote %d predictions to %s", len(rows), args.output)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    elapsed = time.perf_counter() - started
    print(
        f"hfgal: classified {len(rows)} image(s) in {elapsed:.1f}s with {classifier.source}"
        + (f" -> {args.output}" if args.output else ""),
        file=sys.stderr,
    )
    if failed:
        print(f"hfgal: {len(failed)} file(s) could not be read and were skipped:", file=sys.stderr)
        for path, _ in failed:
            print(f"  {path}", file=sys.stderr)
        return 1
    return 0


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "probability", "top_k"])
    writer.writerows(rows)
    return buffer.getvalue()
