#!/usr/bin/env python
"""The transformers image-classification example's training pipeline on a GZ10 folder, as a launchable script.

    accelerate launch --num_processes 1 --num_cpu_threads_per_process 2 benchmarks/example_pipeline.py \\
        --dataset DIR --pipeline example --max-steps 150 --result example.json

An independent implementation of what `examples/pytorch/image-classification/run_image_classification.py`
does to train: the `datasets` folder's PNGs decoded by PIL for every sample, torchvision RandomResizedCrop /
RandomHorizontalFlip / ToTensor / Normalize through `set_transform`, the example's `collate_fn`, and a plain
`transformers.Trainer`. `--pipeline model_only` feeds the same Trainer one normalised batch over and over (no data
path at all): the ceiling of any Trainer pipeline for this model. Nothing of hfgal's data path is used; the model
is built by `hfgal.models.loading.load_model` so that every pipeline trains the same architecture.

Images/s is the Trainer's own `train_samples_per_second` (written with the run's settings to `--result` as JSON);
`benchmarks/end_to_end.py` launches it beside the recipe.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a save_to_disk GZ10 folder (hfgal data build / synthetic)")
    parser.add_argument("--pipeline", choices=["example", "model_only"], default="example")
    parser.add_argument("--model", default="convnextv2-tiny", help="hub id, local folder or hfgal named config")
    parser.add_argument("--model-config-overrides", default=None, help="JSON of config attributes to change")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=150)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (the Trainer's default: 0)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument(
        "--malloc",
        choices=["keep", "default"],
        default="default",
        help="'keep': glibc keeps freed memory, as hfgal's recipe sets it on a CPU (hfgal.train.hardware."
        "keep_freed_memory); 'default': glibc's own behaviour, as the example gets it",
    )
    parser.add_argument("--output-dir", default=None, help="Trainer output folder (default: beside --result)")
    parser.add_argument("--result", required=True, help="JSON file to write the measured numbers to")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


class OneBatch(torch.utils.data.Dataset):
    """`length` samples that are all one fixed, already normalised batch, handed out whole (`__getitems__`)."""

    def __init__(self, length: int, batch: int, size: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.length = length
        self.batch = {
            "pixel_values": torch.randn(batch, 3, size, size, generator=gen),  # (B, 3, H, W) normalised
            "labels": torch.randint(0, 10, (batch,), generator=gen),
        }

    def __len__(self) -> int:
        return self.length

    def __getitems__(self, indices):
        n = len(indices)
        return {k: v[:n] for k, v in self.batch.items()}


class StepTimes:
    """A Trainer callback keeping the wall-clock end of every optimizer step (for medians after warm-up)."""

    def __init__(self):
        from transformers import TrainerCallback

        ends = self.ends = []

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if torch.cuda.is_available() and args.device.type == "cuda":
                    torch.cuda.synchronize()
                ends.append(time.perf_counter())

        self.callback = Callback()

    def median_ips(self, batch: int, warmup: int = 10) -> float | None:
        steps = [b - a for a, b in zip(self.ends[:-1], self.ends[1:], strict=True)][warmup:]
        return batch / statistics.median(steps) if steps else None


def example_train_split(folder: str, size: int, mean, std):
    """The example's training data: PIL decode + torchvision transforms per sample, through `set_transform`."""
    from datasets import load_from_disk
    from torchvision.transforms import Compose, Normalize, RandomHorizontalFlip, RandomResizedCrop, ToTensor

    train = load_from_disk(folder)["train"]
    _train_transforms = Compose(
        [RandomResizedCrop(size), RandomHorizontalFlip(), ToTensor(), Normalize(mean=mean, std=std)]
    )

    def train_transforms(example_batch):
        example_batch["pixel_values"] = [_train_transforms(pil.convert("RGB")) for pil in example_batch["image"]]
        return example_batch

    train.set_transform(train_transforms)
    return train


def collate_fn(examples):
    if isinstance(examples, dict):  # OneBatch hands out whole batches
        return examples
    pixel_values = torch.stack([example["pixel_values"] for example in examples])
    labels = torch.tensor([example["label"] for example in examples])
    return {"pixel_values": pixel_values, "labels": labels}


def main(argv: list[str] | None = None) -> int:
    from transformers import Trainer, TrainingArguments, set_seed

    from hfgal.io import atomic_write_json
    from hfgal.models.loading import load_model

    args = parse_args(argv)
    if args.malloc == "keep" and args.device == "cpu":
        from hfgal.train.hardware import keep_freed_memory

        args.malloc = "keep" if keep_freed_memory() else "default"
    set_seed(args.seed)
    overrides = json.loads(args.model_config_overrides) if args.model_config_overrides else None
    size = (args.image_size, args.image_size)
    loaded = load_model(args.model, init="scratch", config_overrides=overrides, image_size=size)
    if args.pipeline == "example":
        train = example_train_split(args.dataset, args.image_size, loaded.mean, loaded.std)
    else:
        train = OneBatch(args.max_steps * args.batch_size, args.batch_size, args.image_size, args.seed)
    result = Path(args.result)
    training_args = TrainingArguments(
        output_dir=args.output_dir or str(result.with_suffix("")) + "-trainer",
        per_device_train_batch_size=args.batch_size,
        max_steps=args.max_steps,
        learning_rate=1e-4,
        weight_decay=0.05,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        label_smoothing_factor=0.1,
        dataloader_num_workers=args.workers,
        remove_unused_columns=False,  # the example keeps `image` for its transform
        bf16=args.bf16,
        use_cpu=args.device == "cpu",
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=50,
        # The ceiling reads no loss on the host at each step (hfgal's recipe neither); the example keeps the default.
        logging_nan_inf_filter=args.pipeline != "model_only",
        seed=args.seed,
    )
    times = StepTimes()
    trainer = Trainer(
        model=loaded.model,
        args=training_args,
        train_dataset=train,
        data_collator=collate_fn,
        callbacks=[times.callback],
    )
    metrics = trainer.train().metrics
    record = {
        "pipeline": args.pipeline,
        "train_samples_per_second": metrics["train_samples_per_second"],
        "train_runtime": metrics["train_runtime"],
        "median_step_ips": times.median_ips(args.batch_size),
        "steps": trainer.state.global_step,
        "torch_threads": torch.get_num_threads(),
        "malloc": args.malloc,
        "device": str(training_args.device),
    }
    atomic_write_json(result, record)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
