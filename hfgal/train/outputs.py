"""What a finished fine-tuning run writes into its folder: the selected model with the image processor that serves
it, the resolved config, the confusion-matrix figure, and its `RunRecord` (results.json, written last).

The recipe calls these in order after evaluation; every file is written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..catalogue import probability_columns, write_table
from ..constants import GZ10_CLASSES
from ..data.geometry import Geometry
from ..data.split import GZ10Splits, SplitInfo
from ..io import atomic_write_json, atomic_write_text
from ..models.equivariant import write_remote_code
from ..models.loading import LoadedModel
from ..runs import (
    CONFIG_FILE,
    CONFUSION_FILE,
    MODEL_CONFIG_FILE,
    PREDICTIONS_FILE,
    PROCESSOR_FILE,
    CarbonRecord,
    Hyperparameters,
    RunRecord,
    SelectionOnTest,
    SplitMetrics,
    plot_confusion_matrix,
)
from .curves import save_learning_curves
from .hardware import hardware_info, versions_info
from .metrics import compute_gz10_metrics


def write_config(out: str | os.PathLike, config: dict[str, Any]) -> Path:
    """Write the run's resolved config (`config.yaml`): the run can be reproduced from it with `--config`."""
    import yaml

    return atomic_write_text(Path(out) / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def save_model(trainer: Any, out: str | os.PathLike, loaded: LoadedModel, geometry: Geometry) -> None:
    """Save the trainer's (selected) model and the image processor its training was fed by.

    The processor is `geometry` (the resize and crop that filled the uint8 cache) with the normalisation training
    applied on the device, as a standard transformers image processor (`preprocessor_config.json`), which every
    consumer of the folder reads: `load_classifier`, `pipeline()`, `hfgal predict`, the Space, the Hub copy. A timm
    model's `pretrained_cfg` in `config.json` is set to the same, for timm's own loaders.
    """
    out = Path(out)
    trainer.save_model(str(out))
    write_remote_code(out)  # an equivariant GCNN's folder carries its modelling code: it loads without hfgal too
    atomic_write_json(out / PROCESSOR_FILE, geometry.processor_config(loaded.mean, loaded.std))
    config_path = out / MODEL_CONFIG_FILE
    config = json.loads(config_path.read_text())
    if config.get("model_type") == "timm_wrapper":
        crop_pct = min(geometry.height, geometry.width) / geometry.resize if geometry.crops else 1.0
        config["pretrained_cfg"] = {
            **(config.get("pretrained_cfg") or {}),
            "input_size": [3, geometry.height, geometry.width],
            "crop_pct": crop_pct,
            "crop_mode": "center",
            "interpolation": geometry.resample,
            "mean": list(loaded.mean),
            "std": list(loaded.std),
        }
        atomic_write_json(config_path, config)


def training_outcome(trainer: Any, loaded: LoadedModel, model: str, carbon: CarbonRecord) -> dict[str, Any]:
    """What training produced, as `RunRecord` fields (see `hfgal.runs.TRAINING_OUTCOME`).

    Time is the wall time of training over every segment of a resumed run (the carbon record's `train` phase: each
    segment up to the checkpoint the next one resumed from, and the last one whole); throughput is the training
    images those segments went through (epochs x training images) per second of it.

    Args:
        trainer: the trainer after `train()` (the best checkpoint on validation is loaded).
        loaded: the model as loaded.
        model: the `--model` the run was asked for.
        carbon: the run's carbon record (its `train` phase).
    """
    from ..models.adapt import count_parameters

    total, trainable = count_parameters(trainer.model)
    best = trainer.state.best_model_checkpoint
    seconds = carbon.phases["train"].duration_s
    images = (trainer.state.epoch or 0.0) * len(trainer.train_dataset)
    return {
        "model": model,
        "model_type": loaded.model_type,
        "base_model": loaded.base_model,
        "init": loaded.init,
        "params_total": total,
        "params_trainable": trainable,
        "best_checkpoint": Path(best).name if best else None,
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_seconds": seconds,
        "train_images_per_second": images / seconds if seconds > 0 else None,
    }


def hyperparameters(training_args: Any, layer_decay: float | None) -> Hyperparameters:
    """The optimisation settings of a run, from its `GZ10TrainingArguments`."""
    world = training_args.world_size
    return Hyperparameters(
        learning_rate=training_args.learning_rate,
        per_device_train_batch_size=training_args.per_device_train_batch_size,
        effective_batch_size=training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * world,
        num_train_epochs=training_args.num_train_epochs,
        max_steps=training_args.max_steps,
        weight_decay=training_args.weight_decay,
        warmup_steps=training_args.warmup_steps,
        lr_scheduler_type=_schedule(training_args),
        label_smoothing_factor=training_args.label_smoothing_factor,
        layer_decay=layer_decay,
        optim=str(getattr(training_args.optim, "value", training_args.optim)),
        bf16=training_args.bf16,
        fp16=training_args.fp16,
    )


def _schedule(training_args: Any) -> str:
    if training_args.lr_step_epochs is not None:
        return f"step (x{training_args.lr_step_gamma:g} at epochs {training_args.lr_step_epochs})"
    return str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type))


def selection_on_test(log_history: list[dict[str, Any]]) -> SelectionOnTest | None:
    """The diagnostic of `--test_each_eval`: the best test accuracy over the evaluations made during training."""
    scored = [e for e in log_history if "eval_test_accuracy" in e]
    if not scored:
        return None
    best = max(scored, key=lambda e: e["eval_test_accuracy"])
    return SelectionOnTest(
        test_accuracy=float(best["eval_test_accuracy"]),
        step=int(best.get("step", 0)),
        epoch=best.get("epoch"),
        evaluations=len(scored),
    )


def split_fields(info: SplitInfo) -> dict[str, Any]:
    """The `RunRecord` fields that say which split a run used: what the source honoured (e.g. `hub-split` for the
    published Hub copy), not what was asked for."""
    return {
        "split_scheme": info.scheme,
        "split": info.description,
        "split_separation_arcsec": info.separation_arcsec if info.grouped else None,
        "split_close_pairs": info.close_pairs,
    }


def save_run(
    trainer: Any,
    out: str | os.PathLike,
    args: tuple[Any, Any, Any],
    loaded: LoadedModel,
    data: dict[str, Any],
    probabilities: dict[str, tuple[np.ndarray, np.ndarray]],
    outcome: dict[str, Any],
    carbon: CarbonRecord,
) -> RunRecord:
    """Write what a finished run leaves, results.json last (it marks the run complete): the selected model with its
    image processor, predictions.csv, confusion_matrix.png and the record.

    Args:
        trainer: the trainer holding the selected model.
        out: the run folder.
        args: the parsed recipe arguments `(model_args, data_args, training_args)`.
        loaded: the model as loaded.
        data: `hfgal.train.finetune.prepare_data`'s splits, geometry, `GZ10Splits` and cache time.
        probabilities: `{"validation": (probabilities, true labels), "test": ...}` of the selected model.
        outcome: `training_outcome(...)`, or the shared run's (with `trained_by`).
        carbon: the run's `CarbonRecord`.

    Returns:
        The run's `RunRecord`, as saved.
    """
    model_args, data_args, training_args = args
    save_model(trainer, out, loaded, data["geometry"])
    write_predictions(out, data["gz10"], probabilities)
    predictions = {split: (p.argmax(-1), labels) for split, (p, labels) in probabilities.items()}
    metrics = {split: SplitMetrics(**compute_gz10_metrics(*pair)) for split, pair in predictions.items()}
    world, local_world = training_args.world_size, int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    geometry, versions = data["geometry"], versions_info()
    record = RunRecord(
        **outcome,
        validation=metrics["validation"],
        test=metrics["test"],
        image_size=geometry.size if isinstance(geometry.size, int) else list(geometry.size),
        linear_probe=model_args.linear_probe,
        d4_augment=data_args.d4_augment,
        tta=data_args.tta,
        dataset=data_args.dataset,
        dataset_revision=data_args.dataset_revision,
        **split_fields(data["gz10"].info),
        preprocessing=geometry.describe(),
        normalization={"mean": list(loaded.mean), "std": list(loaded.std)},
        protocol=training_args.protocol,
        selection_on_test=selection_on_test(trainer.state.log_history),
        seed=training_args.seed,
        run_name=training_args.run_name or Path(training_args.output_dir).name,
        carbon=carbon,
        cache_build_seconds=data["cache_seconds"],
        hardware=hardware_info(world, max(1, world // max(1, local_world))),
        training=hyperparameters(training_args, model_args.layer_decay),
        versions=versions,
        hfgal_version=versions["hfgal"],
    )
    path, title = Path(out) / CONFUSION_FILE, f"{record.model} — GZ10 test"
    plot_confusion_matrix(record.test.confusion_matrix, list(GZ10_CLASSES), path, title=title)
    save_learning_curves(out, trainer.state.log_history, best_step=trainer.state.best_global_step)
    record.save(out)
    return record


def write_predictions(
    out: str | os.PathLike, gz10: GZ10Splits, probabilities: dict[str, tuple[np.ndarray, np.ndarray]]
) -> Path:
    """`predictions.csv`: every validation and test galaxy as the selected model scored it, a catalogue row each
    (split, row, gz10_index, ra, dec, label, predicted, probability of every class)."""
    columns: dict[str, list] = {name: [] for name in ("split", "row", "gz10_index", "ra", "dec", "label", "predicted")}
    names = probability_columns(GZ10_CLASSES)
    columns.update({name: [] for name in names})
    for split, (probs, labels) in probabilities.items():
        meta = gz10.splits[split].select_columns(["gz10_index", "ra", "dec"]).with_format("numpy")[:]
        columns["split"] += [split] * len(labels)
        columns["row"] += list(range(len(labels)))
        columns["gz10_index"] += [int(i) for i in meta["gz10_index"]]
        columns["ra"] += [None if np.isnan(v) else float(v) for v in meta["ra"]]
        columns["dec"] += [None if np.isnan(v) else float(v) for v in meta["dec"]]
        columns["label"] += [GZ10_CLASSES[int(i)] for i in labels]
        columns["predicted"] += [GZ10_CLASSES[int(i)] for i in probs.argmax(-1)]
        for k, name in enumerate(names):
            columns[name] += [float(p) for p in probs[:, k]]
    return write_table(Path(out) / PREDICTIONS_FILE, columns)
