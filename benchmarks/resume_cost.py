#!/usr/bin/env python
"""What a run killed twice and resumed reports, against the same run uninterrupted, over repeats.

    python benchmarks/resume_cost.py --rounds 5          # 2 CPU cores: about 5 minutes

Each round runs `python recipes/finetune.py` on the real GZ10 sample that ships in tests/data (a tiny ConvNeXt V2,
64 px, 90 steps, a checkpoint every 30) twice from scratch: once uninterrupted, once SIGKILLed right after its
step-30 and step-60 checkpoints are written and resumed with `--resume_from_checkpoint true` (three segments). It
prints, per round and as mean ± std over rounds, the ratio resumed / uninterrupted of the training time, energy and
CO2 each results.json reports, and the spread of the uninterrupted runs themselves (identical runs on a shared VM
differ between processes), then one JSON line. The cost a killed segment spent after its last checkpoint is lost
work that no record can see; it is not in either number.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "gz10-sample"
ARGS = {
    "model": "convnextv2-tiny",
    "model_config_overrides": '{"depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64]}',
    "image_size": "64",
    "dataset": str(SAMPLE),
    "max_steps": "90",
    "eval_strategy": "steps",
    "save_strategy": "steps",
    "eval_steps": "30",
    "save_steps": "30",
    "save_total_limit": "3",
    "per_device_train_batch_size": "24",
    "learning_rate": "0.003",
    "use_cpu": "true",
    "dataloader_num_workers": "0",
    "disable_tqdm": "true",
    "report_to": "none",
}
FIELDS = {
    "train_seconds": lambda r: r["train_seconds"],
    "energy_kwh": lambda r: r["carbon"]["train"]["energy_kwh"],
    "emissions_kg": lambda r: r["carbon"]["train"]["emissions_kg"],
}


def argv(out: Path, *extra: str) -> list[str]:
    args = [sys.executable, str(REPO / "recipes" / "finetune.py"), "--output_dir", str(out)]
    for key, value in ARGS.items():
        args += [f"--{key}", value]
    return [*args, *extra]


def killed_after(out: Path, step: int, env: dict[str, str], log: Path) -> None:
    """Start (or resume) the run and SIGKILL its process group once checkpoint-`step`'s carbon ledger exists."""
    ledger = out / f"checkpoint-{step}" / "carbon.json"
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            argv(out, "--resume_from_checkpoint", "true"), env=env, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    while not ledger.exists():
        if proc.poll() is not None:
            raise SystemExit(f"resume_cost.py: error: the run ended before checkpoint-{step}; see {log}")
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run(args: list[str], env: dict[str, str], log: Path) -> dict:
    with open(log, "ab") as f:
        subprocess.run(args, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)
    return json.loads((Path(args[args.index("--output_dir") + 1]) / "results.json").read_text())


def main(argv_: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", default="2", help="OMP_NUM_THREADS of every run")
    args = parser.parse_args(argv_)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": args.threads}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))

    rows = []
    with tempfile.TemporaryDirectory(prefix="hfgal-resume-") as tmp:
        env["HFGAL_CACHE"] = str(Path(tmp) / "cache")
        for i in range(args.rounds):
            work, log = Path(tmp) / f"round{i}", Path(tmp) / f"round{i}.log"
            whole = run(argv(work / "whole"), env, log)
            for step in (30, 60):
                killed_after(work / "killed", step, env, log)
            resumed = run(argv(work / "killed", "--resume_from_checkpoint", "true"), env, log)
            if resumed["carbon"]["segments"] != 3 or not resumed["carbon"]["complete"]:
                raise SystemExit(f"resume_cost.py: error: expected 3 complete segments, got {resumed['carbon']}")
            row = {"uninterrupted_train_seconds": round(whole["train_seconds"], 3)}
            row.update({f"{k}_ratio": round(get(resumed) / get(whole), 4) for k, get in FIELDS.items()})
            rows.append(row)
            ratios = " ".join(f"{k} {row[f'{k}_ratio']:.3f}" for k in FIELDS)
            print(f"round {i + 1}/{args.rounds}: uninterrupted {whole['train_seconds']:.2f} s; resumed/uninterrupted "
                  f"{ratios}", flush=True)  # fmt: skip

    def mean_std(key: str) -> tuple[float, float]:
        values = [r[key] for r in rows]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    summary = {f"{k}_ratio": mean_std(f"{k}_ratio") for k in FIELDS}
    summary["uninterrupted_train_seconds"] = mean_std("uninterrupted_train_seconds")
    for key, (mean, std) in summary.items():
        print(f"{key}: {mean:.3f} ± {std:.3f} (mean ± std over {len(rows)} rounds)")
    print(json.dumps({"benchmark": "resume_cost", "threads": args.threads, "rounds": rows, "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
