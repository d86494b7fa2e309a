"""The benchmark study: run the planned fine-tuning runs one process each, resumably, then report them.

`hfgal.study.plan` expands a study YAML into one `PlannedRun` per (model, pretraining, variant, seed), each with
its own run folder and exact command; `run_study` launches them as separate processes so a crash loses one run,
never the study, and a rerun skips the finished ones. Each process runs the installed recipe module
(`python -m hfgal.train ...`, `accelerate launch -m hfgal.train ...`), so a study needs no source checkout.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import HfgalError
from ..io import atomic_write_json, atomic_write_text, output_lock
from ..runs import RESULTS_FILE, has_checkpoint, read_results
from .plan import ERROR_FILE, RUN_LOG, RUN_RECORD, RUNS_DIR, STUDY_FILE, PlannedRun, Study, load_study
from .protocols import protocol_lines

DEFAULT_LAUNCHER = "accelerate launch --num_processes 1"
RECIPE_MODULE = "hfgal.train"  # the fine-tuning recipe, run with `-m` under the launcher


# --------------------------------------------------------------------------- run folders


def _run_spec(run: PlannedRun) -> dict:
    spec = json.loads(json.dumps(dataclasses.asdict(run)))
    if spec.get("shares_training_of") is None:
        spec.pop("shares_training_of", None)  # the spec runs recorded before runs could share their training
    return spec


def run_status(run: PlannedRun, out_dir: str | os.PathLike) -> str:
    """Where a planned run stands in `out_dir`.

    Returns:
        `done` (complete results.json), `stale` (its folder was launched for a different run spec, e.g. after
        the study changed under --force), `failed` (error.txt, no results), `resume` (checkpoints, no results)
        or `new`.
    """
    run_dir = run.run_dir(out_dir)
    try:
        recorded = json.loads((run_dir / RUN_RECORD).read_text()).get("run")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is not None and recorded != _run_spec(run):
        return "stale"
    if read_results(run_dir) is not None:
        return "done"
    if (run_dir / ERROR_FILE).is_file():
        return "failed"
    return "resume" if has_checkpoint(run_dir) else "new"


def recipe_argv(recipe: str | os.PathLike = RECIPE_MODULE) -> list[str]:
    """How a launcher is told to run the recipe: `-m hfgal.train` for a module, the absolute path of a script.

    Both `python` and `accelerate launch` take `-m MODULE` and a script path the same way.
    """
    text = str(recipe)
    if text.endswith(".py") or "/" in text or os.sep in text:
        return [str(Path(recipe).absolute())]
    return ["-m", text]


def check_recipe(recipe: str | os.PathLike = RECIPE_MODULE) -> None:
    """Refuse a recipe that cannot be launched, before any run starts.

    Raises:
        HfgalError: a script that does not exist or a module this Python cannot import.
    """
    argv = recipe_argv(recipe)
    if argv[0] == "-m":
        if importlib.util.find_spec(argv[1]) is None:
            raise HfgalError(f"--recipe {argv[1]}: no such module; leave --recipe out to run {RECIPE_MODULE}")
    elif not Path(argv[0]).is_file():
        raise HfgalError(f"--recipe {argv[0]}: no such file; leave --recipe out to run {RECIPE_MODULE}")


def run_command(
    run: PlannedRun,
    out_dir: str | os.PathLike,
    launcher: str = DEFAULT_LAUNCHER,
    *,
    recipe: str | os.PathLike = RECIPE_MODULE,
    resume: bool = False,
    share: bool = True,
    concurrency: int = 1,
    own_gpus: bool = False,
) -> list[str]:
    """The exact argv that trains `run`: launcher, recipe, flags; `--resume_from_checkpoint true` when resuming.

    Args:
        run: the planned run.
        out_dir: the study folder (the run folder is `out_dir/runs/<slug>`).
        launcher: command prefix, e.g. "accelerate launch --num_processes 1" or "python".
        recipe: the fine-tuning recipe: a module run with `-m` (default `hfgal.train`) or a script's path.
        resume: add `--resume_from_checkpoint true` (the recipe resumes from the latest checkpoint-*).
        share: for a run that shares another's training, add `--trained_run` (that run must be finished first).
        concurrency: runs on this machine at the same time (`--jobs` / `--gpus`): each run then books only its
            share of the machine (`--concurrent_runs`, codecarbon's process-level CPU/RAM tracking).
        own_gpus: every concurrent run has GPUs of its own (`--gpus`); otherwise they share the visible GPUs and
            each books 1/`concurrency` of their energy (`--gpu_share`).

    Returns:
        The argv list.
    """
    runs = Path(out_dir).absolute() / RUNS_DIR
    argv = [*shlex.split(launcher), *recipe_argv(recipe), *run.recipe_args(runs / run.slug)]
    if share and run.shares_training_of:
        argv += ["--trained_run", str(runs / run.shares_training_of)]
    if concurrency > 1:
        argv += ["--concurrent_runs", str(concurrency), "--gpu_share", "1" if own_gpus else f"{1 / concurrency:.6g}"]
    return argv + ["--resume_from_checkpoint", "true"] if resume else argv


def _study_record(study: Study) -> str:
    import yaml

    return yaml.safe_dump(study.config, sort_keys=False, allow_unicode=True)


def prepare_output_dir(study: Study, out_dir: Path, force: bool = False) -> None:
    """Record the study config in `out_dir/study.yaml`, refusing a folder that holds a different study.

    Raises:
        HfgalError: `out_dir` holds another study (or this study with a changed config) and `force` is False.
    """
    import yaml

    record = out_dir / STUDY_FILE
    if record.is_file():
        try:
            old = yaml.safe_load(record.read_text())
        except yaml.YAMLError:
            old = None
        old = old if isinstance(old, dict) else {}
        if old != study.config and not force:
            if old.get("name") != study.name:
                what = f"study {old.get('name')!r}"
            else:
                changed = ", ".join(k for k in study.config if old.get(k) != study.config[k])
                what = f"study {study.name!r} with a different config ({changed})"
            raise HfgalError(
                f"{out_dir} holds results of {what}; choose another --output-dir or pass --force to run "
                f"{study.name!r} there (runs whose settings changed are re-run)"
            )
    elif (out_dir / RUNS_DIR).is_dir() and any((out_dir / RUNS_DIR).iterdir()) and not force:
        raise HfgalError(
            f"{out_dir} holds run folders but no {STUDY_FILE}; choose another --output-dir or pass --force"
        )
    atomic_write_text(record, _study_record(study))


def _record_run(run: PlannedRun, run_dir: Path, argv: list[str]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"slug": run.slug, "run": _run_spec(run), "command": shlex.join(argv)}
    atomic_write_json(run_dir / RUN_RECORD, record)


def _launch(
    run: PlannedRun,
    out_dir: Path,
    launcher: str,
    recipe: str | os.PathLike,
    gpu: str | None = None,
    concurrency: int = 1,
    log_tail: int = 40,
) -> dict:
    """Run one fine-tune as its own process (on `gpu` alone when given); record its spec, log and error.txt."""
    import time

    run_dir = run.run_dir(out_dir)
    status = run_status(run, out_dir)
    if status == "stale" or (run_dir.exists() and not has_checkpoint(run_dir)):
        # Nothing of a stale run, or of a killed or failed attempt without checkpoint, is worth keeping.
        shutil.rmtree(run_dir, ignore_errors=True)
    resume = has_checkpoint(run_dir)
    # A run sharing another's training evaluates that run's model once it is finished; otherwise it trains.
    base = run.shares_training_of
    share = base is not None and read_results(out_dir / RUNS_DIR / base) is not None
    argv = run_command(
        run, out_dir, launcher, recipe=recipe, resume=resume, share=share, concurrency=concurrency,
        own_gpus=gpu is not None,
    )  # fmt: skip
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    (run_dir / RESULTS_FILE).unlink(missing_ok=True)  # a non-complete one from a killed attempt
    _record_run(run, run_dir, argv)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    start = time.monotonic()
    with open(run_dir / RUN_LOG, "ab") as log:
        device = f"CUDA_VISIBLE_DEVICES={gpu} " if gpu is not None else ""
        log.write(f"$ {device}{shlex.join(argv)}\n".encode())
        log.flush()
        try:
            code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
        except OSError as err:  # the launcher itself is missing
            log.write(f"{err}\n".encode())
            code = 127
    seconds = time.monotonic() - start
    if code == 0 and read_results(run_dir) is not None:
        return {"slug": run.slug, "status": "done", "seconds": seconds, "resumed": resume}
    tail = (run_dir / RUN_LOG).read_text(errors="replace").splitlines()[-log_tail:]
    reason = f"exit code {code}" if code else "exit code 0 but no complete results.json"
    text = f"{reason}\ncommand: {shlex.join(argv)}\n--- last {len(tail)} log lines ---\n" + "\n".join(tail) + "\n"
    atomic_write_text(run_dir / ERROR_FILE, text)
    return {"slug": run.slug, "status": "failed", "seconds": seconds, "resumed": resume, "reason": reason}


def run_study(
    config: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    launcher: str = DEFAULT_LAUNCHER,
    recipe: str | os.PathLike = RECIPE_MODULE,
    jobs: int = 1,
    dry_run: bool = False,
    emit_commands: str | os.PathLike | None = None,
    force: bool = False,
    report: bool = True,
    gpus: Sequence[str] | None = None,
) -> int:
    """Run every unfinished run of a study, one process each, then write the report.

    Finished runs (complete results.json for the same run spec) are skipped; a run folder with checkpoints is
    resumed with `--resume_from_checkpoint true`; a failing run gets `error.txt` and the study goes on.

    Args:
        config: the study YAML, or the name of a study shipped with hfgal (`full`, `smoke`, ...).
        output_dir: the study folder (default `studies/<name>`).
        launcher: command prefix of every run, e.g. "accelerate launch --num_processes 1" or "python".
        recipe: the fine-tuning recipe: a module run with `-m` (default `hfgal.train`) or a script's path.
        jobs: runs at a time (each its own process).
        dry_run: print the plan and the exact commands; launch and write nothing.
        emit_commands: write the commands of the unfinished runs to this file, one per line, and stop
            (for a SLURM job array); `study.yaml` is recorded so `hfgal study report` works afterwards.
        force: reuse an output folder that holds a different study (or this study with changed settings).
        report: write the report at the end.
        gpus: device ids; runs go one per GPU (as many at a time as GPUs, `CUDA_VISIBLE_DEVICES` set per run)
            instead of `jobs` runs sharing every visible device.

    Returns:
        0 when every run finished, 1 when some failed.
    """
    study = load_study(config)
    out_dir = Path(output_dir or Path("studies") / study.name).absolute()
    if jobs < 1:
        raise HfgalError(f"--jobs {jobs} must be at least 1")
    gpus = [str(g).strip() for g in gpus or [] if str(g).strip()]
    if dry_run:
        print_plan(study, out_dir, launcher, recipe)
        return 0
    check_recipe(recipe)
    out_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(out_dir, "study runner"):
        prepare_output_dir(study, out_dir, force=force)
        todo = [run for run in study.runs if run_status(run, out_dir) != "done"]
        if emit_commands is not None:
            write_commands(todo, out_dir, launcher, recipe, Path(emit_commands))
            return 0
        done = len(study.runs) - len(todo)
        print(f"study {study.name!r}: {done}/{len(study.runs)} runs finished, running {len(todo)} in {out_dir}")
        outcomes = _run_all(todo, out_dir, launcher, recipe, len(gpus) or jobs, gpus)
        if report:
            from .report import write_report

            print(f"report: {write_report(out_dir)}", flush=True)
    failed = [o["slug"] for o in outcomes if o["status"] != "done"]
    if failed:
        print(f"{len(failed)} of {len(study.runs)} runs failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def write_commands(
    todo: Sequence[PlannedRun], out_dir: Path, launcher: str, recipe: str | os.PathLike, path: Path
) -> None:
    """Write one command per unfinished run to `path` (a SLURM job array's lines; `recipes/slurm_study.sh`)."""
    lines = []
    for run in todo:
        # Array tasks may be pre-empted and requeued, so every line resumes (the recipe starts fresh when the
        # folder has no checkpoint); they run in parallel, so none waits to share a training.
        argv = run_command(run, out_dir, launcher, recipe=recipe, resume=True, share=False)
        run_dir = run.run_dir(out_dir)
        if run_status(run, out_dir) == "stale":
            shutil.rmtree(run_dir)
        _record_run(run, run_dir, argv)
        lines.append(shlex.join(argv))
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))
    print(f"wrote {len(lines)} commands to {path}; when they are done: hfgal study report {out_dir}")


def print_plan(
    study: Study, out_dir: Path, launcher: str = DEFAULT_LAUNCHER, recipe: str | os.PathLike = RECIPE_MODULE
) -> None:
    """Print every run of the study with its status and exact command (what --dry-run shows)."""
    statuses = {run.slug: run_status(run, out_dir) for run in study.runs}
    todo = sum(status != "done" for status in statuses.values())
    print(f"study {study.name!r}: {len(study.runs)} runs ({todo} to run) in {out_dir}")
    if study.protocol is not None:
        for line in protocol_lines(study.protocol, study.dataset):
            print(f"  {line}")
    for entry in study.entries:
        for column in entry.columns:
            if column.model is None:
                print(f"  [n/a]    {entry.name} / {column.name}: {column.note}")
    for run in study.runs:
        argv = run_command(run, out_dir, launcher, recipe=recipe, resume=statuses[run.slug] == "resume")
        print(f"  [{statuses[run.slug]}] {run.slug}\n    {shlex.join(argv)}")


def _run_all(
    todo: Sequence[PlannedRun],
    out_dir: Path,
    launcher: str,
    recipe: str | os.PathLike,
    jobs: int,
    gpus: Sequence[str] = (),
) -> list[dict]:
    import queue

    free_gpus: queue.Queue = queue.Queue()
    for gpu in gpus:
        free_gpus.put(gpu)

    futures: dict = {}

    def one(run: PlannedRun) -> dict:
        if run.shares_training_of in futures:  # submitted earlier, so already running or done: no deadlock
            futures[run.shares_training_of].result()
        gpu = free_gpus.get() if gpus else None
        try:
            print(f"[start] {run.slug}" + (f" on GPU {gpu}" if gpu is not None else ""), flush=True)
            outcome = _launch(run, out_dir, launcher, recipe, gpu=gpu, concurrency=min(jobs, len(todo)))
        finally:
            if gpu is not None:
                free_gpus.put(gpu)
        where = run.run_dir(out_dir) / ERROR_FILE
        why = f" ({outcome['reason']}; see {where})" if "reason" in outcome else ""
        print(f"[{outcome['status']}] {run.slug} in {outcome['seconds']:.0f}s{why}", flush=True)
        return outcome

    if jobs == 1:
        return [one(run) for run in todo]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for run in todo:  # in plan order: a base run is submitted before the runs sharing its training
            futures[run.slug] = pool.submit(one, run)
        return [futures[run.slug].result() for run in todo]
