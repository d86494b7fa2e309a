#!/usr/bin/env python
"""Training images/s of the commands users run, each through `accelerate launch` as the README documents it.

    python benchmarks/end_to_end.py --rounds 2          # 2 CPU cores: about 15 minutes

Every round launches, one after the other and in a rotating order, as separate processes:
  hfgal         `accelerate launch --num_processes 1 recipes/finetune.py ...` (the README's fine-tune command:
                uint8 cache, on-device augmentation, `GZ10Trainer`; threads and allocator set by the recipe itself);
  hfgal_python  the same recipe command under plain `python` (the launcher must not cost speed);
  example       `accelerate launch --num_processes 1 --num_cpu_threads_per_process T benchmarks/example_pipeline.py`:
                the transformers image-classification example's pipeline (PIL decode + RandomResizedCrop /
                flip / ToTensor / Normalize via `set_transform`, a plain Trainer) as it runs, with T threads;
  example_keep  the same with glibc keeping freed memory as the recipe has it on a CPU: only the data paths differ;
  model_only    the same launcher and Trainer over one normalised batch (recipe's threads and allocator): the ceiling.
With `--example-as-launched` the example also runs as a plain `accelerate launch` starts it (one thread per process
on a machine without GPU, glibc's allocator): what a user of the example gets without tuning.
All train the same model on the same data folder (synthetic GZ10 galaxies, `save_gz10` format) with the same batch,
steps, resolution and dtype, no evaluation and no checkpoints during training. Images/s is each run's own training
throughput: the Trainer's `train_samples_per_second` (training steps over `train()`'s wall time) for the example
pipelines, and hfgal's `results.json` `train_images_per_second` for the recipe (the same, minus the ~2 s in which
codecarbon probes the hardware as its tracker starts; the Trainer's own figure is recorded too). Start-up before
training (imports, model, uint8 cache) is excluded; a run of `--steps` steps amortises the first steps' warm-up; per
pipeline the median over rounds is reported. Then `benchmarks/throughput.py` runs its in-process modes
(model_only / hfgal / baseline, per-step medians) on the same data, so both views print in one run. The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hfgal.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
SMALL_CONVNEXTV2 = '{"depths": [1, 1, 2, 1], "hidden_sizes": [16, 32, 64, 128]}'
PIPELINES = ("hfgal", "hfgal_python", "example", "example_keep", "model_only")
TRAINER_IPS = re.compile(r"'train_samples_per_second': '?([0-9.]+)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="convnextv2-tiny")
    parser.add_argument("--model-config-overrides", default=SMALL_CONVNEXTV2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=150, help="training steps of every launched run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=2000, help="synthetic galaxies in the data folder")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of every pipeline")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help="comma-separated subset of the above")
    parser.add_argument(
        "--example-as-launched",
        action="store_true",
        help="also the example as a plain launch starts it (launcher's threads, glibc's default allocator)",
    )
    parser.add_argument("--threads", type=int, default=None, help="threads of every pipeline (default: all cores)")
    parser.add_argument("--in-process-rounds", type=int, default=3, help="throughput.py rounds (0: skip it)")
    parser.add_argument("--work-dir", default=None, help="keep data, caches and runs here (default: a temp folder)")
    args = parser.parse_args(argv)
    args.pipelines = [p for p in args.pipelines.split(",") if p]
    if set(args.pipelines) - set(PIPELINES):
        parser.error(f"--pipelines: choose from {','.join(PIPELINES)}")
    if args.example_as_launched:
        args.pipelines.append("example_as_launched")
    return args


def prepare_data(work: Path, n: int) -> Path:
    """The synthetic GZ10 folder every pipeline reads (written once, reused by later runs in `work`)."""
    folder = work / f"gz10-synthetic-{n}"
    if not (folder / "dataset_dict.json").is_file():
        cmd = [sys.executable, "-m", "hfgal.cli", "data", "synthetic", "--n", str(n), "--out", str(folder)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(work))
    return folder


def _env(work: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "HFGAL_CACHE": str(work / "uint8-cache"), "HF_DATASETS_CACHE": str(work / "datasets")}
    env.update(PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    # The launchers decide the threads of the processes they start, as they would for a user.
    for name in ("OMP_NUM_THREADS", "HFGAL_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
    return {**env, **extra}


def launch(threads: int | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1"]
    return cmd + (["--num_cpu_threads_per_process", str(threads)] if threads else [])


def recipe_args(args, data: Path, out: Path) -> list[str]:
    flags = {
        "model": args.model,
        "init": "scratch",
        "model_config_overrides": args.model_config_overrides,
        "image_size": str(args.image_size),
        "dataset": str(data),
        "output_dir": str(out),
        "overwrite_output_dir": "true",
        "max_steps": str(args.steps),
        "per_device_train_batch_size": str(args.batch_size),
        "dataloader_num_workers": str(args.workers),
        "eval_strategy": "no",
        "save_strategy": "no",
        "load_best_model_at_end": "false",
        "logging_steps": "50",
        "report_to": "none",
        "disable_tqdm": "true",
    }
    if args.device == "cpu":
        flags["use_cpu"] = "true"
    if args.bf16:
        flags["bf16"] = "true"
    if args.threads:
        flags["cpu_threads"] = str(args.threads)
    return [str(REPO / "recipes" / "finetune.py")] + [x for k, v in flags.items() for x in (f"--{k}", v)]


def example_args(args, data: Path, pipeline: str, result: Path, malloc: str = "keep") -> list[str]:
    cmd = [str(REPO / "benchmarks" / "example_pipeline.py"), "--dataset", str(data), "--pipeline", pipeline]
    cmd += ["--malloc", malloc]
    cmd += ["--model", args.model, "--model-config-overrides", args.model_config_overrides]
    cmd += ["--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
    cmd += ["--max-steps", str(args.steps), "--workers", str(args.workers), "--device", args.device]
    cmd += ["--result", str(result)] + (["--bf16"] if args.bf16 else [])
    return cmd


def run_pipeline(pipeline: str, args, data: Path, work: Path, threads: int | None, tag: str) -> dict:
    """Launch one pipeline; its images/s, threads, wall time and the machine's load around it."""
    out = work / "runs" / f"{pipeline}-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    result = out / "result.json"
    if pipeline in ("hfgal", "hfgal_python"):
        cmd = (launch() if pipeline == "hfgal" else [sys.executable]) + recipe_args(args, data, out)
    elif pipeline == "example_as_launched":  # the launcher's threads and glibc's allocator, as a user gets them
        cmd = launch() + example_args(args, data, "example", result, malloc="default")
    elif pipeline == "example":
        cmd = launch(threads) + example_args(args, data, "example", result, malloc="default")
    elif pipeline == "example_keep":
        cmd = launch(threads) + example_args(args, data, "example", result, malloc="keep")
    else:
        cmd = launch(threads) + example_args(args, data, "model_only", result, malloc="keep")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(work))
    wall = time.perf_counter() - start
    atomic_write_text(out / "stdout.txt", proc.stdout + "\n--- stderr\n" + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"end_to_end.py: error: {pipeline} failed (exit {proc.returncode}); see {out}/stdout.txt")
    if pipeline.startswith("hfgal"):
        found = TRAINER_IPS.findall(proc.stdout + proc.stderr)
        results = json.loads((out / "results.json").read_text())
        record = {"ips": results["train_images_per_second"], "threads": results["hardware"].get("torch_threads")}
        record["trainer_ips"] = float(found[-1]) if found else None
    else:
        measured = json.loads(result.read_text())
        record = {"ips": measured["train_samples_per_second"], "threads": measured["torch_threads"]}
        record.update(trainer_ips=record["ips"], median_step_ips=measured["median_step_ips"])
    record.update(wall_s=round(wall, 1), load_1min=[round(load, 2), round(os.getloadavg()[0], 2)])
    return record


def in_process(args, data: Path, work: Path) -> dict | None:
    """benchmarks/throughput.py's in-process modes on the same data (its table is printed as it runs)."""
    if not args.in_process_rounds:
        return None
    cmd = [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--model", args.model]
    cmd += ["--model-config-overrides", args.model_config_overrides, "--device", args.device]
    cmd += ["--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
    cmd += ["--rounds", str(args.in_process_rounds), "--workers", str(args.workers), "--dataset", str(data)]
    cmd += ["--modes", "model_only,hfgal,baseline", "--work-dir", str(work / "throughput")]
    cmd += ["--dtype", "bf16"] if args.bf16 else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(work))
    if proc.returncode != 0:
        raise SystemExit(f"end_to_end.py: error: throughput.py failed: {proc.stderr.strip().splitlines()[-1:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith("device ")), 0)  # its table, not its logs
    print("\n".join(lines[start:-1]))
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    from hfgal.train.hardware import available_cores, hardware_info

    args = parse_args(argv)
    tmp = None if args.work_dir else tempfile.TemporaryDirectory(prefix="hfgal-e2e-")
    work = Path(args.work_dir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = prepare_data(work, args.images)
        # The recipe trains on every available core under the launcher; the others get as many through the
        # launcher's own flag (--num_cpu_threads_per_process), as a user who knows would pass it.
        threads = args.threads or (available_cores() if args.device == "cpu" else None)
        runs: dict[str, list[dict]] = {p: [] for p in args.pipelines}
        for round_ in range(args.rounds):
            k = round_ % len(args.pipelines)
            for pipeline in args.pipelines[k:] + args.pipelines[:k]:  # rotate: no pipeline always goes first
                record = run_pipeline(pipeline, args, data, work, threads, f"r{round_}")
                runs[pipeline].append(record)
                print(
                    f"round {round_ + 1}/{args.rounds} {pipeline}: {record['ips']:.1f} images/s, "
                    f"{record['threads']} threads, {record['wall_s']:.0f}s wall (load {record['load_1min']})",
                    flush=True,
                )
        ips = {p: statistics.median(r["ips"] for r in rs) for p, rs in runs.items()}
        in_proc = in_process(args, data, work)
    finally:
        if tmp is not None:
            tmp.cleanup()

    def ratio(a: str, b: str) -> float | None:
        return round(ips[a] / ips[b], 3) if a in ips and b in ips else None

    cpu = hardware_info().cpu
    print(
        f"\nend to end through `accelerate launch --num_processes 1` on {args.device} ({cpu}, {available_cores()} "
        f"cores): model {args.model} {args.model_config_overrides}, random init, {args.image_size} px, batch "
        f"{args.batch_size}, {'bf16' if args.bf16 else 'fp32'}, {args.steps} steps per run, {args.workers} workers, "
        f"synthetic GZ10 ({args.images} galaxies, train split), median of {args.rounds} rounds of "
        "train_samples_per_second"
    )
    for pipeline, value in ips.items():
        vs = f"{value / ips['model_only']:.2f} of model_only" if "model_only" in ips else ""
        print(f"{pipeline:<25} {value:8.1f} images/s  {runs[pipeline][0]['threads']} threads  {vs}")
    record = {
        "benchmark": "end_to_end",
        "launcher": "accelerate launch --num_processes 1",
        "device": args.device,
        "cpu": cpu,
        "cores": available_cores(),
        "model": args.model,
        "model_config_overrides": json.loads(args.model_config_overrides),
        "image_size": args.image_size,
        "batch": args.batch_size,
        "dtype": "bf16" if args.bf16 else "fp32",
        "steps": args.steps,
        "workers": args.workers,
        "rounds": args.rounds,
        "data": f"synthetic:{args.images} (train split)",
        "ips": {p: round(v, 2) for p, v in ips.items()},
        "threads": {p: rs[0]["threads"] for p, rs in runs.items()},
        "hfgal_over_example": ratio("hfgal", "example"),
        "hfgal_over_example_keep": ratio("hfgal", "example_keep"),
        "hfgal_over_example_as_launched": ratio("hfgal", "example_as_launched"),
        "hfgal_over_model_only": ratio("hfgal", "model_only"),
        "hfgal_over_hfgal_python": ratio("hfgal", "hfgal_python"),
        "trainer_ips": {p: round(statistics.median(r["trainer_ips"] for r in rs), 2) for p, rs in runs.items()},
        "runs": runs,
        "in_process": in_proc,
    }
    print(
        f"hfgal / example {record['hfgal_over_example']} (same allocator: {record['hfgal_over_example_keep']}; "
        f"as launched: {record['hfgal_over_example_as_launched']}), hfgal / model_only "
        f"{record['hfgal_over_model_only']}, accelerate launch / python {record['hfgal_over_hfgal_python']}"
    )
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
