"""`hfgal predict`: classify galaxy images and folders (JPEG, PNG, TIFF, FITS) into a catalogue (CSV or Parquet): one
row per image, the top label and one probability column per class."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from ..catalogue import csv_text, probability_columns, table_format, write_table
from ..errors import HfgalError

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add `hfgal predict` to the `hfgal` command line."""
    parser = subparsers.add_parser(
        "predict",
        help="classify galaxy images (JPEG, PNG, TIFF, FITS) with a GZ10 model",
        description="Classify galaxy images or folders of them with a fine-tuned model and write a catalogue: "
        "path, label (the most probable class), probability, and p_<class> for every class.",
    )
    parser.add_argument("--model", required=True, help="Hub repo id or local run folder")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    parser.add_argument("--tta", action="store_true", help="average over the 8 rotations/flips of each image")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument(
        "--output", "-o", help="catalogue to write atomically: .csv or .parquet; CSV on stdout when omitted"
    )
    parser.add_argument("--revision", help="Hub branch, tag or commit of --model")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow custom modelling code from the model repo"
    )
    parser.set_defaults(func=predict_command)


def predict_command(args: Any) -> int:
    """Handler of `hfgal predict`: classify every image, write the catalogue, exit 1 if any image was unreadable."""
    from tqdm import tqdm

    from ..data.imageio import collect_image_paths, load_image
    from ..inference import load_classifier

    if args.batch_size < 1:
        raise HfgalError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.output:
        table_format(args.output)  # an unknown format fails before any model is loaded
    files = collect_image_paths(args.paths)
    classifier = load_classifier(
        args.model, args.revision, device=args.device, trust_remote_code=args.trust_remote_code
    )
    names = [classifier.id2label[i] for i in range(classifier.num_labels)]
    columns: dict[str, list] = {"path": [], "label": [], "probability": []}
    columns.update({name: [] for name in probability_columns(names)})
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
                _add_rows(columns, chunk, probs, names)
            bar.update(len(files[start : start + args.batch_size]))
    if args.output:
        write_table(args.output, columns)
        logger.info("wrote %d predictions to %s", len(columns["path"]), args.output)
    else:
        sys.stdout.write(csv_text(columns))
        sys.stdout.flush()
    elapsed = time.perf_counter() - started
    print(
        f"hfgal: classified {len(columns['path'])} image(s) in {elapsed:.1f}s with {classifier.source}"
        + (f" -> {args.output}" if args.output else ""),
        file=sys.stderr,
    )
    if failed:
        print(f"hfgal: {len(failed)} file(s) could not be read and were skipped:", file=sys.stderr)
        for path, _ in failed:
            print(f"  {path}", file=sys.stderr)
        return 1
    return 0


def _add_rows(columns: dict[str, list], paths: list[Path], probs: Any, names: list[str]) -> None:
    for path, row in zip(paths, probs, strict=True):
        best = int(row.argmax())
        columns["path"].append(str(path))
        columns["label"].append(names[best])
        columns["probability"].append(float(row[best]))
        for column, p in zip(probability_columns(names), row, strict=True):
            columns[column].append(float(p))
