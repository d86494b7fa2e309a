#!/usr/bin/env python
"""Fine-tune a vision backbone on Galaxy10 DECaLS and leave every number the study needs.

    accelerate launch recipes/finetune.py --model facebook/dinov2-base
    accelerate launch recipes/finetune.py --config recipes/offline.yaml      # offline, synthetic galaxies

Every `TrainingArguments` flag works; `--config recipe.yaml` sets defaults that flags override. The run folder
gets the best-on-validation model (safetensors + image processor), results.json (test evaluated once),
confusion_matrix.png, config.yaml and a model card.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import EarlyStoppingCallback, ViTImageProcessor, set_seed

from hfgal.carbon import CarbonCallback, with_shared_training
from hfgal.checkpoints import TRAINING_RECORD, resolve_resume, shared_training
from hfgal.confusion import plot_confusion_matrix
from hfgal.data import load_gz10
from hfgal.metrics import compute_gz10_metrics, compute_metrics_fn
from hfgal.models import freeze_backbone, load_model
from hfgal.training import (
    GZ10Trainer,
    cached_split,
    collate_uint8,
    config_overrides,
    count_parameters,
    end_distributed,
    hardware_info,
    parse_args,
    parse_image_size,
    predict_labels,
    resolved_config,
    versions_info,
)
from hfgal.utils import HfgalError, atomic_write_json, atomic_write_text, keep_freed_memory, run_cli


def main(argv: list[str] | None = None) -> int:
    # ---- parse
    model_args, data_args, training_args = parse_args(argv)
    out = Path(training_args.output_dir)
    config = resolved_config(model_args, data_args, training_args)
    push_repo = training_args.hub_model_id if training_args.push_to_hub else None
    if training_args.push_to_hub:
        from hfgal.hub import require_token, validate_repo_id

        if not push_repo:
            raise HfgalError("--push_to_hub needs --hub_model_id USER/NAME")
        validate_repo_id(push_repo)
        require_token()  # fail now, not after hours of training
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise HfgalError(
                "--push_to_hub needs the Hub but HF_HUB_OFFLINE is set; unset it, or push later with hfgal push"
            )
        training_args.push_to_hub = False  # one commit at the end instead of the Trainer's commit per save
    if (out / "results.json").is_file() and not training_args.overwrite_output_dir:
        if not (out / "README.md").is_file():  # killed between results.json and its card
            from hfgal.cards import write_model_card

            write_model_card(out, repo_id=push_repo)
        print(f"{out} already holds a finished run (results.json); pass --overwrite_output_dir true to train again")
        return 0
    image_size = parse_image_size(model_args.image_size, data_args.tta, data_args.d4_augment)
    resume = resolve_resume(out, training_args.resume_from_checkpoint, training_args.overwrite_output_dir)
    set_seed(training_args.seed)
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
    model = loaded.model
    if model_args.linear_probe:
        freeze_backbone(model)
    params_total, params_trainable = count_parameters(model)

    # ---- data: decode once into a uint8 cache at the model's resolution (local main process builds it)
    with training_args.main_process_first(local=True, desc="GZ10 uint8 cache"):
        dsd = load_gz10(
            data_args.dataset,
            seed=data_args.split_seed,
            split_scheme=data_args.split_scheme,
            revision=data_args.dataset_revision,
        )
        train_ds, cache_s1 = cached_split(
            dsd["train"], loaded.image_size, data_args.image_cache_dir, data_args.max_train_samples
        )
        val_ds, cache_s2 = cached_split(dsd["validation"], loaded.image_size, data_args.image_cache_dir)
        test_ds, cache_s3 = cached_split(dsd["test"], loaded.image_size, data_args.image_cache_dir)

    # ---- trainer
    carbon = CarbonCallback(
        country_iso_code=training_args.carbon_country_iso_code,
        region=training_args.carbon_region,
        enabled=training_args.carbon_tracking,
    )
    callbacks = [carbon]
    if training_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience))
    trainer = GZ10Trainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=collate_uint8,
        compute_metrics=compute_metrics_fn,
        callbacks=callbacks,
        mean=loaded.mean,
        std=loaded.std,
        d4_augment=data_args.d4_augment,
        affine_augment=data_args.affine_augment,
        layer_decay=model_args.layer_decay,
    )
    if trainer.is_world_process_zero():
        import yaml

        atomic_write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    # ---- train (the best checkpoint on validation is loaded at the end)
    if training_args.device.type == "cpu":
        keep_freed_memory()  # no page faults on every large tensor of every step (see hfgal.utils)
    if shared is None:
        start = time.perf_counter()
        train_result = trainer.train(resume_from_checkpoint=resume)
        best = trainer.state.best_model_checkpoint
        trained = {
            "model": model_args.model_name_or_path,
            "model_type": loaded.model_type,
            "base_model": loaded.base_model,
            "init": loaded.init,
            "params_total": params_total,
            "params_trainable": params_trainable,
            "best_checkpoint": Path(best).name if best else None,
            "global_step": trainer.state.global_step,
            "epochs": trainer.state.epoch,
            "train_seconds": time.perf_counter() - start,
            "train_images_per_second": train_result.metrics.get("train_samples_per_second"),
        }
    else:
        trained = {key: shared.get(key) for key in TRAINING_RECORD}
        trained["trained_by"] = Path(training_args.trained_run).name

    # ---- evaluate once: validation (for the record) and test, with the selected model
    trainer.tta = data_args.tta
    with carbon.track("eval"):
        val_pred, val_true = predict_labels(trainer, val_ds)
        test_pred, test_true = predict_labels(trainer, test_ds)
    carbon_summary = carbon.summary(gather=True)
    if shared is not None:
        carbon_summary = with_shared_training(carbon_summary, shared.get("carbon") or {})

    # ---- save: model + processor, metrics, confusion matrix, results.json last (it marks the run complete)
    if trainer.is_world_process_zero():
        trainer.save_model(str(out))
        height, width = loaded.image_size
        ViTImageProcessor(
            size={"height": height, "width": width}, image_mean=list(loaded.mean), image_std=list(loaded.std)
        ).save_pretrained(str(out))
        validation = compute_gz10_metrics(val_pred, val_true)
        test = compute_gz10_metrics(test_pred, test_true)
        plot_confusion_matrix(
            test["confusion_matrix"],
            model.config.id2label.values(),
            out / "confusion_matrix.png",
            title=f"{model_args.model_name_or_path} — GZ10 test",
        )
        world = training_args.world_size
        results = {
            "hfgal_version": versions_info()["hfgal"],
            "complete": True,
            "linear_probe": model_args.linear_probe,
            "d4_augment": data_args.d4_augment,
            "tta": data_args.tta,
            **trained,
            "image_size": height if height == width else [height, width],
            "dataset": data_args.dataset,
            "dataset_revision": data_args.dataset_revision,
            "split_scheme": data_args.split_scheme,
            "seed": training_args.seed,
            "run_name": training_args.run_name or out.name,
            "validation": validation,
            "test": test,
            "carbon": carbon_summary,
            "cache_build_seconds": cache_s1 + cache_s2 + cache_s3,
            "hardware": hardware_info(world, int(training_args.world_size / max(1, _local_world()))),
            "versions": versions_info(),
            "training": {
                "learning_rate": training_args.learning_rate,
                "per_device_train_batch_size": training_args.per_device_train_batch_size,
                "effective_batch_size": training_args.per_device_train_batch_size
                * training_args.gradient_accumulation_steps
                * world,
                "num_train_epochs": training_args.num_train_epochs,
                "max_steps": training_args.max_steps,
                "weight_decay": training_args.weight_decay,
                "warmup_steps": training_args.warmup_steps,
                "lr_scheduler_type": str(
                    getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
                ),
                "label_smoothing_factor": training_args.label_smoothing_factor,
                "layer_decay": model_args.layer_decay,
                "optim": str(getattr(training_args.optim, "value", training_args.optim)),
                "bf16": training_args.bf16,
                "fp16": training_args.fp16,
            },
        }
        atomic_write_json(out / "results.json", results)
        from hfgal.cards import write_model_card

        write_model_card(out, repo_id=push_repo)
        low, high = test["accuracy_ci95"]
        print(
            f"test accuracy {test['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f}), macro-F1 {test['macro_f1']:.4f}, "
            f"{trained['train_seconds']:.0f}s -> {out}"
        )

    end_distributed()  # all ranks leave together; a rank exiting with a live process group can abort

    # ---- push: one commit of the prepared folder, main process only
    if push_repo and trainer.is_world_process_zero():
        from hfgal.hub import push_run

        print(f"pushed to {push_run(out, push_repo, private=training_args.hub_private_repo)}")
    return 0


def _local_world() -> int:
    import os

    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


if __name__ == "__main__":
    run_cli(main, prog="finetune.py")
