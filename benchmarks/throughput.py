#!/usr/bin/env python
"""Training images/second: the model alone vs hfgal's data path vs the transformers example pipeline (a benchmark).

    python benchmarks/throughput.py --model convnextv2-tiny --device cpu \\
        --model-config-overrides '{"depths": [1, 1, 2, 1], "hidden_sizes": [16, 32, 64, 128]}'
    bash benchmarks/gpu_throughput.sh       # ConvNeXtV2-Tiny, 224 px, bf16, channels_last on one GPU

One run measures, for the same model, batch, resolution, dtype and device:
  model_only  forward + backward + optimizer step on a batch already on the device (the ceiling);
  hfgal       the recipe's real path: `GZ10Trainer.train()` over the memory-mapped uint8 cache (`UInt8Images`,
              `collate_uint8`) with D4 + affine augmentation and normalisation on the device;
  baseline    the transformers example `run_image_classification.py` pipeline: PIL decode of the stored images,
              per-sample torchvision RandomResizedCrop / RandomHorizontalFlip / ToTensor / Normalize through
              `set_transform`, a DataLoader with the same workers, then the same model and optimizer step.
and, to show what each data path could feed, the data paths alone (no model): `hfgal_data` (the Trainer's own
dataloader + on-device augmentation) and `baseline_data` (the example's DataLoader + the copy to the device).
Each mode warms up, then every step is timed (the device synchronised at each step end); images/s come from the
median over sliding windows of max(4, 2 x workers) steps (see `step_stats`). With `--rounds N` the modes take turns
N times and their steps are pooled, so a machine whose load drifts (shared CPUs) weighs on every mode alike. The
data (synthetic by default) is written with `save_gz10` and read back with `load_gz10`, the on-disk format the
recipe reads. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hfgal.constants import GZ10_CLASS_COUNTS
from hfgal.data.cache import cached_splits, collate_uint8
from hfgal.data.save import save_gz10
from hfgal.data.sources import load_gz10
from hfgal.errors import HfgalError, run_cli
from hfgal.models.loading import load_model
from hfgal.train.args import GZ10TrainingArguments
from hfgal.train.hardware import keep_freed_memory
from hfgal.train.trainer import GZ10Trainer

MODES = ("model_only", "hfgal", "baseline", "hfgal_data", "baseline_data")
# GZ10 DECaLS has 17,736 images; the default split trains on 80 % of them.
GZ10_TRAIN_IMAGES = round(0.8 * sum(GZ10_CLASS_COUNTS))
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="convnextv2-tiny", help="hub id, local folder or named config")
    parser.add_argument("--model-config-overrides", default=None, help="JSON of config attributes to change")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode and round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per mode first")
    parser.add_argument(
        "--num-images",
        type=int,
        default=None,
        help="images to generate (synthetic; default: one epoch per mode) or to keep of a real training split",
    )
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of hfgal and baseline")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--channels-last", action="store_true", help="channels_last model and inputs, every mode")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model, every mode")
    parser.add_argument("--dataset", default="synthetic", help="synthetic, or anything load_gz10 takes")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    parser.add_argument("--rounds", type=int, default=1, help="times the modes take turns (steps are pooled)")
    parser.add_argument("--work-dir", default=None, help="keep data and uint8 cache here (default: a temp folder)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--malloc",
        choices=["keep", "default"],
        default="keep",
        help="on a CPU: 'keep' (what the recipe does, hfgal.train.hardware.keep_freed_memory) or glibc's default; "
        "every mode",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(args.modes) - set(MODES) or not args.modes:
        raise HfgalError(f"--modes {','.join(args.modes)} is not valid; choose from {','.join(MODES)}")
    if args.device not in ("cpu", "cuda"):
        raise HfgalError(f"--device {args.device} is not valid; use cpu or cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise HfgalError("--device cuda but no CUDA GPU is visible; use --device cpu")
    if args.model_config_overrides:
        try:
            args.model_config_overrides = json.loads(args.model_config_overrides)
        except json.JSONDecodeError as err:
            raise HfgalError(f"--model-config-overrides is not valid JSON ({err.msg}); pass a JSON object") from None
        if not isinstance(args.model_config_overrides, dict):
            raise HfgalError("--model-config-overrides must be a JSON object, e.g. '{\"depths\": [1, 1, 1, 1]}'")
    if args.dtype == "fp16" and args.device != "cuda":
        raise HfgalError("--dtype fp16 needs --device cuda; use fp32 or bf16 on the CPU")
    if min(args.batch_size, args.steps, args.image_size, args.rounds) < 1 or min(args.warmup, args.workers) < 0:
        raise HfgalError("--batch-size, --steps, --image-size and --rounds must be >= 1, --warmup and --workers >= 0")
    return args


# --------------------------------------------------------------------------- measuring


class MemoryWatch:
    """Peak host memory while a mode runs, sampled from /proc by a thread once a second.

    `rss` is this process; `workers` adds up the DataLoader workers' proportional set size (PSS), in which the
    libraries and the memory-mapped cache they share with this process count only their share.
    """

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.peak_rss = self.peak_workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        process = psutil.Process()
        self.peak_rss = max(self.peak_rss, process.memory_info().rss)
        workers = 0
        for child in process.children(recursive=True):
            try:
                workers += _pss(child)
            except (psutil.Error, OSError):
                continue
        self.peak_workers = max(self.peak_workers, workers)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> MemoryWatch:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _pss(process) -> int:
    # smaps_rollup is one line per kind of memory: far cheaper than psutil's full smaps walk.
    try:
        with open(f"/proc/{process.pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    info = process.memory_info()
    return info.rss - getattr(info, "shared", 0)


def step_stats(rounds: list[list[float]], batch: int, window: int) -> dict:
    """Images/s from the timed steps' durations (one list per round).

    `ips` comes from the median over sliding windows of `window` consecutive steps: DataLoader workers that finish
    together hand over bursts of batches (one step waits, the next ones do not), which a per-step median would
    misread either way; over a window the bursts average out, while a spike of another program's load on a shared
    machine still only moves a few windows. `ips_mean` is the plain mean over every timed step.
    """
    sums = []
    for durations in rounds:
        k = min(window, len(durations))
        sums += [sum(durations[i : i + k]) / k for i in range(len(durations) - k + 1)]
    every = [d for durations in rounds for d in durations]
    median = statistics.median(sums)
    return {
        "steps": len(every),
        "step_ms_median": 1000 * median,
        "ips": batch / median,
        "ips_mean": batch * len(every) / sum(every),
    }


class Stopwatch:
    """`tick()` at every step end, after the device has finished the step's work; `durations(warmup)` after."""

    def __init__(self, device: torch.device):
        self.device, self.ends = device, []

    def tick(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.ends.append(time.perf_counter())

    def durations(self, warmup: int) -> list[float]:
        # ends[0] is the start of step 1, so step i lasted ends[i] - ends[i - 1].
        return [b - a for a, b in zip(self.ends[:-1], self.ends[1:], strict=True)][warmup:]


def _step_timer_callback(watch: Stopwatch):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            watch.tick()

    return StepTimer()


# --------------------------------------------------------------------------- the modes


class PlainStep:
    """The step the Trainer takes, without the Trainer: autocast forward, label-smoothed loss, backward,
    gradient clipping, optimizer step (same optimizer class and arguments as the Trainer's)."""

    def __init__(self, model, training_args: GZ10TrainingArguments, amp_dtype: torch.dtype | None, device):
        from transformers import Trainer

        self.model, self.amp_dtype, self.device = model, amp_dtype, device
        self.label_smoothing = training_args.label_smoothing_factor
        self.max_grad_norm = training_args.max_grad_norm
        optim_cls, optim_kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, model)
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": training_args.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
        self.optimizer = optim_cls(groups, **optim_kwargs)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def __call__(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            logits = self.model(pixel_values=pixel_values).logits
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)


def run_model_only(model, args, training_args, amp_dtype, device) -> Stopwatch:
    step = PlainStep(model, training_args, amp_dtype, device)
    size, batch = args.image_size, args.batch_size
    gen = torch.Generator().manual_seed(args.seed)
    pixels = torch.randn(batch, 3, size, size, generator=gen).to(device)  # (B, 3, H, W) normalised
    if args.channels_last:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), generator=gen).to(device)
    watch = Stopwatch(device)
    watch.tick()
    for _ in range(args.warmup + args.steps):
        step(pixels, labels)  # the same batch every step: no data path at all
        watch.tick()
    return watch


def hfgal_trainer(model, args, training_args, train_ds, mean, std, callbacks=None) -> GZ10Trainer:
    trainer = GZ10Trainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        data_collator=collate_uint8,
        callbacks=callbacks,
        mean=mean,
        std=std,
    )
    # The same memory format in every mode (the Trainer picks channels_last by itself only on CUDA).
    trainer.channels_last = args.channels_last
    trainer.model.to(memory_format=torch.channels_last if args.channels_last else torch.contiguous_format)
    return trainer


def run_hfgal(model, args, training_args, train_ds, mean, std) -> Stopwatch:
    watch = Stopwatch(training_args.device)
    trainer = hfgal_trainer(model, args, training_args, train_ds, mean, std, [_step_timer_callback(watch)])
    watch.ends.append(time.perf_counter())
    trainer.train()
    return watch


def run_hfgal_data(model, args, training_args, train_ds, mean, std) -> Stopwatch:
    """The Trainer's own training dataloader (device placement included) and on-device augmentation, no model."""
    trainer = hfgal_trainer(model, args, training_args, train_ds, mean, std)
    watch = Stopwatch(training_args.device)
    watch.tick()
    loader = _forever(trainer.get_train_dataloader())
    for _, batch in zip(range(_data_warmup(args) + args.steps), loader, strict=False):
        trainer._pixels(batch, train=True)
        watch.tick()
    return watch


def _data_warmup(args) -> int:
    # Without a model the workers' prefetched batches (2 per worker) would be drained at no cost inside the timed
    # window: warm up past them, so the timed steps see the rate at which the data path really produces.
    return args.warmup + 2 * args.workers


def _forever(loader):
    while True:
        yield from loader


def baseline_loader(train_split, args, mean, std, device):
    """The transformers example `run_image_classification.py` data path, written out in its few lines."""
    from torchvision.transforms import Compose, Normalize, RandomHorizontalFlip, RandomResizedCrop, ToTensor

    train_transforms = Compose(
        [RandomResizedCrop(args.image_size), RandomHorizontalFlip(), ToTensor(), Normalize(mean=mean, std=std)]
    )

    def preprocess_train(example_batch):
        example_batch["pixel_values"] = [train_transforms(image.convert("RGB")) for image in example_batch["image"]]
        return example_batch

    def collate_fn(examples):
        pixel_values = torch.stack([example["pixel_values"] for example in examples])
        labels = torch.tensor([example["label"] for example in examples])
        return {"pixel_values": pixel_values, "labels": labels}

    dataset = train_split.with_transform(preprocess_train)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        collate_fn=collate_fn,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(args.seed),
    )


def run_baseline(model, args, training_args, amp_dtype, device, train_split, mean, std, data_only=False) -> Stopwatch:
    step = None if data_only else PlainStep(model, training_args, amp_dtype, device)
    loader = baseline_loader(train_split, args, mean, std, device)
    watch = Stopwatch(device)
    watch.tick()
    warmup = _data_warmup(args) if data_only else args.warmup
    for _, batch in zip(range(warmup + args.steps), _forever(loader), strict=False):
        pixels = batch["pixel_values"].to(device, non_blocking=True)
        if args.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        labels = batch["labels"].to(device, non_blocking=True)
        if step is not None:
            step(pixels, labels)
        watch.tick()
    return watch


# --------------------------------------------------------------------------- main


def prepare_data(args, work: Path):
    """The train split in the recipe's on-disk format, and its size."""
    needed = (_data_warmup(args) + args.steps + 2) * args.batch_size
    if args.dataset == "synthetic" or args.dataset.startswith("synthetic:"):
        n = (
            int(args.dataset.split(":", 1)[1])
            if ":" in args.dataset
            else (args.num_images or math.ceil(needed / 0.78))
        )
        folder = work / f"gz10-synthetic-{n}"
        if not (folder / "dataset_dict.json").is_file():
            start = time.perf_counter()
            save_gz10(load_gz10(f"synthetic:{n}", cache_dir=str(work / "datasets-cache")), folder)
            print(f"wrote {n} synthetic galaxies to {folder} in {time.perf_counter() - start:.1f}s")
        train = load_gz10(folder)["train"]
    else:
        train = load_gz10(args.dataset)["train"]
        if args.num_images and args.num_images < len(train):
            train = train.select(range(args.num_images))
    if len(train) < needed:
        print(
            f"warning: {len(train)} training images < {needed} needed for one epoch of warm-up + timed steps; "
            "the timed window includes an epoch restart (raise --num-images)"
        )
    return train


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    # The recipe trains on a CPU with glibc keeping freed memory; the whole process (every mode) runs alike.
    args.malloc = "keep" if device.type == "cpu" and args.malloc == "keep" and keep_freed_memory() else "default"
    amp_dtype = DTYPES[args.dtype]
    tmp = None
    if args.work_dir:
        work = Path(args.work_dir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="hfgal-throughput-")
        work = Path(tmp.name)
    try:
        return _run(args, device, amp_dtype, work)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _run(args, device, amp_dtype, work: Path) -> int:
    from transformers import set_seed

    load_at_start = os.getloadavg()[0]
    overrides = args.model_config_overrides
    # ---- data
    train = prepare_data(args, work)
    size = (args.image_size, args.image_size)
    cache_seconds = None
    if {"hfgal", "hfgal_data"} & set(args.modes):
        splits, cache_seconds = cached_splits({"train": train}, size, str(work / "uint8-cache"))
        train_ds = splits["train"]
        cache_bytes = os.path.getsize(train_ds.cache_path)

    # ---- model: one random initialisation, restored before every mode
    loaded = load_model(args.model, init="scratch", config_overrides=overrides, image_size=size)
    model = loaded.model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    initial = copy.deepcopy(model.state_dict())
    params = sum(p.numel() for p in model.parameters())
    training_args = GZ10TrainingArguments(
        output_dir=str(work / "run"),
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=args.batch_size,
        dataloader_num_workers=args.workers,
        bf16=args.dtype == "bf16",
        fp16=args.dtype == "fp16",
        use_cpu=args.device == "cpu",
        torch_compile=args.compile,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        report_to="none",
        disable_tqdm=True,
        carbon_tracking=False,
        seed=args.seed,
    )
    compiled = torch.compile(model) if args.compile else model

    durations: dict[str, list[list[float]]] = {m: [] for m in args.modes}
    window = max(4, 2 * args.workers)
    memory: dict[str, dict] = {m: {"rss": 0, "workers": 0, "device": 0} for m in args.modes}
    for round_ in range(args.rounds):
        for mode in args.modes:
            model.load_state_dict(initial)
            model.train()
            set_seed(args.seed + round_)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            with MemoryWatch() as watch_memory:
                if mode == "model_only":
                    watch = run_model_only(compiled, args, training_args, amp_dtype, device)
                elif mode in ("hfgal", "hfgal_data"):
                    run = run_hfgal if mode == "hfgal" else run_hfgal_data
                    watch = run(model, args, training_args, train_ds, loaded.mean, loaded.std)
                else:
                    watch = run_baseline(
                        compiled, args, training_args, amp_dtype, device, train, loaded.mean, loaded.std,
                        data_only=mode == "baseline_data",
                    )  # fmt: skip
            warmup = _data_warmup(args) if mode.endswith("_data") else args.warmup
            durations[mode].append(watch.durations(warmup))
            peak = memory[mode]
            peak["rss"] = max(peak["rss"], watch_memory.peak_rss)
            peak["workers"] = max(peak["workers"], watch_memory.peak_workers)
            if device.type == "cuda":
                peak["device"] = max(peak["device"], torch.cuda.max_memory_allocated(device))
            stats = step_stats([watch.durations(warmup)], args.batch_size, window)
            print(
                f"round {round_ + 1}/{args.rounds} {mode}: {stats['ips']:.1f} images/s (load {os.getloadavg()[0]:.2f})"
            )
    results = {
        mode: {
            **step_stats(durations[mode], args.batch_size, window),
            "peak_rss_mb": memory[mode]["rss"] / 2**20,
            "peak_workers_pss_mb": memory[mode]["workers"] / 2**20,
            "peak_device_mb": memory[mode]["device"] / 2**20 if device.type == "cuda" else None,
        }
        for mode in args.modes
    }

    # ---- report
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    ips = {m: results[m]["ips"] if m in results else None for m in MODES}
    print()
    print(
        f"device {args.device} ({device_name}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}), "
        f"model {args.model} ({params / 1e6:.2f} M params), batch {args.batch_size}, {args.image_size} px, "
        f"{args.dtype}{', channels_last' if args.channels_last else ''}{', compiled' if args.compile else ''}, "
        f"{args.workers} workers, {torch.get_num_threads()} threads, {args.steps} timed steps after {args.warmup}"
        + (f", malloc {args.malloc}" if device.type == "cpu" else "")
    )
    header = f"{'mode':<13} {'img/s':>9} {'img/s mean':>10} {'step ms':>9} {'vs model':>9} {'RSS MB':>8}"
    header += f" {'workers MB':>10}"
    print(header + (f" {'GPU MB':>8}" if device.type == "cuda" else ""))
    for mode in MODES:
        if mode not in results:
            continue
        r = results[mode]
        ratio = f"{r['ips'] / ips['model_only']:.2f}" if ips["model_only"] else "-"
        line = (
            f"{mode:<13} {r['ips']:9.1f} {r['ips_mean']:10.1f} {r['step_ms_median']:9.1f} {ratio:>9} "
            f"{r['peak_rss_mb']:8.0f} {r['peak_workers_pss_mb']:10.0f}"
        )
        print(line + (f" {r['peak_device_mb']:8.0f}" if device.type == "cuda" else ""))
    for mode, r in results.items():
        if mode.endswith("_data"):
            continue
        minutes = 30 * GZ10_TRAIN_IMAGES / r["ips"] / 60
        print(f"30 GZ10 epochs ({GZ10_TRAIN_IMAGES} training images) at {mode} speed: {minutes:.1f} min of steps")
    if cache_seconds is not None:
        built = (
            f"built in {cache_seconds:.1f}s ({len(train) / cache_seconds:.0f} images/s)" if cache_seconds else "reused"
        )
        print(f"uint8 cache: {len(train)} images at {args.image_size} px, {cache_bytes / 2**20:.0f} MB, {built}")

    def ratio(a, b, key="ips"):
        return round(results[a][key] / results[b][key], 3) if a in results and b in results else None

    record = {
        "device": device_name,
        "device_type": args.device,
        "model": args.model,
        "model_config_overrides": overrides,
        "params": params,
        "batch": args.batch_size,
        "image_size": args.image_size,
        "dtype": args.dtype,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
        "malloc": args.malloc,
        "steps": args.steps,
        "warmup": args.warmup,
        "train_images": len(train),
        "model_only_ips": _round(ips["model_only"]),
        "hfgal_ips": _round(ips["hfgal"]),
        "baseline_ips": _round(ips["baseline"]),
        "hfgal_over_model_only": ratio("hfgal", "model_only"),
        "hfgal_over_baseline": ratio("hfgal", "baseline"),
        # The data paths alone: how many images/s each could feed a model that took no time.
        "hfgal_data_ips": _round(ips["hfgal_data"]),
        "baseline_data_ips": _round(ips["baseline_data"]),
        "rounds": args.rounds,
        # The same from the mean step (every stall counted; on a shared machine, others' load too).
        "ips_mean": {m: _round(r["ips_mean"]) for m, r in results.items()},
        "hfgal_over_model_only_mean": ratio("hfgal", "model_only", "ips_mean"),
        "hfgal_over_baseline_mean": ratio("hfgal", "baseline", "ips_mean"),
        "step_ms_median": {m: _round(r["step_ms_median"]) for m, r in results.items()},
        "window_steps": window,
        "peak_host_rss_mb": _round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_host_rss_mb_by_mode": {m: _round(r["peak_rss_mb"]) for m, r in results.items()},
        "peak_workers_pss_mb": {m: _round(r["peak_workers_pss_mb"]) for m, r in results.items()},
        "peak_device_mb": (
            {m: _round(r["peak_device_mb"]) for m, r in results.items()} if device.type == "cuda" else None
        ),
        # Training steps alone (no evaluation) of a 30-epoch fine-tune on the full GZ10 training split.
        "gz10_30_epochs_minutes": {
            m: _round(30 * GZ10_TRAIN_IMAGES / r["ips"] / 60) for m, r in results.items() if not m.endswith("_data")
        },
        "cache_build_seconds": _round(cache_seconds),
        "cache_mb": _round(cache_bytes / 2**20) if cache_seconds is not None else None,
        "cpu_count": os.cpu_count(),
        # Other work on the machine: the 1-minute load average when the run started and when it ended.
        "load_average_1min": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
        "torch": torch.__version__,
    }
    print(json.dumps(record))
    return 0


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _cpu_name() -> str:
    from hfgal.train.hardware import hardware_info

    return hardware_info().cpu


if __name__ == "__main__":
    run_cli(main, prog="throughput.py")
