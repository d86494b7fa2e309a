"""Reusing training: resuming a run from its last complete checkpoint, or sharing a finished run's training.

A run killed at any point resumes from its last complete checkpoint (`--resume_from_checkpoint true`); a save that
was interrupted is recognised and skipped, and a corrupted checkpoint gives one line naming it. A run that differs
from a finished one only in evaluation (`--tta`) evaluates that run's selected model (`--trained_run`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import HfgalError
from ..io import atomic_write_json
from ..runs import CHECKPOINT_PREFIX, CONFIG_FILE, RESULTS_FILE, WEIGHTS_FILE, RunRecord, read_results

logger = logging.getLogger(__name__)


def _checkpoint_step(path: Path) -> int:
    try:
        return int(path.name.split("-")[-1])
    except ValueError:
        return -1


def resolve_resume(output_dir: str, resume: str | None, overwrite: bool) -> str | None:
    """The checkpoint to resume from: `true`/`latest` (or an interrupted run folder) -> its last complete one.

    A checkpoint killed while it was being saved lacks a readable `trainer_state.json` (written last) and is
    skipped (and removed) with a warning; one that looks complete but whose weights do not load is an error naming
    it and `--overwrite_output_dir`.
    """

    out = Path(output_dir)
    if overwrite and out.exists():
        for child in out.iterdir():
            if child.name.startswith(CHECKPOINT_PREFIX) or child.name in (RESULTS_FILE, WEIGHTS_FILE):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        return None
    if resume not in (None, "", "true", "True", "latest", "auto"):
        if not Path(resume).is_dir():
            raise HfgalError(f"--resume_from_checkpoint {resume}: no such checkpoint folder")
        _check_checkpoint(Path(resume))
        _follow_moved_run(Path(resume))
        return resume
    checkpoints = sorted(out.glob(f"{CHECKPOINT_PREFIX}*"), key=_checkpoint_step) if out.is_dir() else []
    for ckpt in reversed(checkpoints):
        if not is_complete_checkpoint(ckpt):
            logger.warning("skipping %s: it was not completely saved (the run was interrupted while saving)", ckpt)
            shutil.rmtree(ckpt, ignore_errors=True)
            continue
        _check_checkpoint(ckpt)
        _follow_moved_run(ckpt)
        logger.warning("resuming from %s", ckpt)
        return str(ckpt)
    return None


def _follow_moved_run(ckpt: Path) -> None:
    """Point the checkpoint's record of the best checkpoint at the run folder it is in now.

    The Trainer stores `best_model_checkpoint` as a path as it was at save time. A run folder moved since (from a
    node's scratch disk to shared storage, say) would not find it: the run would end on its last model instead of
    the best one on validation, and the rotation of old checkpoints could delete the best. The checkpoint of that
    name beside `ckpt` is the same one.
    """
    state_file = ckpt / "trainer_state.json"
    state = json.loads(state_file.read_text())
    best = state.get("best_model_checkpoint")
    if not best or Path(best).is_dir():
        return
    here = ckpt.parent / Path(best).name
    if here.is_dir():
        state["best_model_checkpoint"] = str(here)
        atomic_write_json(state_file, state)
        logger.warning("the run folder moved: best checkpoint %s is now %s", best, here)


def is_complete_checkpoint(ckpt: Path) -> bool:
    """Whether a checkpoint folder was saved completely: its trainer_state.json, which the Trainer writes last, reads.

    An empty or cut trainer_state.json means the kill came while the Trainer was writing it: an unfinished save.
    """
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def _check_checkpoint(ckpt: Path) -> None:
    from safetensors import safe_open

    hint = "delete it or pass --overwrite_output_dir true to start over"
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise HfgalError(f"checkpoint {ckpt} is corrupted (trainer_state.json unreadable); {hint}") from None
    weights = sorted(ckpt.glob("*.safetensors"))
    if not weights:
        raise HfgalError(f"checkpoint {ckpt} has no safetensors weights; {hint}")
    for w in weights:
        try:
            with safe_open(str(w), framework="pt") as f:
                for key in list(f.keys())[:1]:
                    f.get_slice(key)
        except Exception:
            raise HfgalError(f"checkpoint {ckpt} is corrupted ({w.name} unreadable); {hint}") from None
    if os.path.getsize(weights[0]) == 0:
        raise HfgalError(f"checkpoint {ckpt} is corrupted ({weights[0].name} empty); {hint}")


# --------------------------------------------------------------------------- shared training


# Settings that change neither what is trained nor what is measured: a run folder may be resumed or finished with
# other values of these (another machine, another cache, a push added at the end).
RUNTIME_SETTINGS = frozenset(
    {"output_dir", "run_name", "logging_dir", "overwrite_output_dir", "resume_from_checkpoint", "image_cache_dir"}
    | {"push_to_hub", "hub_model_id", "hub_private_repo", "hub_strategy", "hub_revision", "per_device_eval_batch_size"}
    | {"dataloader_num_workers", "dataloader_persistent_workers", "dataloader_prefetch_factor", "disable_tqdm"}
    | {"report_to", "license", "cpu_threads", "carbon_tracking_mode", "concurrent_runs", "gpu_share", "logging_steps"}
    | {"save_total_limit"}
)
# Settings that do not change what is trained: a run may share the training of one that differs only in these.
EVALUATION_ONLY_SETTINGS = RUNTIME_SETTINGS | {"tta", "trained_run", "test_each_eval", "protocol"}


def differing_settings(theirs: dict[str, Any], ours: dict[str, Any], allowed: frozenset[str]) -> list[str]:
    """The settings, outside `allowed`, in which two resolved recipe configs differ (compared as config.yaml holds
    them), sorted."""
    import yaml

    ours = yaml.safe_load(yaml.safe_dump(ours, sort_keys=False))  # the types config.yaml holds
    return sorted(k for k in (theirs.keys() | ours.keys()) - allowed if theirs.get(k) != ours.get(k))


def _named(keys: list[str]) -> str:
    return ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")


def claim_run_folder(output_dir: str | os.PathLike, config: dict[str, Any], overwrite: bool) -> bool:
    """Check that the run folder holds nothing, or this very run; say whether that run is already finished.

    A folder that holds another run (its config.yaml records other settings: another model, data or recipe) is
    never resumed, finished or overwritten by accident: only `--overwrite_output_dir true` replaces it.

    Args:
        output_dir: the run folder.
        config: this run's resolved recipe config.
        overwrite: `--overwrite_output_dir`: the folder's run is replaced, whatever it was.

    Returns:
        True when the folder already holds this run, finished (its results.json is complete).

    Raises:
        HfgalError: the folder holds a run of other settings (named).
    """
    import yaml

    out = Path(output_dir)
    if overwrite or not (out / CONFIG_FILE).is_file():
        return False
    try:
        theirs = yaml.safe_load((out / CONFIG_FILE).read_text())
    except yaml.YAMLError:
        theirs = None
    if not isinstance(theirs, dict):
        raise HfgalError(
            f"{out / CONFIG_FILE} is unreadable; pass another --output_dir, or --overwrite_output_dir true"
        )
    differ = differing_settings(theirs, config, RUNTIME_SETTINGS)
    if differ:
        raise HfgalError(
            f"{out} holds a run with other settings ({_named(differ)}); pass another --output_dir, or "
            "--overwrite_output_dir true to replace that run"
        )
    return read_results(out) is not None


def shared_training(trained_run: str, config: dict[str, Any]) -> RunRecord:
    """The results of the finished run `trained_run`, after checking it was trained exactly as `config` asks.

    Args:
        trained_run: its folder (results.json and config.yaml inside).
        config: this run's `resolved_config`.

    Returns:
        Its record.

    Raises:
        HfgalError: the folder holds no finished run, or it was trained with other settings (named).
    """
    import yaml

    results = read_results(trained_run)
    try:
        theirs = yaml.safe_load((Path(trained_run) / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        theirs = None
    if results is None or not isinstance(theirs, dict):
        raise HfgalError(f"--trained_run {trained_run}: no finished run there (results.json, config.yaml); run it")
    differ = differing_settings(theirs, config, EVALUATION_ONLY_SETTINGS)
    if differ:
        raise HfgalError(
            f"--trained_run {trained_run} was trained with other settings ({_named(differ)}); only evaluation "
            "settings such as --tta may differ"
        )
    return results
