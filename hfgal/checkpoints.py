"""Resuming a fine-tuning run: which checkpoint to continue from, and refusing torn or unsafe ones.

A run killed at any point resumes from its last complete checkpoint (`--resume_from_checkpoint true`); a save that
was interrupted is recognised and skipped, and a corrupted checkpoint gives one line naming it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from .utils import HfgalError, atomic_write_json

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
            if child.name.startswith("checkpoint-") or child.name in ("results.json", "model.safetensors"):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        return None
    if resume not in (None, "", "true", "True", "latest", "auto"):
        if not Path(resume).is_dir():
            raise HfgalError(f"--resume_from_checkpoint {resume}: no such checkpoint folder")
        _check_checkpoint(Path(resume))
        _follow_moved_run(Path(resume))
        return resume
    checkpoints = sorted(out.glob("checkpoint-*"), key=_checkpoint_step) if out.is_dir() else []
    for ckpt in reversed(checkpoints):
        if not _state_readable(ckpt):
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


def _state_readable(ckpt: Path) -> bool:
    # An empty or cut trainer_state.json means the kill came while the Trainer was writing it: an unfinished save.
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
