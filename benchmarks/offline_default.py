#!/usr/bin/env python
"""Time of the README's first command: the offline default, as a fresh machine runs it.

    python benchmarks/offline_default.py                # 2 CPU cores: under 2 minutes

Runs `accelerate launch --num_processes 1 recipes/finetune.py --config recipes/offline.yaml` from the repository
root (the command the README gives after `pip install -e .`), with every cache empty (HF_HOME, HF_DATASETS_CACHE
and HFGAL_CACHE in a fresh temporary folder: the 4,000 synthetic galaxies are generated, their uint8 cache
built) and the run folder redirected there (`--output_dir`, the only flag added). It prints the end-to-end wall
time, what the run recorded (training time, images/s, threads, cache build, test accuracy with its interval) and
the Trainer's own train_runtime, then one JSON line. `--keep DIR` keeps the temporary folder's content in DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMAND = ["accelerate", "launch", "--num_processes", "1", "recipes/finetune.py", "--config", "recipes/offline.yaml"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", default=None, help="copy the run folder and its log here afterwards")
    args = parser.parse_args(argv)

    from hfgal.io import atomic_write_text
    from hfgal.train.hardware import available_cores, hardware_info

    with tempfile.TemporaryDirectory(prefix="hfgal-offline-") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "HFGAL_NUM_THREADS")}
        env.update(HF_HOME=str(home / "hf"), HF_DATASETS_CACHE=str(home / "hf" / "datasets"))
        env.update(HFGAL_CACHE=str(home / "hf" / "hfgal"), HF_HUB_OFFLINE="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        out = home / "offline-default"
        launcher = [sys.executable, "-m", "accelerate.commands.launch"]  # `accelerate` of this interpreter
        cmd = launcher + COMMAND[2:] + ["--output_dir", str(out)]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        log = proc.stdout + "\n--- stderr\n" + proc.stderr
        if args.keep:
            keep = Path(args.keep)
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(out if out.is_dir() else home, keep)
            atomic_write_text(keep / "offline_default.log", log)
        if proc.returncode != 0:
            print(log[-4000:], file=sys.stderr)
            raise SystemExit(f"offline_default.py: error: the command failed (exit {proc.returncode})")
        results = json.loads((out / "results.json").read_text())

    runtime = re.findall(r"'train_runtime': '?([0-9.]+)", log)
    test = results["test"]
    record = {
        "benchmark": "offline_default",
        "command": " ".join(COMMAND),
        "cpu": hardware_info().cpu,
        "cores": available_cores(),
        "load_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
        "wall_seconds": round(wall, 1),
        "train_seconds": round(results["train_seconds"], 1),
        "trainer_train_runtime": float(runtime[-1]) if runtime else None,
        "train_images_per_second": round(results["train_images_per_second"] or 0, 1),
        "epochs": results["epochs"],
        "torch_threads": results["hardware"].get("torch_threads"),
        "cache_build_seconds": round(results.get("cache_build_seconds") or 0, 1),
        "test_accuracy": round(test["accuracy"], 4),
        "test_accuracy_ci95": [round(x, 4) for x in test["accuracy_ci95"]],
        "test_macro_f1": round(test["macro_f1"], 4),
        "test_images": test["num_examples"],
    }
    print(
        f"`{record['command']}` on {record['cpu']} ({record['cores']} cores, load {record['load_1min']}), fresh "
        f"caches: {wall:.0f}s end to end; {record['epochs']:.0f} epochs of training in {record['train_seconds']}s "
        f"({record['train_images_per_second']} images/s, {record['torch_threads']} threads; Trainer train_runtime "
        f"{record['trainer_train_runtime']}s), uint8 cache built in {record['cache_build_seconds']}s; test accuracy "
        f"{test['accuracy']:.4f} (95% CI {test['accuracy_ci95'][0]:.4f}-{test['accuracy_ci95'][1]:.4f}), "
        f"macro-F1 {test['macro_f1']:.4f} on the {test['num_examples']} test galaxies of the synthetic split"
    )
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
