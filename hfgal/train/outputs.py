"""What a finished fine-tuning run writes into its folder: the selected model with the image processor that serves
it, the resolved config, the confusion-matrix figure, and its `RunRecord` (results.json, written last).

The recipe calls these in order after evaluation; every file is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from ..models.equivariant import write_remote_code
from ..models.loading import LoadedModel
from ..runs import (
    CONFIG_FILE,
    CONFUSION_FILE,
    CarbonRecord,
    Hyperparameters,
    RunRecord,
    SelectionOnTest,
    SplitMetrics,
    plot_confusion_matrix,
)
from .hardware import hardware_info, versions_info
from .metrics import compute_gz10_metrics


def write_config(out: str | os.PathLike, config: dict[str, Any]) -> Path:
    """Write the run's resolved config (`config.yaml`): the run can be reproduced from it with `--config`."""
    import yaml

    return atomic_write_text(Path(out) / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def save_model(trainer: Any, out: str | os.PathLike, loaded: LoadedModel, geometry: Any = None) -> None:
    """Save the trainer's (selected) model and an image processor that prepares images as training did: the whole
    image resized to the training size, normalised with the backbone's statistics; or, when training used the
    checkpoint's own processor's resize and crop (`geometry` crops), that processor itself."""
    from transformers import ViTImageProcessor

    trainer.save_model(str(out))
    write_remote_code(out)  # an equivariant GCNN's folder carries its modelling code: it loads without hfgal too
    if getattr(geometry, "crops", False) and loaded.processor is not None:
        loaded.processor.save_pretrained(str(out))
        return
    height, width = loaded.image_size
    ViTImageProcessor(
        size={"height": height, "width": width}, image_mean=list(loaded.mean), image_std=list(loaded.std)
    ).save_pretrained(str(out))


def training_outcome(trainer: Any, loaded: LoadedModel, model: str, carbon: CarbonRecord, num_train: int):
    """What training produced, as `RunRecord` fields (see `hfgal.runs.TRAINING_OUTCOME`).

    Time is the wall time of training over every segment of a resumed run (the carbon record's `train` phase: each
    segment up to the checkpoint the next one resumed from, and the last one whole); throughput is the training
    images those segments went through (epochs x training images) per second of it.

    Args:
        trainer: the trainer after `train()` (the best checkpoint on validation is loaded).
        loaded: the model as loaded.
        model: the `--model` the run was asked for.
        carbon: the run's carbon record (its `train` phase).
        num_train: images in the training split.
    """
    from ..models.adapt import count_parameters

    total, trainable = count_parameters(trainer.model)
    best = trainer.state.best_model_checkpoint
    seconds = carbon.phases["train"].duration_s
    images = (trainer.state.epoch or 0.0) * num_train
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
        lr_scheduler_type=str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)),
        label_smoothing_factor=training_args.label_smoothing_factor,
        layer_decay=layer_decay,
        optim=str(getattr(training_args.optim, "value", training_args.optim)),
        bf16=training_args.bf16,
        fp16=training_args.fp16,
    )


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


def split_fields(split_info: dict[str, Any] | None, requested: str | None) -> dict[str, Any]:
    """The `RunRecord` fields that say which split a run used, from `load_gz10`'s split info: what the source
    honoured (e.g. `hub-split` for the published Hub copy), not what was asked for."""
    if not split_info:
        return {"split_scheme": requested}
    return {
        "split_scheme": split_info.get("scheme") or requested,
        "split": split_info.get("split"),
        "split_separation_arcsec": split_info.get("separation_arcsec") if split_info.get("grouped") else None,
        "split_close_pairs": split_info.get("close_pairs"),
    }


def build_run_record(
    *,
    model_args: Any,
    data_args: Any,
    training_args: Any,
    loaded: LoadedModel,
    outcome: dict[str, Any],
    predictions: dict[str, tuple[Any, Any]],
    carbon: Any,
    cache_build_seconds: float,
    split_info: dict[str, Any] | None = None,
    geometry: Any = None,
    log_history: list[dict[str, Any]] | None = None,
) -> RunRecord:
    """The run's `RunRecord` from its arguments and what training and evaluation measured.

    Args:
        model_args, data_args, training_args: the parsed recipe arguments.
        loaded: the model as loaded.
        outcome: `training_outcome(...)`, or the shared run's (with `trained_by`).
        predictions: `{"validation": (predicted, true), "test": (predicted, true)}` class ids of the selected model.
        carbon: the run's `CarbonRecord`.
        cache_build_seconds: time spent building the uint8 cache in this run.
        split_info: the loaded `DatasetDict`'s `split_info` (`hfgal.data.sources.load_gz10`): the split used.
        geometry: how images were prepared (`hfgal.models.preprocessing.input_geometry`).
        log_history: the trainer's log history, for the `--test_each_eval` diagnostic.
    """
    height, width = loaded.image_size
    world = training_args.world_size
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    metrics = {split: SplitMetrics(**compute_gz10_metrics(*pair)) for split, pair in predictions.items()}
    versions = versions_info()
    return RunRecord(
        **outcome,
        validation=metrics["validation"],
        test=metrics["test"],
        image_size=height if height == width else [height, width],
        linear_probe=model_args.linear_probe,
        d4_augment=data_args.d4_augment,
        tta=data_args.tta,
        dataset=data_args.dataset,
        dataset_revision=data_args.dataset_revision,
        **split_fields(split_info, data_args.split_scheme),
        preprocessing=geometry.describe() if hasattr(geometry, "describe") else "whole image resized",
        normalization={"mean": list(loaded.mean), "std": list(loaded.std)},
        protocol=training_args.protocol,
        selection_on_test=selection_on_test(log_history or []),
        seed=training_args.seed,
        run_name=training_args.run_name or Path(training_args.output_dir).name,
        carbon=carbon,
        cache_build_seconds=cache_build_seconds,
        hardware=hardware_info(world, max(1, world // max(1, local_world))),
        training=hyperparameters(training_args, model_args.layer_decay),
        versions=versions,
        hfgal_version=versions["hfgal"],
    )


def plot_test_confusion(record: RunRecord, out: str | os.PathLike, class_names: Any) -> Path:
    """`confusion_matrix.png`: the row-normalised test confusion matrix of the selected model."""
    path, title = Path(out) / CONFUSION_FILE, f"{record.model} — GZ10 test"
    return plot_confusion_matrix(record.test.confusion_matrix, list(class_names), path, title=title)
