"""A finished fine-tuning run folder, as recipes/finetune.py writes it, for card and push tests.

The model is a tiny randomly initialised ConvNeXt V2 with GZ10 labels, saved with `save_pretrained`; the metrics
come from `hfgal.metrics` applied to made-up predictions with GZ10-like confusions (spirals with spirals, smooth
with smooth), so every number in results.json is self-consistent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from hfgal.constants import DEFAULT_DATASET, GZ10_CLASSES, ID2LABEL, LABEL2ID

# Pairs of classes that volunteers (and models) mix up most: the made-up predictions err along them.
NEIGHBOURS = {0: 1, 1: 0, 2: 3, 3: 2, 4: 3, 5: 6, 6: 7, 7: 6, 8: 9, 9: 8}


def fake_predictions(n: int, accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """References with GZ10 class proportions and predictions right with probability `accuracy`."""
    from hfgal.constants import GZ10_CLASS_COUNTS

    rng = np.random.default_rng(seed)
    p = np.array(GZ10_CLASS_COUNTS) / sum(GZ10_CLASS_COUNTS)
    refs = rng.choice(10, size=n, p=p)
    preds = refs.copy()
    wrong = rng.random(n) > accuracy
    neighbour = np.array([NEIGHBOURS[int(r)] for r in refs])
    preds[wrong] = np.where(rng.random(wrong.sum()) < 0.8, neighbour[wrong], rng.integers(0, 10, wrong.sum()))
    return preds, refs


def make_results(
    *,
    model: str = "facebook/convnextv2-nano-22k-224",
    base_model: str | None = "facebook/convnextv2-nano-22k-224",
    init: str = "pretrained",
    dataset: str = DEFAULT_DATASET,
    model_type: str = "convnextv2",
    emissions_kg: float = 0.0123,
    complete: bool = True,
) -> dict:
    """A results.json dict following the run-folder contract."""
    from hfgal.metrics import compute_gz10_metrics

    test = compute_gz10_metrics(*fake_predictions(240, 0.86, seed=1), seed=0)
    validation = compute_gz10_metrics(*fake_predictions(200, 0.88, seed=2), seed=0)
    tracked = emissions_kg > 0
    carbon_train = {"emissions_kg": emissions_kg * 0.9, "energy_kwh": 0.031 if tracked else 0.0, "duration_s": 3725.4}
    carbon_eval = {"emissions_kg": emissions_kg * 0.1, "energy_kwh": 0.0034 if tracked else 0.0, "duration_s": 61.2}
    return {
        "hfgal_version": "0.1.0",
        "complete": complete,
        "model": model,
        "model_type": model_type,
        "base_model": base_model,
        "init": init,
        "linear_probe": False,
        "d4_augment": True,
        "tta": False,
        "params_total": 15_011_210,
        "params_trainable": 15_011_210,
        "image_size": 224,
        "dataset": dataset,
        "dataset_revision": "6c3bd2f8a1e0d9b7c5a4f3e2d1c0b9a8f7e6d5c4",
        "seed": 42,
        "run_name": "convnextv2-nano-gz10",
        "best_checkpoint": "checkpoint-10",
        "global_step": 20,
        "epochs": 2.0,
        "validation": validation,
        "test": test,
        "carbon": {
            "train": carbon_train,
            "eval": carbon_eval,
            "emissions_kg": emissions_kg,
            "energy_kwh": carbon_train["energy_kwh"] + carbon_eval["energy_kwh"],
            "duration_s": 3786.6,
            "country_iso_code": "FRA",
            "region": None,
            "tracking_mode": "machine",
            "cpu_model": "AMD EPYC 7R13 Processor",
            "gpu_model": "NVIDIA H100 80GB HBM3",
        },
        "train_seconds": 3725.4,
        "train_images_per_second": 85.3,
        "hardware": {
            "cpu": "AMD EPYC 7R13 Processor",
            "cpu_count": 16,
            "gpu": "NVIDIA H100 80GB HBM3",
            "gpu_count": 1,
            "num_processes": 1,
            "num_machines": 1,
        },
        "versions": {
            "hfgal": "0.1.0",
            "torch": "2.14.1",
            "transformers": "5.24.0",
            "timm": "1.0.31",
            "datasets": "5.2.0",
            "accelerate": "1.15.0",
            "codecarbon": "3.3.2",
        },
        "training": {
            "learning_rate": 5e-05,
            "per_device_train_batch_size": 32,
            "effective_batch_size": 32,
            "num_train_epochs": 2.0,
            "max_steps": -1,
            "weight_decay": 0.05,
            "warmup_ratio": 0.1,
            "lr_scheduler_type": "cosine",
            "label_smoothing_factor": 0.1,
            "layer_decay": None,
            "optim": "adamw_torch",
        },
    }


def make_config(results: dict) -> dict:
    """A flat resolved recipe config matching `results`."""
    return {
        "model_name_or_path": results["model"],
        "init": results["init"],
        "dataset": results["dataset"],
        "split_scheme": "default",
        "d4_augment": results["d4_augment"],
        "tta": results["tta"],
        "linear_probe": results["linear_probe"],
        "output_dir": "runs/convnextv2-nano-gz10",
        "seed": results["seed"],
        "hub_token": None,
        **{k: v for k, v in results["training"].items() if k != "effective_batch_size"},
    }


def make_run_dir(path: str | Path, *, results: dict | None = None, image_size: int = 32) -> Path:
    """Write a realistic finished run folder (weights, configs, results, confusion PNG, a stale checkpoint).

    Args:
        path: the folder to create (its parents are created).
        results: results.json content (default `make_results()`).
        image_size: input side of the saved image processor (tiny, so loading it stays cheap).

    Returns:
        The run folder.
    """
    import torch
    from transformers import AutoConfig, AutoModelForImageClassification, ViTImageProcessor

    run = Path(path)
    run.mkdir(parents=True, exist_ok=True)
    results = make_results() if results is None else results
    config = AutoConfig.for_model(
        "convnextv2",
        hidden_sizes=[8, 16, 24, 32],
        depths=[1, 1, 1, 1],
        num_labels=len(GZ10_CLASSES),
        id2label=ID2LABEL,
        label2id=LABEL2ID,
        image_size=image_size,
    )
    torch.manual_seed(0)
    AutoModelForImageClassification.from_config(config).save_pretrained(run)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(run)
    (run / "results.json").write_text(json.dumps(results, indent=2))
    (run / "config.yaml").write_text(yaml.safe_dump(make_config(results), sort_keys=False))
    _confusion_png(results["test"]["confusion_matrix"], run / "confusion_matrix.png")
    # What the Trainer leaves behind and must never be published.
    ckpt = run / "checkpoint-10"
    ckpt.mkdir(exist_ok=True)
    (ckpt / "optimizer.pt").write_bytes(b"\x80\x04junk optimizer state" * 64)
    (ckpt / "trainer_state.json").write_text("{}")
    (run / "train.log").write_text("step 10 loss 1.2\n")
    (run / "runs").mkdir(exist_ok=True)  # TensorBoard events folder
    (run / "runs" / "events.out.tfevents.1").write_bytes(b"\0" * 16)
    return run


def _confusion_png(confusion, path: Path) -> None:
    from hfgal.confusion import plot_confusion_matrix

    plot_confusion_matrix(confusion, list(GZ10_CLASSES), path)
