"""Publishing to the Hugging Face Hub: repo ids, tokens, and one-commit uploads of prepared folders (fine-tuned
runs as model repos, studies as dataset repos).

A push is `create_repo(exist_ok=True)` plus ONE `upload_folder` of a staged folder holding exactly the files to
publish, so a repo never shows a half-uploaded model and checkpoints or optimizer states never leak out.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import HfgalError
from ..runs import (
    CALIBRATION_FILE,
    CARD_FILE,
    CONFIG_FILE,
    CONFUSION_FILE,
    CURVES_FILE,
    MODEL_CONFIG_FILE,
    PREDICTIONS_FILE,
    PROCESSOR_FILE,
    RESULTS_FILE,
    TRAINING_LOG_FILE,
    check_run_dir,
    weight_files,
)
from .access import require_online, require_token, validate_repo_id

logger = logging.getLogger(__name__)

# What a published model repo holds besides its weights: enough to load it (with its calibration), read its card
# and reproduce it. TensorBoard's event files (runs/) stay local: the training log and its curves carry the same.
RUN_FILES = (
    MODEL_CONFIG_FILE, PROCESSOR_FILE, CALIBRATION_FILE, CARD_FILE, RESULTS_FILE, PREDICTIONS_FILE, CONFUSION_FILE,
    CONFIG_FILE, TRAINING_LOG_FILE, CURVES_FILE,
)  # fmt: skip
REPO_TYPES = ("model", "dataset", "space")


def _hub_error(err: BaseException, repo_id: str, repo_type: str, token: str) -> HfgalError:
    """One line saying why the Hub refused, with the token scrubbed even if a server echoed it back."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    where = f"{repo_type} repo {repo_id}"
    if isinstance(err, OfflineModeIsEnabled):
        message = f"cannot push {where}: HF_HUB_OFFLINE is set; unset it and retry"
    elif isinstance(err, HfHubHTTPError) and err.response is not None:
        status = err.response.status_code
        # The server's own words say what is wrong (no rights on the namespace, bad revision...): keep them.
        server = " ".join((getattr(err, "server_message", None) or "").split())[:300]
        detail = f"{status}: {server}" if server else f"HTTP {status}"
        if status == 401:
            message = f"the Hub rejected the token for {where} ({detail}); run `hf auth login` with a write token"
        elif status == 403:
            message = f"the token may not write to {where} ({detail}); use a write token for a namespace you own"
        else:
            message = f"the Hub refused the push to {where} ({detail}); check the repo id, revision and your access"
    else:
        reason = (str(err).splitlines() or [""])[0] or type(err).__name__
        message = f"could not reach the Hub to push {where} ({type(err).__name__}: {reason}); check your network"
    return HfgalError(message.replace(token, "<token>") if token else message)


def _network_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub import errors

    # OSError covers ConnectionError/OfflineModeIsEnabled and HfHubHTTPError; the transport's own HTTPError
    # (httpx in huggingface_hub 1.x) covers timeouts and refused connections.
    transport = getattr(errors, "HTTPError", None)
    return (OSError, *([transport] if isinstance(transport, type) else []))


def upload_one_commit(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    allow_patterns: list[str] | str | None = None,
    space_sdk: str | None = None,
) -> str:
    """Create the repo if needed and upload a prepared folder in ONE commit.

    Args:
        folder: the staged folder; everything in it (filtered by `allow_patterns`) is uploaded.
        repo_id: `namespace/name`.
        repo_type: `model`, `dataset` or `space`.
        private: visibility of a newly created repo (None: the Hub's default); an existing repo is unchanged.
        revision: branch to commit to; created from the default branch when missing.
        commit_message: the commit title (default: "Upload with hfgal").
        allow_patterns: glob patterns of the files to upload (default: all).
        space_sdk: SDK of a newly created Space (default `gradio`).

    Returns:
        The URL of the commit.

    Raises:
        HfgalError: bad id/type/folder, no token, or the Hub refused or could not be reached (one line).
    """
    from huggingface_hub import HfApi

    validate_repo_id(repo_id)
    if repo_type not in REPO_TYPES:
        raise HfgalError(f"unknown repo type {repo_type!r}; use one of {', '.join(REPO_TYPES)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise HfgalError(f"{folder}: no such folder to upload")
    token = require_token()
    require_online(f"pushing to {repo_type} repo {repo_id}")
    api = HfApi(token=token)
    extra = {"space_sdk": space_sdk or "gradio"} if repo_type == "space" else {}
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **extra)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        logger.info("uploading %s to %s repo %s in one commit", folder, repo_type, repo_id)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type=repo_type,
            revision=revision,
            commit_message=commit_message or "Upload with hfgal",
            allow_patterns=allow_patterns,
        )
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise  # local file trouble, not the Hub's: run_cli reports it as it is
    except _network_errors() as err:
        raise _hub_error(err, repo_id, repo_type, token) from None
    return str(getattr(info, "commit_url", info))


def push_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Publish a finished run folder as a Hub model repo in one commit.

    Refreshes the run's README.md with `repo_id` filled in, stages exactly the weights (`model.safetensors` or
    its shards + index), `config.json`, `preprocessor_config.json`, README.md, results.json, predictions.csv,
    confusion_matrix.png and config.yaml, plus the modelling code its config.json's `auto_map` names (a custom
    model such as hfgal's equivariant GCNN, so the repo loads with `trust_remote_code=True` without hfgal) —
    never checkpoint folders, optimizer states, caches or logs — and uploads them with `upload_one_commit`.

    Args:
        run_dir: the recipe's OUTPUT_DIR.
        repo_id: `namespace/name` of the model repo.
        private: visibility of a newly created repo.
        revision: branch to push to (created when missing).
        commit_message: commit title (default names the run and its test accuracy).

    Returns:
        The URL of the commit.

    Raises:
        HfgalError: bad repo id, unfinished run folder, no token, or a Hub failure.
    """
    from .card import write_model_card

    validate_repo_id(repo_id)
    run_dir, results, _ = check_run_dir(run_dir, for_push=True)
    token = require_token()
    require_online(f"pushing to model repo {repo_id}")
    write_model_card(run_dir, repo_id=repo_id)
    names = [*weight_files(run_dir), *(n for n in RUN_FILES if (run_dir / n).is_file()), *remote_code_files(run_dir)]
    if commit_message is None:
        accuracy = results.test.accuracy
        commit_message = f"Upload {results.run_name or run_dir.name}: test accuracy {100 * accuracy:.2f} %"
    # Staged beside the run so hard links work (no copy of the weights); removed whatever happens.
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.push-", dir=run_dir.parent))
    except OSError:  # read-only parent: stage in the system temp folder (copies instead of links)
        staging = Path(tempfile.mkdtemp(prefix=f"hfgal-push-{run_dir.name}-"))
    try:
        for name in names:
            _link_or_copy(run_dir / name, staging / name)
        _refuse_token_in_files(staging, names, token)
        return upload_one_commit(
            staging, repo_id, repo_type="model", private=private, revision=revision, commit_message=commit_message
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remote_code_files(run_dir: Path) -> list[str]:
    """The `<module>.py` files of the run folder that its config.json's `auto_map` points at (custom model code)."""
    import json

    try:
        auto_map = json.loads((run_dir / MODEL_CONFIG_FILE).read_text()).get("auto_map") or {}
    except (OSError, ValueError):
        return []
    references = [r for v in auto_map.values() for r in (v if isinstance(v, (list, tuple)) else [v]) if r]
    # "module.Class", or "repo--module.Class" for code that lives in another repo (nothing to upload then)
    modules = {r.rsplit(".", 1)[0] for r in references if isinstance(r, str) and "--" not in r}
    return sorted(f"{m}.py" for m in modules if (run_dir / f"{m}.py").is_file())


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not supported
        shutil.copy2(src, dst)


def _refuse_token_in_files(folder: Path, names: list[str], token: str) -> None:
    # A resolved config can carry a hub token (TrainingArguments has one): never publish it.
    for name in names:
        if name.endswith((".json", ".yaml", ".md")) and token in (folder / name).read_text(errors="ignore"):
            raise HfgalError(f"{name} contains your Hugging Face token; remove it from the run folder before pushing")


def push_dataset(folder: str | os.PathLike, repo_id: str, *, private: bool | None = None) -> str:
    """Push a saved GZ10 folder (`hfgal data build`: dataset + card) to the Hub as a dataset repo.

    Returns:
        The dataset's URL.
    """
    from datasets import load_from_disk
    from huggingface_hub import DatasetCard, HfApi

    validate_repo_id(repo_id)
    token = require_token()
    require_online(f"pushing to dataset repo {repo_id}")
    folder = Path(folder)
    dsd = load_from_disk(str(folder))
    try:
        # Card first: datasets' own push then merges its configs/dataset_info metadata into it.
        HfApi(token=token).create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        DatasetCard.load(folder / CARD_FILE).push_to_hub(repo_id, repo_type="dataset", token=token)
        dsd.push_to_hub(repo_id, private=private, token=token)
    except _network_errors() as err:
        raise _hub_error(err, repo_id, "dataset", token) from None
    except Exception as err:  # datasets raises its own types for what the Hub refuses
        reason = type(err).__name__
        raise HfgalError(f"push of {folder} to {repo_id} failed: {reason}; check the id and access") from None
    return f"https://huggingface.co/datasets/{repo_id}"
