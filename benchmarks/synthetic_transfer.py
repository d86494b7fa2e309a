#!/usr/bin/env python
"""Sim-to-real transfer of the offline default: train on synthetic galaxies only, classify real GZ10 galaxies that
neither the training nor the renderer's calibration ever saw.

    python benchmarks/synthetic_transfer.py --sample ../shared/data/gz10-sample --work-dir runs/transfer
    python benchmarks/synthetic_transfer.py --sample DIR --work-dir runs/transfer --name gcnn \\
        -- --model gcnn-d4-tiny --model_config_overrides '{}'
    python benchmarks/synthetic_transfer.py --sample DIR --score-only runs/transfer/offline   # no training
    python benchmarks/synthetic_transfer.py --sample DIR --candidate convnextv2     # a candidate of docs/synthetic.md
    python benchmarks/synthetic_transfer.py --step-cost                            # their training steps, interleaved

Trains with the real recipe, `python recipes/finetune.py --config recipes/offline.yaml --output_dir
WORK_DIR/NAME` plus any recipe flags after `--` (a candidate model, epochs, ...), in a subprocess with its own
caches under WORK_DIR (the synthetic galaxies are generated there) and the recipe's own thread count. Then
loads the run folder with `hfgal.load_classifier(run_dir)` and classifies the scoring half of the real sample
(`synthetic_calibration.sample_halves`: the images the renderer was never calibrated on; `--half calibration`
scores the calibration half instead, the development set). Prints the synthetic test accuracy, the training time,
per-class and overall real accuracy with a Wilson 95 % interval, the real confusion matrix, then one JSON line.
A finished run in WORK_DIR/NAME is reused (the recipe recognises it); `--overwrite` trains it again.

`--candidate NAME` trains one of `CANDIDATES` (the offline default's alternatives) into WORK_DIR/NAME.
`--step-cost` times training steps (forward, backward, AdamW; batch 64 at 64 px) of every candidate, interleaved
round by round in one process, on one thread by default, and prints the median CPU milliseconds per image and the
cost relative to the default: a comparison of training cost that survives a busy machine (candidates that differ
only in their data share one model and one figure).
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
CONVNEXT = '{"depths": [1, 1, 2, 1], "hidden_sizes": [24, 48, 96, 192], "drop_path_rate": 0.0}'
CONVNEXT_FLAGS = ["--model", "convnextv2-tiny", "--model_config_overrides", CONVNEXT]
# name -> recipe flags on top of recipes/offline.yaml. The first is the default itself (no flags); docs/synthetic.md
# tabulates them all.
CANDIDATES = {
    "cnn-c1-24": [],
    "cnn-c1-16": ["--model_config_overrides", '{"group": "C1", "hidden_sizes": [16, 32, 64, 128]}'],
    # gcnn-d4-tiny as named (fields 8-16-32-64, i.e. 64-512 channels), and at the default's channel widths
    # (fields 3-6-12-24 of 8 channels: 24-192 channels, 8x fewer weights shared over the group).
    "gcnn-d4-tiny": ["--model_config_overrides", "{}"],
    "gcnn-d4-24ch": ["--model_config_overrides", '{"hidden_sizes": [3, 6, 12, 24]}'],
    "convnextv2": CONVNEXT_FLAGS,
    # The previous default's model and data size, on the same renderer.
    "convnextv2-2000": [*CONVNEXT_FLAGS, "--dataset", "synthetic:2000"],
}
DEFAULT = next(name for name, flags in CANDIDATES.items() if not flags)


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


def _candidate_model(flags: list[str]):
    """The candidate's model as the recipe builds it, from recipes/offline.yaml and its flags (the recipe's parser)."""
    from hfgal.models.loading import load_model
    from hfgal.train.args import parse_args

    model_args, _, _ = parse_args(["--config", str(REPO / RECIPE[2]), *flags])
    overrides = json.loads(model_args.model_config_overrides or "{}")
    size = int(model_args.image_size)
    return load_model(model_args.model_name_or_path, init="scratch", config_overrides=overrides,
                      image_size=(size, size)).model  # fmt: skip


def _model_flags(flags: list[str]) -> tuple[str, ...]:
    """The flags that choose the model: candidates that differ only in their data share one training step."""
    pairs = zip(flags[::2], flags[1::2], strict=True)
    return tuple(x for key, value in pairs if key != "--dataset" for x in (key, value))


def step_cost(rounds: int, threads: int, steps: int = 4, batch: int = 64) -> int:
    """CPU time and images/s of each candidate's training step, interleaved; prints costs relative to the default.

    With one thread (the default) the CPU time is what the step computes, whatever else the machine runs; wall
    time with more threads also measures how well the step parallelises, and how busy the machine was.
    """
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    names = {_model_flags(flags): name for name, flags in reversed(CANDIDATES.items())}  # first name per model
    models = {name: _candidate_model(list(flags)) for flags, name in names.items()}
    optimizers = {name: torch.optim.AdamW(m.parameters(), 1e-3) for name, m in models.items()}
    x, y = torch.randn(batch, 3, 64, 64), torch.randint(0, 10, (batch,))
    cpu: dict[str, list[float]] = {name: [] for name in models}  # CPU seconds per image
    rates: dict[str, list[float]] = {name: [] for name in models}  # images per wall second
    for _ in range(rounds + 1):  # the first round warms up
        for name, model in models.items():
            model.train()
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
                optimizers[name].zero_grad()
                loss.backward()
                optimizers[name].step()
            cpu[name].append((time.process_time() - start_cpu) / (steps * batch))
            rates[name].append(steps * batch / (time.perf_counter() - start))
    record = {}
    for name, flags in CANDIDATES.items():
        model = names[_model_flags(flags)]
        params = sum(p.numel() for p in models[model].parameters())
        record[name] = {"cpu_ms_per_image": 1e3 * float(np.median(cpu[model][1:])), "params": params,
                        "images_per_second": float(np.median(rates[model][1:]))}  # fmt: skip
    base = record[DEFAULT]["cpu_ms_per_image"]
    for name, r in record.items():
        cost = r["cpu_ms_per_image"] / base
        print(f"{name:<16} {r['params']:>9,} parameters  {r['cpu_ms_per_image']:6.2f} CPU ms/image  "
              f"cost x{cost:.2f} of {DEFAULT}  ({r['images_per_second']:.0f} images/s)")  # fmt: skip
    print(json.dumps({"benchmark": "synthetic_transfer_step_cost", "threads": threads, "rounds": rounds,
                      "load_1min": round(os.getloadavg()[0], 2), "candidates": record}))  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    recipe_flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", help="folder of real GZ10 PNGs with metadata.csv (121 images)")
    parser.add_argument("--work-dir", default="runs/transfer", help="run folders and caches (default runs/transfer)")
    parser.add_argument("--name", default="offline", help="run folder name under --work-dir (default offline)")
    parser.add_argument("--half", choices=("scoring", "calibration"), default="scoring", help="real images to score")
    parser.add_argument("--score-only", default=None, help="score this finished run folder; train nothing")
    parser.add_argument("--overwrite", action="store_true", help="train again even if the run folder is finished")
    parser.add_argument("--per-image", action="store_true", help="also print every image's prediction")
    parser.add_argument("--candidate", choices=sorted(CANDIDATES), help="train this candidate (named --name NAME)")
    parser.add_argument("--step-cost", action="store_true", help="time the candidates' training steps; no run")
    parser.add_argument("--rounds", type=int, default=5, help="--step-cost: timed rounds, after one warm-up round")
    parser.add_argument("--threads", type=int, default=1, help="--step-cost: torch threads (default 1)")
    args = parser.parse_args(argv)
    if args.step_cost:
        return step_cost(args.rounds, args.threads)
    if args.sample is None:
        parser.error("--sample is required (except with --step-cost)")
    if args.candidate:
        recipe_flags, args.name = CANDIDATES[args.candidate] + recipe_flags, args.candidate

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
