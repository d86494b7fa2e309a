"""Real vs synthetic GZ10 montage: one row per class, real cutouts on the left, synthetic ones on the right.

    python benchmarks/montage.py montage.png                      # real images from tests/data/gz10-sample
    python benchmarks/montage.py docs/images/synthetic-montage.jpg --real-dir ../shared/data/gz10-sample \
        --calibration-half --per-class 4 --thumb 96               # the montage of docs/synthetic.md

DIR holds PNGs and a `metadata.csv` with `file_name,label` columns (an imagefolder of GZ10 cutouts).
`--calibration-half` shows only the calibration half of DIR (`synthetic_calibration.sample_halves`): the renderer
was fitted to those images, and the held-out scoring half stays unseen. The repository's 30 images are all in the
scoring half. The output is a PNG, or a JPEG (quality 85) for a `.jpg` name.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hfgal.constants import GZ10_CLASSES, NUM_CLASSES
from hfgal.data.synthetic import render_galaxy
from hfgal.errors import HfgalError, run_cli

DEFAULT_REAL_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "gz10-sample"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output PNG path")
    parser.add_argument("--real-dir", default=str(DEFAULT_REAL_DIR), help="folder of real PNGs with metadata.csv")
    parser.add_argument("--per-class", type=int, default=4, help="images per class on each side (default 4)")
    parser.add_argument("--thumb", type=int, default=128, help="thumbnail side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic galaxies")
    parser.add_argument(
        "--calibration-half", action="store_true", help="only the calibration half of --real-dir (the full sample)"
    )
    return parser.parse_args(argv)


def real_by_class(real_dir: Path, per_class: int, calibration_half: bool = False) -> dict[int, list[Path]]:
    """The first `per_class` files of each label listed in `real_dir/metadata.csv` (of its calibration half)."""
    meta = real_dir / "metadata.csv"
    if not meta.is_file():
        raise HfgalError(f"{meta} not found; pass --real-dir a folder of GZ10 PNGs with metadata.csv")
    if calibration_half:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from synthetic_calibration import sample_halves

        rows = [(path.name, label) for path, label in sample_halves(real_dir)[0]]
    else:
        with meta.open(newline="") as f:
            rows = [(row["file_name"], int(row["label"])) for row in csv.DictReader(f)]
    by_class: dict[int, list[Path]] = {c: [] for c in range(NUM_CLASSES)}
    for name, label in rows:
        if len(by_class[label]) < per_class:
            by_class[label].append(real_dir / name)
    return by_class


def montage(real: dict[int, list[Path]], per_class: int, thumb: int, seed: int) -> Image.Image:
    """Build the montage: a label column, `per_class` real and `per_class` synthetic thumbnails per row."""
    label_w, gap, header = 190, 12, 24
    width = label_w + 2 * per_class * thumb + gap
    canvas = Image.new("RGB", (width, header + NUM_CLASSES * thumb), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    draw.text((label_w, 4), "real (Galaxy10 DECaLS)", fill=(0, 0, 0), font=font)
    draw.text((label_w + per_class * thumb + gap, 4), "synthetic (hfgal.data.synthetic)", fill=(0, 0, 0), font=font)
    for c in range(NUM_CLASSES):
        top = header + c * thumb
        draw.text((6, top + thumb // 2 - 8), f"{c} {GZ10_CLASSES[c]}", fill=(0, 0, 0), font=font)
        for j, path in enumerate(real[c]):
            canvas.paste(Image.open(path).convert("RGB").resize((thumb, thumb)), (label_w + j * thumb, top))
        for j in range(per_class):
            rng = np.random.default_rng([seed, c, j])
            img = Image.fromarray(render_galaxy(c, rng)).resize((thumb, thumb))
            canvas.paste(img, (label_w + (per_class + j) * thumb + gap, top))
    return canvas


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.per_class < 1 or args.thumb < 16:
        raise HfgalError("--per-class must be >= 1 and --thumb >= 16; use e.g. --per-class 4 --thumb 128")
    out = Path(args.out)
    kind = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(out.suffix.lower())
    if kind is None:
        raise HfgalError(f"{out} is not a .png or .jpg path; give the montage one of those names")
    real = real_by_class(Path(args.real_dir), args.per_class, args.calibration_half)
    image = montage(real, args.per_class, args.thumb, args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so an interrupted run never leaves half a PNG behind.
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format=kind, **({"quality": 85} if kind == "JPEG" else {}))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {out}")


if __name__ == "__main__":
    run_cli(main)
