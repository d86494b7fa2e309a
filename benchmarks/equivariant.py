#!/usr/bin/env python
"""The rotation-equivariant GCNN against a ConvNeXt V2 of the same size, both from scratch (a benchmark).

    python benchmarks/equivariant.py accuracy            # the table: 2 models x 500/1,000/2,000 images x 3 seeds
    python benchmarks/equivariant.py speed               # training images/s, model only, same batch and input
    python benchmarks/equivariant.py invariance          # how far arbitrary rotations move the logits (random init)
    python benchmarks/equivariant.py invariance --train-steps 400 --device cuda   # ... after a short training

accuracy: every cell runs the real recipe (`recipes/finetune.py` main, in this process) on the synthetic default,
`synthetic:2500` split 80/10/10 (2,000 train / 250 validation / 250 test, split seed 42), training on the first
N = 500, 1,000 or 2,000 training images (`--max_train_samples`), the same number of optimizer steps for every N
(so every cell costs the same), 64 px, the offline recipe's optimisation (AdamW 2e-3, weight decay 0.05, 10 %
warm-up, cosine, label smoothing 0.1, batch 64, D4 + affine augmentation). The checkpoint is chosen on validation
accuracy (evaluated 10 times per run) and test is evaluated once. It then scores each selected model on the 30 real
GZ10 galaxies of `tests/data/gz10-sample` (trained on synthetic galaxies only: a test of transfer to real images,
chance 3/30) and measures its rotation invariance there. Runs are kept in `--work-dir`: rerunning the command
reuses finished runs. Training images/s are taken from each run's results.json; on a shared machine they are
provisional (use `speed` on an idle machine).

speed: forward + backward + AdamW step on a batch already on the device, warm-up, then the median of timed steps.

invariance: `hfgal.models.equivariant.invariance.rotation_invariance` on the real sample for the GCNN with groups
C1 (no symmetry), D4, D8, D16 (the fields of gcnn-d4-tiny) and a ConvNeXt V2 of similar size. With
`--train-steps`, each is first trained by a minimal loop (not the recipe): AdamW 2e-3, cosine, batch 64, hfgal's
on-device D4 + affine augmentation, on 2,000 synthetic galaxies (catalogue seed 0), and its accuracy on 500
held-out synthetic galaxies (seed 1) at the last step is printed with it. This mode needs only torch + transformers,
so it runs on a GPU machine without the rest of hfgal's dependencies.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "tests" / "data" / "gz10-sample"
ANGLES = (15.0, 30.0, 45.0, 60.0, 75.0, 90.0)
# name -> (named config, overrides): the GCNN and a ConvNeXt V2 of about its parameter count (0.20 M vs 0.21 M).
CONTENDERS = {
    "gcnn-d4-tiny": ("gcnn-d4-tiny", {}),
    "convnextv2-0.21M": (
        "convnextv2-tiny",
        {"depths": [1, 1, 2, 1], "hidden_sizes": [14, 28, 56, 112], "drop_path_rate": 0.0},
    ),
    "convnextv2-offline": (  # the offline default's ConvNeXt V2 (recipes/offline.yaml)
        "convnextv2-tiny",
        {"depths": [1, 1, 2, 1], "hidden_sizes": [24, 48, 96, 192], "drop_path_rate": 0.0},
    ),
}
GROUPS = ("C1", "D4", "D8", "D16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("accuracy", "speed", "invariance"))
    parser.add_argument("--models", nargs="+", default=["gcnn-d4-tiny", "convnextv2-0.21M"], choices=list(CONTENDERS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[500, 1000, 2000], help="training images")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2 (accuracy), 0 (invariance)")
    parser.add_argument("--steps", type=int, default=250, help="optimizer steps per run (accuracy)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--work-dir", default=None, help="run folders (accuracy); default: a temporary folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="speed/invariance: bf16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="speed: channels_last inputs and weights")
    parser.add_argument("--compile", action="store_true", help="speed: torch.compile the model")
    parser.add_argument("--speed-models", nargs="+", default=None, help="speed: named configs (default: contenders)")
    parser.add_argument("--rounds", type=int, default=3, help="speed: timed rounds of --timed-steps")
    parser.add_argument("--timed-steps", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=0, help="invariance: train each model first")
    return parser.parse_args(argv)


def build(name: str, overrides: dict | None = None, image_size: int | None = None):
    from hfgal.models.loading import load_model

    spec, base = CONTENDERS.get(name, (name, {}))
    size = (image_size, image_size) if image_size else None
    return load_model(spec, init="scratch", config_overrides={**base, **(overrides or {})}, image_size=size)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# --------------------------------------------------------------------------- accuracy (the recipe)


def recipe_argv(args, model: str, size: int, seed: int, out: Path) -> list[str]:
    spec, overrides = CONTENDERS[model]
    every = max(1, args.steps // 10)
    flags = {
        "model": spec,
        "model_config_overrides": json.dumps(overrides),
        "init": "scratch",
        "dataset": "synthetic:2500",
        "max_train_samples": size,
        "image_size": args.image_size,
        "seed": seed,
        "output_dir": out,
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": 256,
        "learning_rate": 2e-3,
        "weight_decay": 0.05,
        "warmup_steps": 0.1,
        "lr_scheduler_type": "cosine",
        "label_smoothing_factor": 0.1,
        "eval_strategy": "steps",
        "eval_steps": every,
        "save_strategy": "steps",
        "save_steps": every,
        "save_total_limit": 2,
        "logging_steps": every,
        "use_cpu": "true",
        "dataloader_num_workers": 0,
        "carbon_tracking": "false",
        "disable_tqdm": "true",
        "report_to": "none",
    }
    return [item for key, value in flags.items() for item in (f"--{key}", str(value))]


def sample_images() -> tuple[list[Path], list[int], torch.Tensor]:
    """The real GZ10 sample: paths, labels (from `<label>_<n>.png`) and a `(30, 3, 256, 256)` uint8 batch."""
    import numpy as np
    from PIL import Image

    paths = sorted(SAMPLE.glob("*.png"))
    labels = [int(p.name.split("_")[0]) for p in paths]
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    return paths, labels, torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def run_accuracy(args) -> dict:
    import importlib.util

    from hfgal.inference import load_classifier
    from hfgal.models.equivariant.invariance import rotation_invariance
    from hfgal.runs import read_results
    from hfgal.train.args import parse_args as parse_recipe_args

    spec = importlib.util.spec_from_file_location("finetune_recipe", REPO_ROOT / "recipes" / "finetune.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="hfgal-equivariant-"))
    paths, labels, sample = sample_images()
    print(
        f"accuracy: data synthetic:2500 (split seed 42: 2,000 train / 250 validation / 250 test), first N training "
        f"images, {args.steps} steps x batch {args.batch_size} per run, {args.image_size} px, offline recipe; "
        f"checkpoint chosen on validation accuracy, test evaluated once; real sample: {len(paths)} GZ10 images "
        f"({SAMPLE.relative_to(REPO_ROOT)}), never trained on. Runs in {work}",
        flush=True,
    )
    rows = []
    for model in args.models:
        for size in args.sizes:
            for seed in args.seeds or [0, 1, 2]:
                out = work / model / f"n{size}-seed{seed}"
                start = time.perf_counter()
                record = read_results(out)
                if record is None:  # a finished run is reused; an unfinished one resumes
                    argv = recipe_argv(args, model, size, seed, out)
                    argv += ["--resume_from_checkpoint", "true"] if any(out.glob("checkpoint-*")) else []
                    recipe.main(*parse_recipe_args(argv))
                    record = read_results(out)
                classifier = load_classifier(str(out))
                predicted = classifier.predict_proba([str(p) for p in paths]).argmax(-1)
                real = int(sum(int(p) == t for p, t in zip(predicted, labels, strict=True)))
                invariance = rotation_invariance(
                    classifier.model,
                    sample,
                    ANGLES,
                    size=classifier.image_size,
                    mean=classifier.mean,
                    std=classifier.std,
                )
                row = {
                    "model": model,
                    "n_train": size,
                    "seed": seed,
                    "params": record.params_total,
                    "validation_accuracy": record.validation.accuracy,
                    "test_accuracy": record.test.accuracy,
                    "real_sample_correct": real,
                    "train_images_per_second": record.train_images_per_second,
                    "rotation_change": {m.degrees: round(m.relative_change, 4) for m in invariance},
                    "rotation_agreement": {m.degrees: round(m.agreement, 3) for m in invariance},
                }
                rows.append(row)
                print(
                    f"{model} n={size} seed={seed}: test {100 * row['test_accuracy']:.1f} %, real sample {real}/"
                    f"{len(paths)}, {row['train_images_per_second']:.1f} img/s ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    print_accuracy_table(rows, len(paths))
    return {"mode": "accuracy", "steps": args.steps, "image_size": args.image_size, "runs": rows}


def print_accuracy_table(rows: list[dict], n_sample: int) -> None:
    print(
        "\n| model | params | train images | seeds | test acc. % (mean ± std) | real GZ10 sample correct "
        f"(of {n_sample}) | train img/s (provisional) | logit change at 45° on the real sample |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        cells.setdefault((row["model"], row["n_train"]), []).append(row)
    for (model, size), runs in cells.items():
        acc = mean_std([100 * r["test_accuracy"] for r in runs])
        real = mean_std([r["real_sample_correct"] for r in runs])
        speed = statistics.fmean(r["train_images_per_second"] or 0.0 for r in runs)
        change = statistics.fmean(r["rotation_change"][45.0] for r in runs)
        print(
            f"| {model} | {runs[0]['params'] / 1e6:.2f} M | {size} | {len(runs)} | {acc[0]:.1f} ± {acc[1]:.1f} | "
            f"{real[0]:.1f} ± {real[1]:.1f} | {speed:.0f} | {change:.3f} |"
        )


# --------------------------------------------------------------------------- speed (model only)


def time_training_step(model, optimizer, x: torch.Tensor, y: torch.Tensor, args) -> float:
    """Median seconds of forward + backward + optimizer step, after 3 warm-up steps."""
    device = x.device

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(pixel_values=x, labels=y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    times = []
    for _ in range(args.rounds * args.timed_steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_speed(args) -> dict:
    device = torch.device(args.device)
    names = args.speed_models or list(args.models)
    print(
        f"speed: training step (forward, backward, AdamW) on a batch already on {device}, batch {args.batch_size}, "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}, channels_last {args.channels_last}, compile {args.compile}, "
        f"{torch.get_num_threads()} CPU threads; median of {args.rounds} rounds x {args.timed_steps} steps"
    )
    rows = []
    for name in names:
        loaded = build(name, image_size=None if args.speed_models else args.image_size)
        model = loaded.model.to(device).train()
        size = loaded.image_size[0]
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        step_model = torch.compile(model) if args.compile else model
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randn(args.batch_size, 3, size, size, device=device)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (args.batch_size,), device=device)

        seconds = time_training_step(step_model, optimizer, x, y, args)
        ips = args.batch_size / seconds
        params = sum(p.numel() for p in model.parameters())
        rows.append({"model": name, "image_size": size, "params": params, "images_per_second": round(ips, 1)})
        print(f"{name:>20}: {params / 1e6:7.3f} M params, {size} px, {ips:8.1f} img/s", flush=True)
    return {"mode": "speed", "device": str(device), "bf16": args.bf16, "channels_last": args.channels_last,
            "compile": args.compile, "batch_size": args.batch_size, "rows": rows}  # fmt: skip


# --------------------------------------------------------------------------- invariance (minimal loop)


def synthetic_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` synthetic galaxies of a balanced catalogue: `(n, 3, 256, 256)` uint8 and their labels."""
    from hfgal.data.synthetic import synthetic_catalog, synthetic_images

    catalog = synthetic_catalog(n, seed=seed, proportions="balanced")
    images = torch.from_numpy(synthetic_images(0, n, catalog["label"], seed=seed)).permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(catalog["label"], dtype=torch.long)


def train_briefly(model, images, labels, steps: int, size: int, mean, std, device, bf16: bool, seed: int) -> None:
    """AdamW 2e-3, weight decay 0.05, cosine, batch 64, label smoothing 0.1, hfgal's D4 + affine augmentation."""
    import torch.nn.functional as F

    from hfgal.data.augment import normalize, random_dihedral_affine

    small = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True).round().to(torch.uint8)
    small, labels = small.to(device), labels.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(small), (64,), generator=generator).to(device)
        x = random_dihedral_affine(normalize(small[index], mean, std))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(pixel_values=x).logits
        loss = F.cross_entropy(logits.float(), labels[index], label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def accuracy_on(model, images, labels, size, mean, std, device) -> float:
    from hfgal.models.equivariant.invariance import model_inputs

    model.eval()
    correct = 0
    for start in range(0, len(images), 100):
        x = model_inputs(images[start : start + 100].to(device), size, mean, std)
        correct += int((model(pixel_values=x).logits.argmax(-1).cpu() == labels[start : start + 100]).sum())
    return correct / len(images)


def run_invariance(args) -> dict:
    from hfgal.models.equivariant.invariance import rotation_invariance

    seeds = args.seeds or [0]

    device = torch.device(args.device)
    _, sample_labels, sample = sample_images()
    sample_labels = torch.tensor(sample_labels)
    trained = f"after {args.train_steps} steps of the minimal loop" if args.train_steps else "at random init"
    print(
        f"invariance: relative logit change / prediction agreement under rotation, on the {len(sample)} real GZ10 "
        f"sample images, {args.image_size} px, {trained}"
    )
    if args.train_steps:
        train_images, train_labels = synthetic_batch(2000, seed=0)
        held_out, held_out_labels = synthetic_batch(500, seed=1)
    rows = []
    contenders = [(f"gcnn {g}", "gcnn-d4-tiny", {"group": g}) for g in GROUPS]
    contenders.append(("convnextv2-0.21M", "convnextv2-0.21M", {"drop_path_rate": 0.0}))
    for seed, (label, name, overrides) in ((s, c) for s in seeds for c in contenders):
        torch.manual_seed(seed)
        loaded = build(name, overrides, args.image_size)
        model = loaded.model.to(device)
        size, mean, std = args.image_size, loaded.mean, loaded.std
        row = {"model": label, "seed": seed, "params": sum(p.numel() for p in model.parameters())}
        if args.train_steps:
            start = time.perf_counter()
            steps = args.train_steps
            train_briefly(model, train_images, train_labels, steps, size, mean, std, device, args.bf16, seed)
            row["train_seconds"] = round(time.perf_counter() - start, 1)
            row["held_out_synthetic_accuracy"] = accuracy_on(model, held_out, held_out_labels, size, mean, std, device)
            row["real_sample_accuracy"] = accuracy_on(model, sample, sample_labels, size, mean, std, device)
        measured = rotation_invariance(model.float(), sample, ANGLES, size=size, mean=mean, std=std)
        row["relative_change"] = {m.degrees: round(m.relative_change, 4) for m in measured}
        row["agreement"] = {m.degrees: round(m.agreement, 3) for m in measured}
        rows.append(row)
        extra = (
            f", held-out synthetic acc {100 * row['held_out_synthetic_accuracy']:.1f} %, real sample "
            f"{round(row['real_sample_accuracy'] * len(sample))}/{len(sample)} ({row['train_seconds']} s)"
            if args.train_steps
            else ""
        )
        changes = " ".join(f"{a:g}°:{c:.3f}/{row['agreement'][a]:.2f}" for a, c in row["relative_change"].items())
        print(f"{label:>18} ({row['params'] / 1e6:.3f} M) seed {seed}: {changes}{extra}", flush=True)
    return {"mode": "invariance", "train_steps": args.train_steps, "image_size": args.image_size, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    record = {"accuracy": run_accuracy, "speed": run_speed, "invariance": run_invariance}[args.mode](args)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
