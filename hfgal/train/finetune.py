"""The fine-tuning recipe: one run, from arguments to a finished run folder.

    hfgal train --model facebook/dinov2-base                         # installed: the console script
    accelerate launch -m hfgal.train --model facebook/dinov2-base    # the same code under a launcher
    accelerate launch recipes/finetune.py --config recipes/offline.yaml

Every `TrainingArguments` flag works; `--config recipe.yaml` sets defaults that flags override. The run folder gets
the best-on-validation model (safetensors + the image processor that fed its training), results.json (test
evaluated once), predictions.csv, confusion_matrix.png, config.yaml and a model card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import EarlyStoppingCallback, set_seed

from ..data.cache import cached_splits, collate_uint8
from ..data.sources import load_gz10
from ..hub.card import write_model_card
from ..hub.push import push_run
from ..models.adapt import freeze_backbone
from ..models.loading import LoadedModel, load_model
from ..runs import CARD_FILE
from .args import (
    DataArguments,
    GZ10TrainingArguments,
    ModelArguments,
    config_overrides,
    parse_image_size,
    push_target,
    resolved_config,
)
from .carbon import CarbonCallback
from .hardware import keep_freed_memory, set_torch_threads
from .metrics import compute_metrics_fn
from .outputs import save_run, training_outcome, write_config
from .resume import claim_run_folder, resolve_resume, shared_training
from .trainer import GZ10Trainer, end_distributed, evaluation_sets, predict_probabilities

EVALUATED = ("validation", "test")  # once, with the selected model: validation for the record, test as the result


def main(model_args: ModelArguments, data_args: DataArguments, training_args: GZ10TrainingArguments) -> int:
    # ---- setup: the run folder holds nothing yet, or this very run (never another model's)
    out = Path(training_args.output_dir)
    config = resolved_config(model_args, data_args, training_args)
    push_repo = push_target(training_args)  # checked now, not after hours of training; pushed once at the end
    if claim_run_folder(out, config, training_args.overwrite_output_dir):
        if not (out / CARD_FILE).is_file():  # killed between results.json and its card
            write_model_card(out, repo_id=push_repo)
        print(f"{out} already holds this run, finished; pass --overwrite_output_dir true to train it again")
        return 0
    image_size = parse_image_size(model_args.image_size, data_args.tta, data_args.d4_augment)
    resume = resolve_resume(out, training_args.resume_from_checkpoint, training_args.overwrite_output_dir)
    set_seed(training_args.seed)
    set_torch_threads(training_args)  # the cores / local processes, whatever the launcher set (hfgal.train.hardware)
    # A run that differs from a finished one only in evaluation (e.g. --tta) evaluates that run's selected model.
    shared = shared_training(training_args.trained_run, config) if training_args.trained_run else None

    # ---- model
    loaded = load_model(
        training_args.trained_run or model_args.model_name_or_path,
        init="pretrained" if shared else model_args.init,
        config_overrides=None if shared else config_overrides(model_args),
        image_size=image_size,
        revision=None if shared else model_args.model_revision,
        trust_remote_code=model_args.trust_remote_code,
    )
    if model_args.linear_probe:
        freeze_backbone(loaded.model)

    # ---- data: decoded once into a uint8 cache by the image processor the run folder will serve with
    data = prepare_data(data_args, training_args, loaded)

    # ---- trainer
    carbon = CarbonCallback.from_args(training_args, resumed_from=resume)  # adds up the resumed segments
    trainer = build_trainer(model_args, data_args, training_args, loaded, data["splits"], carbon)
    if trainer.is_world_process_zero():
        write_config(out, config)

    # ---- train (the best checkpoint on validation is loaded at the end)
    if training_args.device.type == "cpu":
        keep_freed_memory()  # no page faults on every large tensor of every step (see hfgal.train.hardware)
    if shared is None:
        trainer.train(resume_from_checkpoint=resume)

    # ---- evaluate once: validation (for the record) and test, with the selected model
    trainer.tta = data_args.tta
    with carbon.track("eval"):
        probabilities = {
            split: predict_probabilities(trainer, data["splits"][split]) for split in ("validation", "test")
        }
    carbon_record = carbon.summary(gather=True)
    if shared is None:  # time and throughput of the whole training, every resumed segment counted
        outcome = training_outcome(trainer, loaded, model_args.model_name_or_path, carbon_record)
    else:  # its CO2 counts the training it stands on
        outcome = {**shared.training_outcome(), "trained_by": Path(training_args.trained_run).name}
        carbon_record = carbon_record.with_training_of(shared.carbon)

    # ---- save: model + processor, predictions, confusion matrix, results.json last (it marks the run complete)
    if trainer.is_world_process_zero():
        record = save_run(
            trainer, out, (model_args, data_args, training_args), loaded, data, probabilities, outcome, carbon_record
        )
        write_model_card(out, repo_id=push_repo)
        low, high = record.test.accuracy_ci95
        print(
            f"test accuracy {record.test.accuracy:.4f} (95% CI {low:.4f}-{high:.4f}), "
            f"macro-F1 {record.test.macro_f1:.4f}, {record.train_seconds:.0f}s -> {out}"
        )
    end_distributed()  # all ranks leave together; a rank exiting with a live process group can abort

    # ---- push: one commit of the prepared folder, main process only
    if push_repo and trainer.is_world_process_zero():
        url = push_run(out, push_repo, private=training_args.hub_private_repo, revision=training_args.hub_revision)
        print(f"pushed to {url}")
    return 0


def prepare_data(
    data_args: DataArguments, training_args: GZ10TrainingArguments, loaded: LoadedModel
) -> dict[str, Any]:
    """The GZ10 splits as uint8 caches prepared the way the run will serve images (the local main process of each
    machine builds them while the others wait).

    Returns:
        `{"splits": {split: UInt8Images}, "geometry": Geometry, "gz10": GZ10Splits, "cache_seconds": float}`.
    """
    with training_args.main_process_first(local=True, desc="GZ10 uint8 cache"):
        gz10 = load_gz10(
            data_args.dataset,
            seed=data_args.split_seed,
            split_scheme=data_args.split_scheme,
            separation_arcsec=data_args.split_separation_arcsec,
            revision=data_args.dataset_revision,
        )
        geometry = loaded.input_geometry(data_args.preprocessing)  # whole image, or the processor's resize + crop
        splits, seconds = cached_splits(gz10.splits, geometry, data_args.image_cache_dir, data_args.max_train_samples)
    return {"splits": splits, "geometry": geometry, "gz10": gz10, "cache_seconds": seconds}


def build_trainer(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: GZ10TrainingArguments,
    loaded: LoadedModel,
    splits: dict[str, Any],
    carbon: CarbonCallback,
) -> GZ10Trainer:
    """The `GZ10Trainer` of the run: validation selects the checkpoint; carbon (and early stopping) as asked."""
    callbacks = [carbon]
    if training_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience))
    return GZ10Trainer(
        model=loaded.model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=evaluation_sets(splits, data_args.test_each_eval),
        data_collator=collate_uint8,
        compute_metrics=compute_metrics_fn,
        callbacks=callbacks,
        mean=loaded.mean,
        std=loaded.std,
        d4_augment=data_args.d4_augment,
        affine_augment=data_args.affine_augment,
        layer_decay=model_args.layer_decay,
    )


def cli(argv: list[str] | None = None, prog: str = "hfgal train") -> None:
    """Parse the recipe's arguments (`--config recipe.yaml` sets defaults, flags override) and run it; bad input is
    one line, not a traceback.

    Args:
        argv: the arguments (default `sys.argv[1:]`).
        prog: the command's name in `--help` and in error messages.
    """
    import sys

    from ..errors import run_cli
    from .args import parse_args

    argv = list(sys.argv[1:] if argv is None else argv)
    run_cli(lambda: main(*parse_args(argv, prog=prog)), argv, prog=prog)
