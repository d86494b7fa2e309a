#!/usr/bin/env python
"""The rotation-equivariant GCNN measured: accuracy against symmetry-free controls, speed, invariance, layers.

    python benchmarks/equivariant.py accuracy --work-dir runs/equivariant   # D4 GCNN vs 3 C1 controls, LR sweep, seeds
    python benchmarks/equivariant.py speed                                   # FLOPs, FLOP/s, where a step's time goes
    python benchmarks/equivariant.py invariance                              # logit change under rotations
    python benchmarks/equivariant.py describe gcnn-d16-base                  # layers, against the published GCNN

accuracy: does the symmetry win, or the width, the compute, the learning rate? `gcnn-d4-tiny` (exact D4) against the
same network without symmetry (group C1) three ways: widened to the D4 model's parameters (`c1-params`), widened to its
forward FLOPs (`c1-flops`), and at equal fields (`c1`, the papers' "identically built CNN"); a ConvNeXt V2 of equal
parameters is optional (`--models ... convnextv2-0.21M`). Every run is the real recipe (`hfgal.train.finetune.main`, in
this process) from scratch on `synthetic:2500` (split seed 42: 2,000 train / 250 validation / 250 test), on the first N
training images for `--epochs` epochs (the same epochs at every N, so more images mean more steps: runs long enough to
plateau, not one fixed budget), 64 px, batch 64, AdamW (weight decay 0.05, 10 % warm-up, cosine, label smoothing 0.1,
D4 + affine augmentation), the checkpoint chosen on validation accuracy (10 evaluations per run), test evaluated once.
First a learning-rate sweep per model (`--lrs`, at the largest N and the first seed), chosen on validation accuracy,
extended one step at a time past either end while the best rate is at that end (`--lr-extensions`, default 2); then
every N and seed at that rate. Each selected model also classifies the real GZ10 sample
(`../shared/data/gz10-sample`, 121 images, when it exists; else the repository's 30), which no run trains on; the
correct ones are also counted on the half of the sample the synthetic renderer was not calibrated on
(`synthetic_calibration.sample_halves`; the repository's 30 all lie in it). Printed:
the sweep, mean ± std over seeds, whether validation accuracy had plateaued, whether accuracy rises with N, and paired
tests (t-test and Wilcoxon over seeds x N) of each model against the D4 GCNN. Runs are kept in `--work-dir`: a rerun
reuses finished runs and resumes unfinished ones.

speed: the training step (forward, backward, AdamW) of each model on one batch already on the device, the models
interleaved round by round in this process so that other load on the machine hits all of them alike; FLOPs per
image of the step (`torch.utils.flop_counter`: convolutions and matrix products), the achieved FLOP/s, and for the
GCNN the share of the step spent expanding kernels (building the |G| transformed copies, forward and backward), in
its group convolutions proper, and in the rest (batch norm, pooling, ReLU, the optimizer). Also eval-mode images/s.

invariance: `hfgal.models.equivariant.invariance.rotation_invariance` on the real sample for the GCNN with groups
C1, D4, D8, D16 (the fields of gcnn-d4-tiny) and a ConvNeXt V2 of similar size, at random init or after
`--train-steps` of a minimal loop (AdamW 2e-3, cosine, batch 64, hfgal's D4 + affine augmentation, 2,000 synthetic
galaxies of catalogue seed 0; accuracy on 500 of seed 1). Needs only torch + transformers + hfgal.

describe: every block of a named GCNN (fields, map side, pooling after it, parameters), traced on the meta device;
for `gcnn-d16-base`, beside the published GCNN's blocks (`hfgal.models.equivariant.architecture.PUBLISHED_D16`).

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = (REPO_ROOT.parent / "shared" / "data" / "gz10-sample", REPO_ROOT / "tests" / "data" / "gz10-sample")
ANGLES = (15.0, 30.0, 45.0, 60.0, 75.0, 90.0)
# name -> (named config, overrides): the GCNN and ConvNeXt V2s of about its parameter count (0.20 M vs 0.21 M).
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
# The accuracy benchmark's models: the D4 GCNN and its symmetry-free controls (widened at run time, see `controls`).
ACCURACY_MODELS = ("gcnn-d4", "c1-params", "c1-flops", "c1", "convnextv2-0.21M")
GROUPS = ("C1", "D4", "D8", "D16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("accuracy", "speed", "invariance", "describe"))
    parser.add_argument("name", nargs="?", default="gcnn-d16-base", help="describe: the named GCNN config")
    parser.add_argument("--models", nargs="+", default=list(ACCURACY_MODELS[:4]), choices=ACCURACY_MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[500, 1000, 2000], help="training images")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2 (accuracy), 0 (invariance)")
    parser.add_argument("--epochs", type=float, default=40.0, help="accuracy: epochs per run (at every N)")
    parser.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 3e-3, 1e-2], help="accuracy: LR sweep")
    parser.add_argument("--lr-extensions", type=int, default=2, help="accuracy: steps past a best rate at an end")
    parser.add_argument("--real-sample", default=None, help="folder of <label>_<n>.png (default: 121 or 30 images)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--work-dir", default=None, help="run folders (accuracy); default: a temporary folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="speed/invariance: bf16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="speed: channels_last inputs and weights")
    parser.add_argument("--compile", action="store_true", help="speed: torch.compile the models")
    speed_help = "speed: named configs, contenders or accuracy models (gcnn-d4, c1-params, ...); ratios vs the 2nd"
    parser.add_argument("--speed-models", nargs="+", default=["gcnn-d4-tiny", "convnextv2-0.21M"], help=speed_help)
    parser.add_argument("--rounds", type=int, default=5, help="speed: interleaved rounds")
    parser.add_argument("--threads", type=int, default=0, help="speed: torch threads (default: torch's choice)")
    parser.add_argument("--timed-steps", type=int, default=4, help="speed: timed steps per model and round")
    parser.add_argument("--train-steps", type=int, default=0, help="invariance: train each model first")
    return parser.parse_args(argv)


def build(name: str, overrides: dict | None = None, image_size: int | None = None):
    from hfgal.models.loading import load_model

    spec, base = CONTENDERS.get(name, (name, {}))
    size = (image_size, image_size) if image_size else None
    return load_model(spec, init="scratch", config_overrides={**base, **(overrides or {})}, image_size=size)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def sample_images(folder: Path) -> tuple[list[Path], list[int], torch.Tensor]:
    """A real GZ10 sample: paths, labels (from `<label>_<n>.png`) and a `(n, 3, 256, 256)` uint8 batch."""
    import numpy as np
    from PIL import Image

    paths = sorted(folder.glob("*.png"))
    labels = [int(p.name.split("_")[0]) for p in paths]
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    return paths, labels, torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def sample_folder(args) -> Path:
    return Path(args.real_sample) if args.real_sample else next(p for p in SAMPLES if p.is_dir())


def held_out_half(folder: Path, paths: list[Path]) -> list[bool]:
    """Which sample images the synthetic renderer was not calibrated on (`synthetic_calibration.sample_halves`)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from synthetic_calibration import sample_halves

    _, scoring = sample_halves(folder)
    names = {p.name for p, _ in scoring}
    return [p.name in names for p in paths]


# --------------------------------------------------------------------------- accuracy: the controlled benchmark


def tiny_config(overrides: dict | None = None):
    """gcnn-d4-tiny's config with `overrides` (no model is built)."""
    from hfgal.models.equivariant import NAMED_CONFIGS, GZ10EquivariantConfig

    return GZ10EquivariantConfig(**{**NAMED_CONFIGS["gcnn-d4-tiny"], **(overrides or {}), "num_labels": 10})


def gcnn_cost(overrides: dict, image_size: int) -> tuple[int, int]:
    """Parameters and forward FLOPs per image of gcnn-d4-tiny with `overrides` (traced on the meta device)."""
    from hfgal.models.equivariant.architecture import layer_table

    _, totals = layer_table(tiny_config(overrides), image_size)
    return totals["params"], totals["forward_flops"]


def widened(factor: float) -> dict:
    """gcnn-d4-tiny's fields times `factor` (rounded, at least 1)."""
    config = tiny_config()
    scale = lambda w: max(1, round(w * factor))  # noqa: E731
    return {"stem_size": scale(config.stem_size), "hidden_sizes": [scale(w) for w in config.hidden_sizes]}


def matched_c1(target: int, measure: int, image_size: int) -> dict:
    """The C1 GCNN whose parameters (`measure` 0) or FLOPs (1) come nearest `target`, by bisection on the width."""
    low, high = 0.5, 32.0
    for _ in range(30):
        middle = math.sqrt(low * high)
        if gcnn_cost({"group": "C1", **widened(middle)}, image_size)[measure] < target:
            low = middle
        else:
            high = middle
    candidates = [{"group": "C1", **widened(f)} for f in (low, high)]
    return min(candidates, key=lambda o: abs(gcnn_cost(o, image_size)[measure] - target))


def accuracy_models(args) -> dict[str, tuple[str, dict]]:
    """name -> (named config, overrides) of the requested accuracy models, the C1 controls matched now."""
    d4_params, d4_flops = gcnn_cost({}, args.image_size)
    specs = {
        "gcnn-d4": ("gcnn-d4-tiny", {}),
        "c1-params": ("gcnn-d4-tiny", matched_c1(d4_params, 0, args.image_size)),
        "c1-flops": ("gcnn-d4-tiny", matched_c1(d4_flops, 1, args.image_size)),
        "c1": ("gcnn-d4-tiny", {"group": "C1"}),
        "convnextv2-0.21M": CONTENDERS["convnextv2-0.21M"],
    }
    return {name: specs[name] for name in args.models}


def run_steps(args, size: int) -> int:
    return max(10, math.ceil(args.epochs * size / args.batch_size))


def recipe_argv(args, spec: tuple[str, dict], size: int, seed: int, lr: float, out: Path) -> list[str]:
    steps = run_steps(args, size)
    every = max(1, steps // 10)
    flags = {
        "model": spec[0],
        "model_config_overrides": json.dumps(spec[1]),
        "init": "scratch",
        "dataset": "synthetic:2500",
        "max_train_samples": size,
        "image_size": args.image_size,
        "seed": seed,
        "output_dir": out,
        "max_steps": steps,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": 256,
        "learning_rate": lr,
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


def validation_curve(out: Path) -> list[float]:
    """Validation accuracy at each evaluation of a run (from its last checkpoint's trainer_state.json)."""
    states = sorted(out.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if not states:
        return []
    history = json.loads(states[-1].read_text()).get("log_history", [])
    return [v for row in history for k, v in row.items() if k == "eval_accuracy" or k.endswith("validation_accuracy")]


def plateaued(curve: list[float]) -> bool | None:
    """Whether a run learned (its best evaluation 5 points above its first) and then stopped gaining (its last third
    of evaluations less than a point above the best before it); None with fewer than 3 evaluations."""
    if len(curve) < 3:
        return None
    cut = len(curve) - max(1, len(curve) // 3)
    return max(curve) >= curve[0] + 0.05 and max(curve[cut:]) - max(curve[:cut]) < 0.01


def train_and_score(args, name: str, spec, size: int, seed: int, lr: float, work: Path, sample) -> dict:
    """One recipe run (reused when finished, resumed when not), scored on its test split and the real sample."""
    from hfgal.inference import load_classifier
    from hfgal.models.equivariant.invariance import rotation_invariance
    from hfgal.runs import read_results
    from hfgal.train.args import parse_args as parse_recipe_args
    from hfgal.train.finetune import main as recipe_main

    out = work / name / f"lr{lr:g}" / f"n{size}-seed{seed}"
    start = time.perf_counter()
    record = read_results(out)
    if record is None:
        argv = recipe_argv(args, spec, size, seed, lr, out)
        argv += ["--resume_from_checkpoint", "true"] if any(out.glob("checkpoint-*")) else []
        recipe_main(*parse_recipe_args(argv))
        record = read_results(out)
    paths, labels, pixels, held_out = sample
    classifier = load_classifier(str(out))
    correct = classifier.predict_proba([str(p) for p in paths]).argmax(-1) == torch.tensor(labels).numpy()
    mean, std, side = classifier.mean, classifier.std, classifier.image_size
    change = rotation_invariance(classifier.model, pixels, (45.0,), size=side, mean=mean, std=std)[0]
    curve = validation_curve(out)
    row = {
        "model": name,
        "n_train": size,
        "seed": seed,
        "learning_rate": lr,
        "steps": record.global_step,
        "params": record.params_total,
        "validation_accuracy": record.validation.accuracy,
        "test_accuracy": record.test.accuracy,
        "real_sample_accuracy": float(correct.mean()),
        "real_sample_correct": int(correct.sum()),
        "held_out_half_correct": int(correct[held_out].sum()),
        "logit_change_45": round(change.relative_change, 4),
        "validation_curve": [round(v, 4) for v in curve],
        "plateaued": plateaued(curve),
        "train_images_per_second": record.train_images_per_second,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(
        f"{name} lr={lr:g} n={size} seed={seed}: validation {100 * row['validation_accuracy']:.1f} %, test "
        f"{100 * row['test_accuracy']:.1f} %, real {row['real_sample_correct']}/{len(paths)} "
        f"({row['held_out_half_correct']}/{sum(held_out)} held out), "
        f"plateaued {row['plateaued']}, {row['train_images_per_second'] or 0:.0f} img/s ({row['seconds']:.0f} s)",
        flush=True,
    )
    return row


def run_accuracy(args) -> dict:
    from hfgal.data.synthetic import renderer_digest

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="hfgal-equivariant-"))
    folder = sample_folder(args)
    sample = sample_images(folder)
    sample = (*sample, held_out_half(folder, sample[0]))
    seeds = args.seeds or [0, 1, 2]
    specs = accuracy_models(args)
    print(
        f"accuracy: synthetic:2500 (split seed 42: 2,000 train / 250 validation / 250 test), first N training "
        f"images, {args.epochs:g} epochs x batch {args.batch_size} per run, {args.image_size} px, checkpoint chosen "
        f"on validation accuracy, test evaluated once; real sample: {len(sample[0])} GZ10 images ({folder}), never "
        f"trained on, {sum(sample[3])} of them held out from the renderer's calibration; renderer "
        f"{renderer_digest()}. Runs in {work}",
        flush=True,
    )
    print_models(specs, args.image_size)
    # 1. the learning rate of each model, chosen on validation accuracy at the largest N and the first seed
    sweep, best = [], {}
    for name, spec in specs.items():
        run = functools.partial(train_and_score, args, name, spec, max(args.sizes), seeds[0], work=work, sample=sample)
        runs = sweep_rates(args, run)
        sweep += runs
        best[name] = max(runs, key=lambda r: r["validation_accuracy"])["learning_rate"]
    # 2. every N and seed at that rate (the sweep's runs are reused)
    rows = [
        train_and_score(args, name, spec, size, seed, best[name], work, sample)
        for name, spec in specs.items()
        for size in args.sizes
        for seed in seeds
    ]
    print_sweep(sweep, best)
    print_accuracy_table(rows, len(sample[0]), sum(sample[3]))
    verdicts = print_trends(rows)
    tests = paired_tests(rows, reference="gcnn-d4" if "gcnn-d4" in specs else next(iter(specs)))
    estimate = print_estimate(rows + sweep, args)
    return {"mode": "accuracy", "epochs": args.epochs, "image_size": args.image_size, "sample": str(folder),
            "sample_size": len(sample[0]), "held_out_half_size": sum(sample[3]), "renderer": renderer_digest(),
            "learning_rates": best, "sweep": sweep, "runs": rows, "trends": verdicts, "paired_tests": tests,
            "estimated_full_cpu_hours": estimate}  # fmt: skip


def sweep_rates(args, run) -> list[dict]:
    """`run(lr)` at each of `--lrs`, then one step further out (the grid's mean step, snapped to 1 or 3 x 10^k)
    while the best validation accuracy sits at an end of the rates tried, up to `--lr-extensions` steps: a
    control whose best rate lies outside the grid would otherwise be compared at a rate that is not its best."""
    rates = sorted(args.lrs)
    runs = {lr: run(lr) for lr in rates}
    step = (rates[-1] / rates[0]) ** (1 / (len(rates) - 1)) if len(rates) > 1 else 1.0
    for _ in range(args.lr_extensions if step > 1 else 0):
        best = max(runs.values(), key=lambda r: r["validation_accuracy"])["learning_rate"]
        if best not in (rates[0], rates[-1]):
            break
        lr = one_or_three(rates[-1] * step if best == rates[-1] else rates[0] / step)
        rates = sorted([*rates, lr])
        runs[lr] = run(lr)
    return [runs[lr] for lr in rates]


def one_or_three(x: float) -> float:
    """The nearest of 1 x 10^k and 3 x 10^k to `x`, in log scale."""
    k = math.floor(math.log10(x))
    nearest = min((10.0**k, 3 * 10.0**k, 10.0 ** (k + 1)), key=lambda c: abs(math.log(c / x)))
    return float(f"{nearest:.0e}")  # 3e-4, not 0.00030000000000000003


def print_models(specs: dict, image_size: int) -> None:
    print(f"\n| model | config | overrides | params | forward FLOPs / image at {image_size} px |")
    print("|---|---|---|---:|---:|")
    for name, (config, overrides) in specs.items():
        if config.startswith("gcnn"):
            params, flops = gcnn_cost(overrides, image_size)
            cost = f"{params / 1e6:.3f} M | {flops / 1e6:.1f} M"
        else:
            model = build(name, image_size=image_size).model
            cost = f"{sum(p.numel() for p in model.parameters()) / 1e6:.3f} M | —"
        print(f"| {name} | {config} | `{json.dumps(overrides)}` | {cost} |")


def print_sweep(sweep: list[dict], best: dict) -> None:
    print("\n| model | learning rate | validation acc. % | test acc. % | chosen |")
    print("|---|---:|---:|---:|:---:|")
    for r in sweep:
        chosen = "yes" if best[r["model"]] == r["learning_rate"] else ""
        print(
            f"| {r['model']} | {r['learning_rate']:g} | {100 * r['validation_accuracy']:.1f} | "
            f"{100 * r['test_accuracy']:.1f} | {chosen} |"
        )


def cells(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    out: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        out.setdefault((row["model"], row["n_train"]), []).append(row)
    return out


def print_accuracy_table(rows: list[dict], n_sample: int, n_held_out: int) -> None:
    print(
        f"\n| model | params | train images | seeds | test acc. % | real GZ10 sample correct (of {n_sample}) | "
        f"of them held out from calibration (of {n_held_out}) | plateaued runs | logit change at 45° | train img/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (model, size), runs in cells(rows).items():
        acc = mean_std([100 * r["test_accuracy"] for r in runs])
        real = mean_std([r["real_sample_correct"] for r in runs])
        held = mean_std([r["held_out_half_correct"] for r in runs])
        flat = sum(bool(r["plateaued"]) for r in runs)
        speed = statistics.fmean(r["train_images_per_second"] or 0.0 for r in runs)
        change = statistics.fmean(r["logit_change_45"] for r in runs)
        print(
            f"| {model} | {runs[0]['params'] / 1e6:.3f} M | {size} | {len(runs)} | {acc[0]:.1f} ± {acc[1]:.1f} | "
            f"{real[0]:.1f} ± {real[1]:.1f} | {held[0]:.1f} ± {held[1]:.1f} | {flat}/{len(runs)} | {change:.3f} | "
            f"{speed:.0f} |"
        )


def print_trends(rows: list[dict]) -> dict[str, str]:
    """Per model: does test accuracy rise with the training images, and if not, the likely reason."""
    verdicts = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        by_size = {n: runs for (m, n), runs in cells(rows).items() if m == model}
        sizes = sorted(by_size)
        means = [statistics.fmean(r["test_accuracy"] for r in by_size[n]) for n in sizes]
        if len(sizes) < 2:
            verdicts[model] = "one training-set size: no trend to measure"
        elif means[-1] > means[0]:
            verdicts[model] = (
                f"rises with N: {100 * means[0]:.1f} % at {sizes[0]}, {100 * means[-1]:.1f} % at {sizes[-1]}"
            )
        elif not all(r["plateaued"] for n in sizes for r in by_size[n]):
            verdicts[model] = "does not rise with N, and some runs had not plateaued: train longer (--epochs)"
        else:
            verdicts[model] = "does not rise with N although every run plateaued: the task saturates below N"
        print(f"{model}: {verdicts[model]}")
    return verdicts


def paired_tests(rows: list[dict], reference: str) -> list[dict]:
    """Each model against `reference` over matching (seed, N) runs: mean difference, paired t-test, Wilcoxon."""
    from scipy import stats

    index = {(r["model"], r["n_train"], r["seed"]): r for r in rows}
    out = []
    print(f"\npaired tests against {reference} over (seed, N) pairs (test accuracy; real-sample accuracy):")
    for model in dict.fromkeys(r["model"] for r in rows):
        if model == reference:
            continue
        keys = [k[1:] for k in index if k[0] == model and (reference, *k[1:]) in index]
        result = {"model": model, "reference": reference, "pairs": len(keys)}
        for metric in ("test_accuracy", "real_sample_accuracy"):
            diffs = [index[(reference, *k)][metric] - index[(model, *k)][metric] for k in keys]
            entry = {"mean_difference": statistics.fmean(diffs) if diffs else None}
            if len(diffs) >= 2 and any(diffs):
                ours = [index[(reference, *k)][metric] for k in keys]
                theirs = [index[(model, *k)][metric] for k in keys]
                entry["t_test_p"] = float(stats.ttest_rel(ours, theirs).pvalue)
                entry["wilcoxon_p"] = float(stats.wilcoxon(diffs).pvalue)
            result[metric] = entry
        out.append(result)
        t, r = result["test_accuracy"], result["real_sample_accuracy"]
        print(
            f"  {reference} - {model}: {len(keys)} pairs; test {100 * (t['mean_difference'] or 0):+.1f} points "
            f"(t-test p {t.get('t_test_p', float('nan')):.3g}, Wilcoxon p {t.get('wilcoxon_p', float('nan')):.3g}); "
            f"real {100 * (r['mean_difference'] or 0):+.1f} points (t-test p {r.get('t_test_p', float('nan')):.3g})"
        )
    return out


def print_estimate(rows: list[dict], args) -> float | None:
    """CPU hours of the default full benchmark at the training speeds these runs measured (training only)."""
    speeds: dict[str, list[float]] = {}
    for r in rows:
        if r["train_images_per_second"]:
            speeds.setdefault(r["model"], []).append(r["train_images_per_second"])
    if not speeds:
        return None
    defaults = parse_args(["accuracy"])
    sweep = len(defaults.lrs) * run_steps(defaults, max(defaults.sizes))
    grid = 3 * sum(run_steps(defaults, n) for n in defaults.sizes) - run_steps(defaults, max(defaults.sizes))
    images = (sweep + grid) * defaults.batch_size
    hours = sum(images / statistics.median(v) for v in speeds.values()) / 3600
    print(
        f"\nthe default full benchmark ({len(defaults.lrs)} learning rates, sizes {defaults.sizes}, 3 seeds, "
        f"{defaults.epochs:g} epochs) trains {images:,} images per model: about {hours:.1f} h for "
        f"{', '.join(speeds)} at the speeds measured here (training only; evaluation adds about a fifth)"
    )
    return round(hours, 2)


# --------------------------------------------------------------------------- speed


def training_flops(model, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one forward + backward (convolutions and matrix products), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(pixel_values=x, labels=y).loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def replay_convolutions(model, x: torch.Tensor, y: torch.Tensor) -> list:
    """(module, its input) for every group convolution (GCNN) or `nn.Conv2d` (others) of one training forward."""
    from hfgal.models.equivariant.modeling_gz10_equivariant import GroupConv2d

    kinds = (GroupConv2d,) if any(isinstance(m, GroupConv2d) for m in model.modules()) else (torch.nn.Conv2d,)
    captured = []
    hooks = [
        m.register_forward_pre_hook(lambda m, a, kw: captured.append((m, a[0].detach(), a[1:], kw)), with_kwargs=True)
        for m in model.modules()
        if isinstance(m, kinds)
    ]
    try:
        model(pixel_values=x, labels=y).loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
    model.zero_grad(set_to_none=True)
    return captured


def time_convolutions(captured: list) -> tuple[float, float]:
    """Seconds of the captured convolutions (forward + backward) and of their kernel expansion alone."""
    start = time.perf_counter()
    for index, (module, x, extra, kwargs) in enumerate(captured):
        x = x.clone().requires_grad_(index > 0)  # the first one reads the image, which needs no gradient
        out = module(x, *extra, **kwargs)
        out.backward(torch.ones_like(out))
    convolutions = time.perf_counter() - start
    start = time.perf_counter()
    kernels = [m.expanded_kernel() for m, *_ in captured if hasattr(m, "expanded_kernel")]
    if kernels:
        torch.autograd.backward(kernels, [torch.ones_like(k) for k in kernels])
    expansion = time.perf_counter() - start
    for module, *_ in captured:
        module.zero_grad(set_to_none=True)
    return convolutions, expansion


def speed_model(name: str, args):
    """A named config or contender, or one of the accuracy benchmark's models (`gcnn-d4`, `c1-params`, ...)."""
    if name in ACCURACY_MODELS:
        spec, overrides = accuracy_models(argparse.Namespace(**{**vars(args), "models": [name]}))[name]
        return build(spec, overrides, image_size=args.image_size).model
    return build(name, image_size=args.image_size).model


def speed_subject(name: str, model, args, device: torch.device) -> dict:
    """A model ready to be timed: its batch, optimizer, FLOPs per step and convolutions to replay; warmed up."""
    model = model.to(device).train()
    size = args.image_size
    x = torch.randn(args.batch_size, 3, size, size, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    flops = training_flops(model, x, y)
    step_model = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    subject = {"name": name, "model": model, "step_model": step_model, "optimizer": optimizer, "x": x, "y": y,
               "flops": flops, "captured": replay_convolutions(model, x, y), "steps": [], "conv": [], "expand": [],
               "eval": [], "params": sum(p.numel() for p in model.parameters())}  # fmt: skip
    start = time.perf_counter()
    for _ in range(3):  # warm-up (and compilation)
        training_step(subject, args)
    subject["warmup_seconds"] = time.perf_counter() - start
    return subject


def training_step(subject: dict, args) -> None:
    device = subject["x"].device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
        loss = subject["step_model"](pixel_values=subject["x"], labels=subject["y"]).loss
    loss.backward()
    subject["optimizer"].step()
    subject["optimizer"].zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()


def one_round(subject: dict, args) -> None:
    """This model's share of a round: timed training steps, its convolutions replayed, eval forwards."""
    for _ in range(args.timed_steps):
        start = time.perf_counter()
        training_step(subject, args)
        subject["steps"].append(time.perf_counter() - start)
    convolutions, expansion = time_convolutions(subject["captured"])
    subject["conv"].append(convolutions)
    subject["expand"].append(expansion)
    model = subject["model"].eval()
    with torch.no_grad():
        model(pixel_values=subject["x"])  # a GCNN expands (and caches) its kernels here
        for _ in range(2):
            start = time.perf_counter()
            model(pixel_values=subject["x"])
            subject["eval"].append(time.perf_counter() - start)
    model.train()


def run_speed(args) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"speed: training step (forward, backward, AdamW) on a batch already on {device}, batch {args.batch_size}, "
        f"{args.image_size} px, {'bf16 autocast' if args.bf16 else 'fp32'}, channels_last {args.channels_last}, "
        f"compile {args.compile}, {torch.get_num_threads()} threads; {args.rounds} interleaved rounds x "
        f"{args.timed_steps} steps, medians",
        flush=True,
    )
    load = os.getloadavg()[0]
    subjects = [speed_subject(name, speed_model(name, args), args, device) for name in args.speed_models]
    for _ in range(args.rounds):
        for subject in subjects:
            one_round(subject, args)
    rows = [speed_row(s, args) for s in subjects]
    print_speed_table(rows, args)
    print(f"load average (1 min) of the machine: {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    return {"mode": "speed", "device": str(device), "bf16": args.bf16, "channels_last": args.channels_last,
            "compile": args.compile, "batch_size": args.batch_size, "image_size": args.image_size,
            "threads": torch.get_num_threads(), "load_average": [load, os.getloadavg()[0]], "rows": rows}  # fmt: skip


def speed_row(subject: dict, args) -> dict:
    step = statistics.median(subject["steps"])
    conv, expand = statistics.median(subject["conv"]), statistics.median(subject["expand"])
    gcnn = any(hasattr(m, "expanded_kernel") for m, *_ in subject["captured"])
    return {
        "model": subject["name"],
        "params": subject["params"],
        "train_images_per_second": round(args.batch_size / step, 1),
        "eval_images_per_second": round(args.batch_size / statistics.median(subject["eval"]), 1),
        "train_flops_per_image": subject["flops"] / args.batch_size,
        "achieved_gflops": round(subject["flops"] / step / 1e9, 1),
        "kernel_expansion_share": round(expand / step, 4) if gcnn else None,
        "convolution_share": round((conv - expand) / step, 4),
        "rest_share": round(1 - conv / step, 4),
        "warmup_seconds": round(subject["warmup_seconds"], 1),
    }


def print_speed_table(rows: list[dict], args) -> None:
    print(
        "\n| model | params | train img/s | eval img/s | training FLOPs / image | achieved GFLOP/s | kernel expansion "
        "| convolutions | rest |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        expansion = "—" if r["kernel_expansion_share"] is None else f"{100 * r['kernel_expansion_share']:.1f} %"
        print(
            f"| {r['model']} | {r['params'] / 1e6:.3f} M | {r['train_images_per_second']:.0f} | "
            f"{r['eval_images_per_second']:.0f} | {r['train_flops_per_image'] / 1e9:.3f} G | "
            f"{r['achieved_gflops']:.1f} | {expansion} | {100 * r['convolution_share']:.1f} % | "
            f"{100 * r['rest_share']:.1f} % |"
        )
    if len(rows) >= 2:
        first, second = rows[0], rows[1]
        work = first["train_flops_per_image"] / second["train_flops_per_image"]
        rate = first["achieved_gflops"] / second["achieved_gflops"]
        print(
            f"\n{first['model']} / {second['model']}: {work:.1f}x the FLOPs per image (the work), "
            f"{rate:.2f}x the achieved FLOP/s (>= 0.67: within 1.5x of its FLOP-for-FLOP cost), "
            f"{second['train_images_per_second'] / first['train_images_per_second']:.1f}x slower per image"
        )


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
    _, sample_labels, sample = sample_images(sample_folder(args))
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


# --------------------------------------------------------------------------- describe


def run_describe(args) -> dict:
    from hfgal.models.equivariant.architecture import (
        PUBLISHED_D16,
        PUBLISHED_D16_TRAINING_HEAD_PARAMS,
        layer_table,
    )

    config = build(args.name).model.config
    blocks, totals = layer_table(config)
    published = args.name == "gcnn-d16-base"
    print(
        f"{args.name}: group {config.group} (|G| = {config.group_order}), {config.kernel_size}x{config.kernel_size} "
        f"{config.filter_basis} kernels, {config.image_size} px; forward {totals['forward_flops'] / 1e9:.1f} GFLOPs "
        f"per image"
    )
    columns = ["block", "fields", "map side", "pooled to", "params"]
    if published:
        columns += ["published fields", "published side", "published pooled to", "published params"]
    print("\n| " + " | ".join(columns) + " |\n|" + "---:|" * len(columns))
    for ours, theirs in zip(blocks, PUBLISHED_D16 if published else [None] * len(blocks), strict=False):
        cells = [ours.block, ours.fields, ours.side, ours.pooled_side or "", f"{ours.params:,}"]
        if theirs is not None:
            cells += [theirs.fields, theirs.side, theirs.pooled_side or "", f"{theirs.params:,}"]
        print("| " + " | ".join(map(str, cells)) + " |")
    pooled_after = [b.block for b in blocks if b.pooled_side]
    print(f"\npooling after blocks {pooled_after}; blocks {sum(b.params for b in blocks):,} parameters, head "
          f"{totals['head_params']:,}, total {totals['params']:,}")  # fmt: skip
    record = {"mode": "describe", "name": args.name, "blocks": [b.__dict__ for b in blocks], **totals}
    if published:
        blocks_published = sum(b.params for b in PUBLISHED_D16)
        print(
            f"published (github.com/snehjp2/GCNNMorphology, counted with escnn 1.0.11): pooling after blocks "
            f"{[b.block for b in PUBLISHED_D16 if b.pooled_side]}; blocks {blocks_published:,} parameters; its head "
            f"before the October 2023 clean-up {PUBLISHED_D16_TRAINING_HEAD_PARAMS:,} (total "
            f"{blocks_published + PUBLISHED_D16_TRAINING_HEAD_PARAMS:,}); the blocks match: "
            f"{blocks == list(PUBLISHED_D16)}"
        )
        record["published_blocks_params"] = blocks_published
        record["matches_published_blocks"] = blocks == list(PUBLISHED_D16)
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes = {"accuracy": run_accuracy, "speed": run_speed, "invariance": run_invariance, "describe": run_describe}
    record = modes[args.mode](args)
    print(json.dumps(record, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
