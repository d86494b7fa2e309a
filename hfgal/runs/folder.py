"""Reading a run folder: its record, config and weights, checked, with one line saying what is missing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import HfgalError
from .names import (
    CHECKPOINT_PREFIX,
    CONFIG_FILE,
    MODEL_CONFIG_FILE,
    PICKLED_WEIGHTS_FILES,
    PROCESSOR_FILE,
    RESULTS_FILE,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
)
from .record import RunRecord


def read_results(run_dir: str | os.PathLike) -> RunRecord | None:
    """The run's record if its results.json is complete, else None (missing, half-written, unfinished, unreadable)."""
    try:
        data = json.loads((Path(run_dir) / RESULTS_FILE).read_text())
        record = RunRecord.from_dict(data)
    except (OSError, ValueError):  # HfgalError is a ValueError
        return None
    return record if record.complete is True else None


def weight_files(run_dir: str | os.PathLike) -> list[str]:
    """Names of a run's final weights: one safetensors file, or the index and every shard it lists ([] if absent)."""
    run_dir = Path(run_dir)
    if (run_dir / WEIGHTS_FILE).is_file():
        return [WEIGHTS_FILE]
    index = run_dir / WEIGHTS_INDEX_FILE
    if not index.is_file():
        return []
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
        return []
    if not shards or not all((run_dir / s).is_file() for s in shards):
        return []
    return [WEIGHTS_INDEX_FILE, *shards]


def check_model_folder(
    folder: str | os.PathLike,
    *,
    hint: str = "pass a fine-tuning output folder or a Hub repo id",
    allow_pickle: bool = False,
) -> list[str]:
    """The weight files of a folder `from_pretrained` loads (an hfgal run folder or any saved model), or one line
    saying why it is not one.

    Args:
        folder: the folder.
        hint: what the user should pass instead, for the messages.
        allow_pickle: accept a folder with only `pytorch_model.bin` (loaded with `torch.load(weights_only=True)`).

    Returns:
        The weight file names (safetensors, or the pickled ones when that is all there is and `allow_pickle`).

    Raises:
        HfgalError: missing folder, no config.json, no weights.
    """
    folder = Path(folder)
    if not folder.exists():
        raise HfgalError(f"model folder {folder} does not exist; {hint}")
    if not folder.is_dir():
        raise HfgalError(f"{folder} is not a folder; {hint}")
    if not (folder / MODEL_CONFIG_FILE).is_file():
        raise HfgalError(f"{folder} has no {MODEL_CONFIG_FILE}; {hint}")
    weights = weight_files(folder)
    if not weights and allow_pickle:
        weights = [name for name in PICKLED_WEIGHTS_FILES if (folder / name).is_file()]
    if not weights:
        raise HfgalError(
            f"{folder} has no {WEIGHTS_FILE} (safetensors weights); save the model with save_pretrained first"
        )
    return weights


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's resolved recipe config (config.yaml) as a mapping.

    Raises:
        HfgalError: missing, not YAML, or not a mapping.
    """
    import yaml

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise HfgalError(f"{run_dir}: no {CONFIG_FILE} (the resolved recipe config); rerun recipes/finetune.py")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise HfgalError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); restore the file") from None
    if not isinstance(config, dict):
        raise HfgalError(f"{path}: expected a mapping of recipe arguments; restore the file")
    return config


def check_run_dir(
    run_dir: str | os.PathLike, *, for_push: bool = False, what: str = "run folder"
) -> tuple[Path, RunRecord, dict[str, Any]]:
    """Check that `run_dir` is a finished fine-tuning run and read its record and config.

    Args:
        run_dir: the recipe's OUTPUT_DIR.
        for_push: also require the files a Hub repo needs to load (`config.json`, `preprocessor_config.json`).
        what: how the folder is named in messages.

    Returns:
        `(run_dir, record, config)`.

    Raises:
        HfgalError: naming the folder and what is missing or broken.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HfgalError(f"{run_dir}: no such {what}; pass the --output_dir of a finished recipes/finetune.py run")
    results_path = run_dir / RESULTS_FILE
    if not results_path.is_file():
        raise HfgalError(f"{run_dir}: no {RESULTS_FILE} — is the run finished? run recipes/finetune.py first")
    try:
        data = json.loads(results_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HfgalError(f"{results_path}: not valid JSON ({err}); rerun the evaluation of this run") from None
    if not isinstance(data, dict) or not data.get("complete"):
        raise HfgalError(
            f"{run_dir}: {RESULTS_FILE} is not marked complete — the run did not finish; relaunch "
            "recipes/finetune.py with --resume_from_checkpoint true"
        )
    record = RunRecord.from_dict(data, str(results_path))
    if not weight_files(run_dir):
        raise HfgalError(
            f"{run_dir}: no {WEIGHTS_FILE} (or sharded weights with {WEIGHTS_INDEX_FILE}); the final model was not "
            "saved — rerun recipes/finetune.py"
        )
    config = read_config(run_dir)
    if for_push:
        for name in (MODEL_CONFIG_FILE, PROCESSOR_FILE):
            if not (run_dir / name).is_file():
                raise HfgalError(f"{run_dir}: no {name}, so the model could not be loaded from the Hub; rerun the run")
    return run_dir, record, config


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether the run folder holds a `checkpoint-*` folder to resume from."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any(p.is_dir() for p in run_dir.glob(f"{CHECKPOINT_PREFIX}*"))
