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


# Settings that do not change what is trained: a run may share the training of one that differs only in these.
EVALUATION_ONLY_SETTINGS = frozenset(
    {"tta", "trained_run", "output_dir", "run_name", "logging_dir", "overwrite_output_dir", "resume_from_checkpoint"}
    | {"push_to_hub", "hub_model_id", "hub_private_repo", "hub_strategy", "per_device_eval_batch_size"}
    | {"dataloader_num_workers", "dataloader_persistent_workers", "dataloader_prefetch_factor", "disable_tqdm"}
    | {"report_to", "image_cache_dir", "license", "cpu_threads"}
    | {"carbon_tracking_mode", "concurrent_runs", "gpu_share", "test_each_eval", "protocol"}
)


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
    ours = yaml.safe_load(yaml.safe_dump(config, sort_keys=False))  # the types config.yaml holds
    keys = (theirs.keys() | ours.keys()) - EVALUATION_ONLY_SETTINGS
    differ = sorted(k for k in keys if theirs.get(k) != ours.get(k))
    if differ:
        named = ", ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
        raise HfgalError(
            f"--trained_run {trained_run} was trained with other settings ({named}); only evaluation settings "
            "such as --tta may differ"
        )
    return results
