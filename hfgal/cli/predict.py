"""`hfgal predict`: classify galaxy images and folders (JPEG, PNG, TIFF, FITS) into a catalogue (CSV, Parquet or a
FITS table): one row per image with its sky position (from a FITS file's WCS), the top label, one probability column
per class and, on request, the image's embedding."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..catalogue import csv_text, probability_columns, table_format, write_table
from ..errors import HfgalError

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

EMBEDDING_COLUMN = "embedding"  # one (D,) vector per galaxy: a vector column in Parquet/FITS, embedding_<i> in CSV


def register(subparsers: Any) -> None:
    """Add `hfgal predict` to the `hfgal` command line."""
    parser = subparsers.add_parser(
        "predict",
        help="classify galaxy images (JPEG, PNG, TIFF, FITS) with a GZ10 model",
        description="Classify galaxy images or folders of them with a fine-tuned model and write a catalogue: "
        "path, ra and dec (the centre of a FITS cutout, from its WCS; empty for other images), label (the most "
        "probable class), probability, and p_<class> for every class. Probabilities are calibrated when the model "
        "has a calibration.json (hfgal evaluate --calibrate).",
    )
    parser.add_argument("--model", required=True, help="Hub repo id or local run folder")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    parser.add_argument("--tta", action="store_true", help="average over the 8 rotations/flips of each image")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument(
        "--output",
        "-o",
        help="catalogue to write atomically: .csv, .parquet or .fits (astro extra); CSV on stdout when omitted",
    )
    parser.add_argument(
        "--embeddings",
        action="store_true",
        help="add each image's pooled features (the classification head's input): an 'embedding' vector column "
        "in Parquet and FITS, embedding_0..embedding_<D-1> in CSV",
    )
    parser.add_argument(
        "--uncalibrated", action="store_true", help="the model's own probabilities, without its calibration.json"
    )
    parser.add_argument("--revision", help="Hub branch, tag or commit of --model")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: a GPU when there is one)")
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
    if args.embeddings:
        classifier.head()  # a model without a head hfgal can find fails before any image is read
    catalogue = Catalogue([classifier.id2label[i] for i in range(classifier.num_labels)])
    failed: list[tuple[Path, str]] = []
    started = time.perf_counter()
    with tqdm(total=len(files), unit="img", desc="hfgal predict", file=sys.stderr, disable=None) as bar:
        for start in range(0, len(files), args.batch_size):
            chunk, images, positions = [], [], []
            for path in files[start : start + args.batch_size]:
                try:
                    images.append(load_image(path))
                    positions.append(sky_position(path))
                    chunk.append(path)
                except HfgalError as err:
                    failed.append((path, str(err)))
                    tqdm.write(f"hfgal: warning: skipping {err}", file=sys.stderr)
            if images:
                options = {"tta": args.tta, "batch_size": args.batch_size, "calibrated": not args.uncalibrated}
                if args.embeddings:
                    catalogue.add(chunk, positions, *classifier.predict_and_embed(images, **options))
                else:
                    catalogue.add(chunk, positions, classifier.predict_proba(images, **options))
            bar.update(len(files[start : start + args.batch_size]))
    columns = catalogue.columns()
    if args.output:
        write_table(args.output, columns)
        logger.info("wrote %d predictions to %s", len(columns["path"]), args.output)
    else:
        sys.stdout.write(csv_text(columns))
        sys.stdout.flush()
    _summary(args, classifier, len(columns["path"]), time.perf_counter() - started)
    if failed:
        print(f"hfgal: {len(failed)} file(s) could not be read and were skipped:", file=sys.stderr)
        for path, _ in failed:
            print(f"  {path}", file=sys.stderr)
        return 1
    return 0


def sky_position(path: Path) -> tuple[float | None, float | None]:
    """(ra, dec) of a FITS cutout's centre from its WCS; (None, None) for other images or a FITS file without one."""
    from ..data.imageio import fits_sky_centre, is_fits_path

    centre = fits_sky_centre(path) if is_fits_path(path) else None
    return centre if centre is not None else (None, None)


class Catalogue:
    """The rows of an `hfgal predict` catalogue as they are classified, batch by batch."""

    def __init__(self, class_names: list[str]):
        self.class_names = class_names
        self.rows: dict[str, list] = {name: [] for name in ("path", "ra", "dec", "label", "probability")}
        self.rows.update({name: [] for name in probability_columns(class_names)})
        self.embeddings: list[np.ndarray] = []

    def add(self, paths: list[Path], positions: list, probs: np.ndarray, embeddings: np.ndarray | None = None):
        for path, (ra, dec), row in zip(paths, positions, probs, strict=True):
            best = int(row.argmax())
            self.rows["path"].append(str(path))
            self.rows["ra"].append(ra)
            self.rows["dec"].append(dec)
            self.rows["label"].append(self.class_names[best])
            self.rows["probability"].append(float(row[best]))
            for column, p in zip(probability_columns(self.class_names), row, strict=True):
                self.rows[column].append(float(p))
        if embeddings is not None:
            self.embeddings.append(embeddings)

    def columns(self) -> dict[str, Any]:
        """Column name -> values; the embeddings, when there are any, as one `(N, D)` float32 array."""
        if not self.embeddings:
            return dict(self.rows)
        import numpy as np

        return {**self.rows, EMBEDDING_COLUMN: np.concatenate(self.embeddings)}


def _summary(args: Any, classifier: Any, count: int, elapsed: float) -> None:
    calibration = ""
    if classifier.temperature is not None:
        calibration = " (uncalibrated)" if args.uncalibrated else f" (calibrated, T = {classifier.temperature:.3g})"
    print(
        f"hfgal: classified {count} image(s) in {elapsed:.1f}s with {classifier.source}{calibration} on "
        f"{classifier.device}" + (f" -> {args.output}" if args.output else ""),
        file=sys.stderr,
    )
