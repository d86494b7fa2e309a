"""Fault injection with real processes and real SIGKILLs: interrupted runs resume, nothing is left half-written.

Every fine-tuning run here is `recipes/finetune.py` in its own process group, killed with SIGKILL at a chosen
moment (found by polling the run folder), then relaunched with `--resume_from_checkpoint true`.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fixtures.finetune import FINETUNE, REPO_ROOT, finetune_args
from hfgal import GZ10_CLASSES
from hfgal.train.resume import is_complete_checkpoint  # what resuming calls a complete save

MAX_STEPS = 6  # checkpoints at steps 2, 4 and 6


def _env(image_cache: Path, **extra: str) -> dict[str, str]:
    # PYTHONPATH: the subprocess must import this checkout, whatever `pip install -e` points at.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HFGAL_CACHE": str(image_cache), "OMP_NUM_THREADS": "1"}
    env.pop("HFGAL_DEBUG", None)
    return {**env, **extra}


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        # Its own session: the SIGKILL goes to the whole group, as a scheduler's kill or an OOM kill of a job would.
        return subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_when(
    proc: subprocess.Popen, ready: Callable[[], bool], log: Path, timeout: float = 300, every: float = 0.0002
) -> None:
    """SIGKILL `proc`'s process group as soon as `ready()` holds (polled `every` seconds: a 0.2 ms poll keeps
    most of a core busy, so a test that times the run it kills polls less often)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return
            if proc.poll() is not None:
                break
            time.sleep(every)
        pytest.fail(f"the moment to kill never came (exit {proc.poll()}):\n{log.read_text(errors='replace')[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _resume(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(FINETUNE), *args, "--resume_from_checkpoint", "true"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _assert_complete(out: Path, n_test: int = 3) -> dict:
    """A finished run folder: configured steps, complete results, the selected checkpoint's weights saved."""
    import torch
    from safetensors.torch import load_file

    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True and results["global_step"] == MAX_STEPS
    assert results["training"]["max_steps"] == MAX_STEPS
    for split in ("validation", "test"):
        assert set(results[split]["per_class"]) == set(GZ10_CLASSES)
    assert np.asarray(results["test"]["confusion_matrix"]).sum() == n_test
    assert (out / "confusion_matrix.png").stat().st_size > 1000 and (out / "README.md").is_file()
    best = out / results["best_checkpoint"]
    saved, selected = load_file(out / "model.safetensors"), load_file(best / "model.safetensors")
    assert saved.keys() == selected.keys() and all(torch.equal(saved[k], selected[k]) for k in saved)
    return results


@pytest.fixture()
def run_args(tmp_path, sample_dir) -> tuple[Path, list[str]]:
    out = tmp_path / "run"
    return out, finetune_args(out, sample_dir, "convnextv2", max_steps=MAX_STEPS, save_steps=2, eval_steps=2)


# --------------------------------------------------------------------------- fine-tuning killed, then resumed


@pytest.mark.slow
def test_kill_before_first_checkpoint_then_resume(run_args, tmp_path, image_cache):
    out, args = run_args
    env, log = _env(image_cache), tmp_path / "killed.log"
    # config.yaml is written just before trainer.train(): the model and data are ready, no step saved yet.
    _kill_when(_start([sys.executable, str(FINETUNE), *args], env, log), (out / "config.yaml").exists, log)
    assert not list(out.glob("checkpoint-*")) and not (out / "results.json").exists()

    done = _resume(args, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" not in done.stderr  # nothing to resume: a fresh start
    _assert_complete(out)


@pytest.mark.slow
def test_kill_during_checkpoint_save_then_resume(run_args, tmp_path, image_cache):
    """Killed while checkpoint-4 is being written (its weights exist, trainer_state.json, written last, does not).

    The save of a tiny model takes ~10-20 ms and the folder is polled every ~0.2 ms, so the kill almost always
    lands inside it. When it does not (a loaded machine), the state such a kill leaves is made by hand: no
    trainer_state.json and a cut optimizer.pt. The test prints which of the two it checked.
    """
    out, args = run_args
    env, log = _env(image_cache), tmp_path / "killed.log"
    saving = out / "checkpoint-4"
    _kill_when(
        _start([sys.executable, str(FINETUNE), *args], env, log),
        lambda: (saving / "model.safetensors").exists() and not (saving / "trainer_state.json").exists(),
        log,
    )
    if is_complete_checkpoint(saving):
        print("kill landed after the save: simulating the state a kill during the save leaves")
        (saving / "trainer_state.json").unlink()
        optimizer = saving / "optimizer.pt"
        if optimizer.exists():
            optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    else:
        print(f"kill landed during the save of {saving.name}: {sorted(p.name for p in saving.iterdir())}")
    assert is_complete_checkpoint(out / "checkpoint-2") and not (out / "results.json").exists()

    done = _resume(args, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipping {saving}" in done.stderr and f"resuming from {out / 'checkpoint-2'}" in done.stderr
    _assert_complete(out)
    assert all(is_complete_checkpoint(c) for c in out.glob("checkpoint-*"))  # the resumed run's saves are whole


@pytest.mark.slow
def test_kill_during_final_evaluation_then_resume(run_args, tmp_path, image_cache):
    """Killed after the last checkpoint, while the best model is evaluated and saved (before results.json)."""
    out, args = run_args
    env, log = _env(image_cache), tmp_path / "killed.log"
    last = out / f"checkpoint-{MAX_STEPS}"
    _kill_when(_start([sys.executable, str(FINETUNE), *args], env, log), lambda: is_complete_checkpoint(last), log)
    assert not (out / "results.json").exists(), "the run finished before it could be killed"

    done = _resume(args, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from {last}" in done.stderr
    # transformers alone would train one step past max_steps here (it steps before checking the limit).
    _assert_complete(out)


# --------------------------------------------------------------------------- broken checkpoints at resume time


def _interrupted_copy(trained_run: Path, dest: Path) -> Path:
    """A copy of a finished run folder as a kill during final evaluation leaves it (no results.json)."""
    out = Path(shutil.copytree(trained_run, dest))
    (out / "results.json").unlink()
    return out


def _trained_args(out: Path, sample_dir: Path) -> list[str]:
    return finetune_args(out, sample_dir, "convnextv2", max_steps=4)  # the trained_run fixture's command


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("finetune.py: error: "), proc.stderr[-3000:]
    return errors[0]


@pytest.mark.slow
def test_corrupted_checkpoint_names_it_and_the_flag_that_starts_over(trained_run, tmp_path, sample_dir, image_cache):
    out = _interrupted_copy(trained_run, tmp_path / "run")
    weights = out / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # cut, trainer_state.json intact
    args = _trained_args(out, sample_dir)
    env = _env(image_cache)

    line = _one_error_line(_resume(args, env))
    assert str(out / "checkpoint-4") in line and "--overwrite_output_dir true" in line
    assert not (out / "results.json").exists()

    # The flag the message names does start over.
    again = subprocess.run(
        [sys.executable, str(FINETUNE), *args, "--overwrite_output_dir", "true"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["global_step"] == 4


class _Payload:
    """Unpickling this would run a shell command: the trap a malicious checkpoint sets."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_malicious_pickle_in_a_resume_checkpoint_is_refused(trained_run, tmp_path, sample_dir, image_cache):
    """The Trainer reads optimizer.pt with torch.load(weights_only=True): a code-running pickle never runs."""
    import torch

    out = _interrupted_copy(trained_run, tmp_path / "run")
    marker = tmp_path / "pwned"
    torch.save({"state": _Payload(marker), "param_groups": []}, out / "checkpoint-4" / "optimizer.pt")

    line = _one_error_line(_resume(_trained_args(out, sample_dir), _env(image_cache)))
    assert "checkpoint-4" in line and "weights_only=True" in line and "--overwrite_output_dir true" in line
    assert not marker.exists()
    assert not (out / "results.json").exists()


# --------------------------------------------------------------------------- hfgal data build killed


@pytest.mark.slow
def test_data_build_killed_leaves_no_output_and_rerun_succeeds(tmp_path, sample_dir):
    out = tmp_path / "gz10"
    argv = [sys.executable, "-m", "hfgal.cli", "data", "build", "--source", str(sample_dir), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    log = tmp_path / "killed.log"

    def writing() -> bool:
        # The staging folder (not its datasets cache) holds a split being written: the save is under way.
        return any(p.is_dir() and "-cache-" not in p.name and any(p.iterdir()) for p in tmp_path.glob(".gz10.tmp-*"))

    _kill_when(_start(argv, env, log), writing, log)
    assert not out.exists()
    leftovers = {p.name for p in tmp_path.iterdir()} - {"killed.log"}
    assert leftovers and all(n.startswith(".gz10.tmp-") or n == ".gz10.lock" for n in leftovers), leftovers

    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    from datasets import load_from_disk

    dsd = load_from_disk(str(out))
    assert {s: len(dsd[s]) for s in dsd} == {"train": 24, "validation": 3, "test": 3}
    assert json.loads((out / "split_info.json").read_text()) and (out / "README.md").is_file()
    # The killed build's staging folders are gone; nothing but the output and its (free) lock file remains.
    assert {p.name for p in tmp_path.iterdir()} == {"killed.log", "gz10", ".gz10.lock"}
    assert _lock_is_free(tmp_path / ".gz10.lock")


# --------------------------------------------------------------------------- every result file written atomically

# Writes that do not go through hfgal.io's atomic helpers, each with the reason it is safe.
PLAIN_WRITES_ALLOWED = {
    ("hfgal/data/cache.py", "uint8_cache"): "a memmap filled in a temporary file, renamed when complete",
    ("hfgal/data/save.py", "save_gz10"): "inside atomic_output_dir's staging folder, renamed whole",
    ("hfgal/data/build.py", "encode_png"): "PNG bytes into an in-memory buffer, no file",
    ("hfgal/study/report.py", "write_report_files"): "inside atomic_output_dir's staging folder, renamed whole",
    ("hfgal/study/report.py", "plot_accuracy_vs"): "called with paths in the report's staging folder",
    ("hfgal/study/publish.py", "stage_study"): "a temporary push staging folder, deleted after the upload",
    ("hfgal/demo/space.py", "_examples_from_dataset"): "inside build_space's staging folder, renamed whole",
    ("hfgal/study/runner.py", "_launch"): "the run's append-only log, not a result",
    ("hfgal/runs/confusion.py", "plot_confusion_matrix"): "savefig into io.atomic_file",
    ("benchmarks/montage.py", "main"): "savefig into a temporary file renamed at the end",
    ("benchmarks/resume_cost.py", "killed_after"): "the runs' append-only log in a temporary folder, not a result",
    ("benchmarks/resume_cost.py", "run"): "the runs' append-only log in a temporary folder, not a result",
    ("hfgal/train/outputs.py", "save_run"): "RunRecord.save, which writes results.json through io.atomic_write_json",
    ("hfgal/cli/evaluate.py", "evaluate_command"): "Calibration.save, which writes through io.atomic_write_json",
    ("hfgal/train/evaluate.py", "write_evaluation"): "EvaluationRecord.save, through io.atomic_write_json",
    ("hfgal/train/calibration.py", "plot_reliability_diagram"): "savefig into io.atomic_file",
    ("hfgal/train/curves.py", "plot_learning_curves"): "savefig into io.atomic_file",
    ("hfgal/data/geometry.py", "image_processor"): "a processor config in a temporary folder, read back and deleted",
}
WRITE_METHODS = {"write_text", "write_bytes", "savefig", "save", "to_csv", "tofile"}


def _plain_writes(path: Path) -> list[tuple[str, int, str]]:
    """(enclosing function, line, call) of every call in `path` that writes a file without an atomic helper."""

    def constant(node: ast.AST | None) -> str:
        return str(node.value) if isinstance(node, ast.Constant) else ""

    def writes(call: ast.Call) -> bool:
        f, args = call.func, call.args
        keyword_mode = next((k.value for k in call.keywords if k.arg == "mode"), None)
        if isinstance(f, ast.Name) and f.id == "open" or isinstance(f, ast.Attribute) and f.attr == "fdopen":
            mode = keyword_mode or (args[1] if len(args) > 1 else None)
        elif isinstance(f, ast.Attribute) and f.attr in ("open", "open_memmap") and ast.unparse(f.value) != "os":
            mode = keyword_mode or (args[0] if args and f.attr == "open" else None)  # Path.open(mode)
        elif isinstance(f, ast.Attribute) and f.attr in ("dump", "safe_dump"):
            return len(args) > 1  # json.dump(obj, file); yaml.safe_dump(obj) alone returns a string
        else:
            return isinstance(f, ast.Attribute) and f.attr in WRITE_METHODS
        return any(c in constant(mode) for c in "wax+")

    found = []

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Call) and writes(child):
                found.append((name, child.lineno, ast.unparse(child)[:80]))
            visit(child, name)

    visit(ast.parse(path.read_text()), "<module>")
    return found


def test_result_files_are_written_atomically():
    """No result, card, table or config is written in place: every plain write is in the reviewed list above."""
    probe = REPO_ROOT / "tests" / "test_faults.py"  # the scanner sees this module's own plain writes
    assert {f for f, _, _ in _plain_writes(probe)} >= {"_start", "test_kill_during_checkpoint_save_then_resume"}
    unexpected = []
    scanned = [*(REPO_ROOT / "hfgal").rglob("*.py"), *(REPO_ROOT / "recipes").glob("*.py")]
    for path in sorted([*scanned, *(REPO_ROOT / "benchmarks").glob("*.py")]):
        rel = path.relative_to(REPO_ROOT).as_posix()
        for func, line, call in _plain_writes(path):
            if (rel, func) not in PLAIN_WRITES_ALLOWED:
                unexpected.append(f"{rel}:{line} in {func}: {call}")
    assert not unexpected, "write these through hfgal.io.atomic_*:\n" + "\n".join(unexpected)


# --------------------------------------------------------------------------- two writers, one folder


def _wait_for(ready: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"never ready (exit {proc.poll()}):\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.001)


def _lock_is_free(lock: Path) -> bool:
    """Whether no process holds `lock` (the kernel frees it when its holder exits, even when killed)."""
    from filelock import FileLock, Timeout

    try:
        FileLock(str(lock), timeout=0).acquire().lock.release()
    except Timeout:
        return False
    return True


def _refused_while_paused(first: subprocess.Popen, second: list[str], env: dict, watched: Path) -> str:
    """Pause `first` (holding its lock), run `second` to completion, resume `first`; the second's stderr."""
    os.killpg(first.pid, signal.SIGSTOP)  # deterministic: the first holds the lock for as long as the second runs
    try:
        before = sorted((p.relative_to(watched).as_posix(), p.stat().st_mtime_ns) for p in watched.rglob("*"))
        proc = subprocess.run(second, capture_output=True, text=True, env=env, timeout=300)
        after = sorted((p.relative_to(watched).as_posix(), p.stat().st_mtime_ns) for p in watched.rglob("*"))
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-3000:]
    assert after == before  # the refused one touched nothing
    return proc.stderr.strip()


@pytest.mark.slow
def test_two_data_builds_on_one_folder(tmp_path, sample_dir):
    out = tmp_path / "gz10"
    argv = [sys.executable, "-m", "hfgal.cli", "data", "build", "--source", str(sample_dir), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    log = tmp_path / "first.log"
    first = _start(argv, env, log)
    lock = tmp_path / ".gz10.lock"
    try:
        _wait_for(lock.exists, first, log)
        message = _refused_while_paused(first, argv, env, tmp_path)
        assert message.startswith("hfgal: error: ") and "in use by another hfgal data build" in message
        assert str(lock) in message
        assert first.wait(timeout=300) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    from datasets import load_from_disk

    assert {s: len(d) for s, d in load_from_disk(str(out)).items()} == {"train": 24, "validation": 3, "test": 3}
    assert {p.name for p in tmp_path.iterdir()} == {"first.log", "gz10", ".gz10.lock"}  # staging gone
    assert _lock_is_free(lock)


@pytest.mark.slow
def test_two_study_runners_on_one_folder(tmp_path, sample_dir, image_cache):
    import yaml

    model, overrides, size = "convnextv2-nano", {"depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64]}, "32"
    study = {
        "name": "lock",
        "dataset": str(sample_dir),
        "seeds": [0],
        "defaults": {
            "image_size": size, "max_steps": 2, "per_device_train_batch_size": 16, "eval_strategy": "steps",
            "eval_steps": 2, "save_strategy": "steps", "save_steps": 2, "use_cpu": True, "dataloader_num_workers": 0,
        },
        "runs": [{"name": "convnextv2-nano", "table": 1, "model": model, "init": "scratch",
                  "model_config_overrides": overrides}],
    }  # fmt: skip
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study))
    out = tmp_path / "studies" / "lock"
    argv = [sys.executable, str(REPO_ROOT / "recipes" / "study.py"), "--config", str(config), "--output-dir", str(out)]
    argv += ["--launcher", sys.executable]
    env = _env(image_cache, HF_HUB_OFFLINE="1")
    log = tmp_path / "first.log"
    first = _start(argv, env, log)
    lock = out.with_name(".lock.lock")
    try:
        _wait_for(lambda: lock.exists() and (out / "study.yaml").exists(), first, log)
        message = _refused_while_paused(first, argv, env, out)
        assert message.startswith("study.py: error: ") and "in use by another study runner" in message
        assert str(lock) in message
        assert first.wait(timeout=600) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    results = json.loads((out / "runs" / "convnextv2-nano__seed0" / "results.json").read_text())
    assert results["complete"] and results["global_step"] == 2
    assert (out / "report" / "report.md").is_file() and _lock_is_free(lock)


# --------------------------------------------------------------------------- every cost counted once


@pytest.mark.slow
def test_a_run_killed_twice_reports_the_cost_of_the_whole_training(tmp_path, sample_dir, image_cache):
    """Energy, CO2 and time of a run killed twice and resumed: each segment's share booked once, none of it more than
    the process that trained it lived, and the whole training counted (benchmarks/resume_cost.py compares the total
    with the same run uninterrupted, over repeats: time on a shared machine varies from one process to the next)."""
    from hfgal.train.carbon import read_ledger

    env = _env(image_cache, OMP_NUM_THREADS="2")
    args = finetune_args(
        tmp_path / "killed", sample_dir, "convnextv2", max_steps=90, save_steps=30, eval_steps=30, image_size="64",
        per_device_train_batch_size=24, save_total_limit=3,  # every segment's checkpoint kept to be read
    )  # fmt: skip
    out, log = tmp_path / "killed", tmp_path / "killed.log"
    lifetimes = []  # each segment's process, from its start to its kill or exit, as this test saw it
    for step in (30, 60):  # killed right after each of the first two checkpoints, then resumed
        ledger = out / f"checkpoint-{step}" / "carbon.json"
        started = time.monotonic()
        argv = [sys.executable, str(FINETUNE), *args, "--resume_from_checkpoint", "true"]
        _kill_when(_start(argv, env, log), ledger.exists, log, every=0.01)  # a core left to the run
        lifetimes.append(time.monotonic() - started)
    started = time.monotonic()
    done = _resume(args, env)
    lifetimes.append(time.monotonic() - started)
    assert done.returncode == 0, done.stderr[-3000:]

    resumed = json.loads((out / "results.json").read_text())
    assert resumed["carbon"]["segments"] == 3
    assert resumed["carbon"]["complete"] and resumed["global_step"] == 90
    # The bookkeeping: each segment's ledger is the one it resumed from plus its own training, which is more than
    # nothing and less than the life of the process that did it (a segment that counted an earlier one again would
    # book more time than it had).
    ledgers = [read_ledger(out / f"checkpoint-{step}") for step in (30, 60)]
    assert [segments for _, segments, _ in ledgers] == [1, 2]
    totals = [phase.duration_s for phase, _, _ in ledgers] + [resumed["carbon"]["train"]["duration_s"]]
    energies = [phase.energy_kwh for phase, _, _ in ledgers] + [resumed["carbon"]["train"]["energy_kwh"]]
    emissions = [phase.emissions_kg for phase, _, _ in ledgers] + [resumed["carbon"]["train"]["emissions_kg"]]
    for cumulative in (totals, energies, emissions):
        shares = [b - a for a, b in zip([0.0, *cumulative[:-1]], cumulative, strict=True)]
        assert all(share > 0 for share in shares), (cumulative, lifetimes)
    time_shares = [b - a for a, b in zip([0.0, *totals[:-1]], totals, strict=True)]
    assert all(share < life for share, life in zip(time_shares, lifetimes, strict=True)), (time_shares, lifetimes)
    assert resumed["train_seconds"] == totals[-1]
    # Throughput: the training's images over the training's time, every segment included.
    assert resumed["train_images_per_second"] * resumed["train_seconds"] == pytest.approx(90 * 24)
