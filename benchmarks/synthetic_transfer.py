#!/usr/bin/env python
"""Sim-to-real transfer of the offline default: train on synthetic galaxies only, classify real GZ10 galaxies that
neither the training nor the renderer's calibration ever saw.

    python benchmarks/synthetic_transfer.py --sample ../shared/data/gz10-sample --work-dir runs/transfer
    python benchmarks/synthetic_transfer.py --sample DIR --work-dir runs/transfer --name gcnn \\
        -- --model gcnn-d4-tiny --model_config_overrides '{}'
    python benchmarks/synthetic_transfer.py --sample DIR --score-only runs/transfer/offline   # no training

Trains with the real recipe, `python recipes/finetune.py --config recipes/offline.yaml --output_dir
WORK_DIR/NAME` plus any recipe flags after `--` (a candidate model, epochs, ...), in a subprocess with its own
caches under WORK_DIR (the 2,000 synthetic galaxies are generated there) and the recipe's own thread count. Then
loads the run folder with `hfgal.load_classifier(run_dir)` and classifies the scoring half of the real sample
(`synthetic_calibration.sample_halves`: the images the renderer was never calibrated on; `--half calibration`
scores the calibration half instead, the development set). Prints the synthetic test accuracy, the training time,
per-class and overall real accuracy with a Wilson 95 % interval, the real confusion matrix, then one JSON line.
A finished run in WORK_DIR/NAME is reused (the recipe recognises it); `--overwrite` trains it again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_calibration import sample_halves  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = ["recipes/finetune.py", "--config", "recipes/offline.yaml"]


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def train(run_dir: Path, work_dir: Path, recipe_flags: list[str], overwrite: bool) -> float:
    """Run the offline recipe into `run_dir`; returns the wall time of the subprocess."""
    env = dict(os.environ)
    cache = work_dir / "cache"
    env.update(HF_DATASETS_CACHE=str(cache / "datasets"), HFGAL_CACHE=str(cache / "hfgal"), HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    cmd = [sys.executable, *RECIPE, "--output_dir", str(run_dir), *recipe_flags]
    if overwrite:
        cmd += ["--overwrite_output_dir", "true"]
    print("$ " + " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"synthetic_transfer.py: error: the recipe failed (exit {proc.returncode})")
    return wall


def score(run_dir: Path, images: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities `(N, 10)` and true labels of the real images."""
    from hfgal.inference import load_classifier

    classifier = load_classifier(str(run_dir), device="cpu")
    proba = classifier.predict_proba([str(p) for p, _ in images])
    return proba, np.array([label for _, label in images])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    recipe_flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", required=True, help="folder of real GZ10 PNGs with metadata.csv (121 images)")
    parser.add_argument("--work-dir", default="runs/transfer", help="run folders and caches (default runs/transfer)")
    parser.add_argument("--name", default="offline", help="run folder name under --work-dir (default offline)")
    parser.add_argument("--half", choices=("scoring", "calibration"), default="scoring", help="real images to score")
    parser.add_argument("--score-only", default=None, help="score this finished run folder; train nothing")
    parser.add_argument("--overwrite", action="store_true", help="train again even if the run folder is finished")
    parser.add_argument("--per-image", action="store_true", help="also print every image's prediction")
    args = parser.parse_args(argv)

    from hfgal.constants import GZ10_CLASSES, NUM_CLASSES
    from hfgal.runs import read_results

    calibration, scoring = sample_halves(Path(args.sample))
    images = scoring if args.half == "scoring" else calibration
    work_dir = Path(args.work_dir).resolve()
    wall = None
    if args.score_only:
        run_dir = Path(args.score_only)
    else:
        run_dir = work_dir / args.name
        wall = train(run_dir, work_dir, recipe_flags, args.overwrite)
    record = read_results(run_dir)
    if record is None:
        raise SystemExit(f"synthetic_transfer.py: error: {run_dir} has no results.json; train it first")
    proba, truth = score(run_dir, images)
    predicted = proba.argmax(-1)
    correct = int((predicted == truth).sum())
    # Mean log-loss: a smoother figure than accuracy on a few dozen images.
    log_loss = float(-np.log(np.clip(proba[np.arange(len(truth)), truth], 1e-12, None)).mean())
    low, high = wilson(correct, len(truth))
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    np.add.at(confusion, (truth, predicted), 1)

    print(
        f"{record.model} ({record.params_total:,} parameters), {record.image_size} px, {record.epochs:.0f} epochs on "
        f"{record.dataset}: {record.train_seconds:.1f} s of training ({record.hardware.torch_threads} threads), "
        f"synthetic test accuracy {record.test.accuracy:.4f} on {record.test.num_examples}"
    )
    print(f"real {args.half} half ({len(truth)} images): {correct}/{len(truth)} = {correct / len(truth):.4f} "
          f"(95% Wilson {low:.3f}-{high:.3f}), log-loss {log_loss:.3f}")  # fmt: skip
    if args.per_image:
        for (path, label), row in zip(images, proba, strict=True):
            print(f"  {path.name:<10} {label} -> {row.argmax()} (p={row.max():.2f}, true class p={row[label]:.2f})")
    for c in range(NUM_CLASSES):
        n = confusion[c].sum()
        print(f"  {c} {GZ10_CLASSES[c]:<24} {confusion[c, c]}/{n}   predicted as: {confusion[c].tolist()}")
    print(json.dumps({
        "benchmark": "synthetic_transfer",
        "run_dir": str(run_dir),
        "model": record.model,
        "params": record.params_total,
        "image_size": record.image_size,
        "epochs": record.epochs,
        "dataset": record.dataset,
        "recipe_flags": recipe_flags,
        "train_seconds": round(record.train_seconds or 0.0, 1),
        "recipe_wall_seconds": None if wall is None else round(wall, 1),
        "torch_threads": record.hardware.torch_threads,
        "load_1min": round(os.getloadavg()[0], 2),
        "synthetic_test_accuracy": round(record.test.accuracy, 4),
        "synthetic_test_images": record.test.num_examples,
        "real_half": args.half,
        "real_images": len(truth),
        "real_correct": correct,
        "real_accuracy": round(correct / len(truth), 4),
        "real_accuracy_ci95": [round(low, 4), round(high, 4)],
        "real_log_loss": round(log_loss, 4),
        "real_per_class": {int(c): [int(confusion[c, c]), int(confusion[c].sum())] for c in range(NUM_CLASSES)},
        "real_confusion": confusion.tolist(),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
