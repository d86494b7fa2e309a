"""The recipe trains on the machine it is given: torch threads = available cores / local processes whatever
launcher started it, unless the user asked for a count (--cpu_threads, HFGAL_NUM_THREADS, a chosen OMP_NUM_THREADS)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fixtures.finetune import FINETUNE, finetune_args, subprocess_env
from hfgal.errors import HfgalError
from hfgal.train.hardware import available_cores, choose_threads

# What `accelerate launch --num_processes 1` (no --cpu) puts in the environment of the process it starts.
ACCELERATE_ONE = {"ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_DYNAMO_BACKEND": "NO", "OMP_NUM_THREADS": "1"}
# What torchrun / `accelerate launch --multi_gpu --num_processes 4` put there.
FOUR_LOCAL = {"LOCAL_WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "none", "OMP_NUM_THREADS": "1"}


def test_launcher_default_of_one_thread_is_not_taken_as_a_choice():
    threads, why = choose_threads(None, on_cpu=True, env=ACCELERATE_ONE, cores=16)
    assert threads == 16
    assert "OMP_NUM_THREADS=1 is not used" in why and "--cpu_threads 1" in why


def test_cores_are_shared_among_local_processes():
    assert choose_threads(None, on_cpu=True, env=FOUR_LOCAL, cores=16)[0] == 4
    assert choose_threads(None, on_cpu=True, env=FOUR_LOCAL, cores=2)[0] == 1  # never below one


def test_an_explicit_count_wins_in_order():
    env = {**ACCELERATE_ONE, "HFGAL_NUM_THREADS": "3"}
    assert choose_threads(5, on_cpu=True, env=env, cores=16) == (5, "--cpu_threads")
    assert choose_threads(None, on_cpu=True, env=env, cores=16) == (3, "HFGAL_NUM_THREADS")
    assert choose_threads(1, on_cpu=True, env=ACCELERATE_ONE, cores=16)[0] == 1  # one thread, asked for


def test_omp_num_threads_is_kept_when_someone_chose_it():
    # Above 1 under a launcher: --num_cpu_threads_per_process, the user's shell, or accelerate's --cpu rule.
    assert choose_threads(None, on_cpu=True, env={**ACCELERATE_ONE, "OMP_NUM_THREADS": "6"}, cores=16)[0] == 6
    # Without a launcher nobody but the user sets it, 1 included.
    assert choose_threads(None, on_cpu=True, env={"OMP_NUM_THREADS": "1"}, cores=16) == (1, "OMP_NUM_THREADS")
    assert choose_threads(None, on_cpu=True, env={}, cores=16)[0] == 16


def test_gpu_run_leaves_a_core_per_dataloader_worker():
    env = {**ACCELERATE_ONE}
    assert choose_threads(None, on_cpu=False, dataloader_workers=8, env=env, cores=16)[0] == 8
    assert choose_threads(None, on_cpu=False, dataloader_workers=8, env=env, cores=4)[0] == 1
    assert choose_threads(None, on_cpu=True, dataloader_workers=8, env=env, cores=16)[0] == 16  # CPU: workers idle


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_thread_counts_are_one_line_errors(value):
    with pytest.raises(HfgalError, match="HFGAL_NUM_THREADS"):
        choose_threads(None, on_cpu=True, env={"HFGAL_NUM_THREADS": value}, cores=2)


def test_bad_cpu_threads_flag_is_refused(tmp_path):
    from hfgal.train.args import parse_args

    with pytest.raises(HfgalError, match="--cpu_threads 0"):
        parse_args(["--output_dir", str(tmp_path), "--use_cpu", "true", "--cpu_threads", "0"])


@pytest.mark.slow
def test_accelerate_launch_trains_on_every_core(tmp_path, sample_dir, image_cache):
    """`accelerate launch --num_processes 1` without --cpu hands the recipe OMP_NUM_THREADS=1; it still trains on
    every available core and records how many."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", str(FINETUNE)]
    cmd += finetune_args(out, sample_dir, "convnextv2", max_steps=2, carbon_tracking="false")
    env = subprocess_env(HFGAL_CACHE=str(image_cache))
    env.pop("OMP_NUM_THREADS", None)
    env.pop("HFGAL_NUM_THREADS", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    cores = available_cores()
    hardware = json.loads((out / "results.json").read_text())["hardware"]
    assert hardware["torch_threads"] == cores
    assert f"hfgal: {cores} torch CPU thread" in proc.stdout
