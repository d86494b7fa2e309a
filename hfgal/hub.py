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

from .cards import CARD_FILE, CONFIG_FILE, CONFUSION_FILE, RESULTS_FILE, _weight_files, check_run_dir
from .utils import HfgalError

logger = logging.getLogger(__name__)

# What a published model repo holds besides its weights: enough to load it, read its card and reproduce it.
RUN_FILES = ("config.json", "preprocessor_config.json", CARD_FILE, RESULTS_FILE, CONFUSION_FILE, CONFIG_FILE)
REPO_TYPES = ("model", "dataset", "space")


def validate_repo_id(repo_id: str | None, *, require_namespace: bool = True) -> str:
    """Check a Hub repo id with huggingface_hub's own validator.

    Args:
        repo_id: e.g. `user/galaxy10-convnextv2-tiny`.
        require_namespace: pushes need `namespace/name` (a bare name would silently go to the token's user).

    Returns:
        `repo_id`, unchanged.

    Raises:
        HfgalError: the id is empty or malformed.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hf_validate

    if not repo_id or not isinstance(repo_id, str):
        raise HfgalError("no repo id given; pass --repo-id USER/NAME")
    try:
        hf_validate(repo_id)
    except HFValidationError as err:
        reason = str(err).splitlines()[0].rstrip(".")
        raise HfgalError(
            f"invalid repo id {repo_id!r} ({reason}); use USER/NAME with letters, digits, '-', '_' or '.'"
        ) from None
    if require_namespace and "/" not in repo_id:
        raise HfgalError(f"repo id {repo_id!r} has no namespace; use USER/NAME (or ORG/NAME)")
    return repo_id


def require_token() -> str:
    """The Hugging Face token from `HF_TOKEN` or the login cache; never printed, logged or written.

    Returns:
        The token.

    Raises:
        HfgalError: no token is configured.
    """
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise HfgalError("no Hugging Face token found; run `hf auth login` or set HF_TOKEN")
    return token


def _require_online(where: str) -> None:
    from huggingface_hub import constants

    # Fail before the card is rendered and files are staged, not at the first request.
    if constants.HF_HUB_OFFLINE:
        raise HfgalError(f"cannot push {where}: HF_HUB_OFFLINE is set; unset it and retry")


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
    _require_online(f"{repo_type} repo {repo_id}")
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
    its shards + index), `config.json`, `preprocessor_config.json`, README.md, results.json,
    confusion_matrix.png and config.yaml — never checkpoint folders, optimizer states, caches or logs — and
    uploads them with `upload_one_commit`.

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
    from .cards import write_model_card

    validate_repo_id(repo_id)
    run_dir, results, _ = check_run_dir(run_dir, for_push=True)
    token = require_token()
    _require_online(f"model repo {repo_id}")
    write_model_card(run_dir, repo_id=repo_id)
    names = [*_weight_files(run_dir), *(n for n in RUN_FILES if (run_dir / n).is_file())]
    if commit_message is None:
        accuracy = results["test"]["accuracy"]
        commit_message = f"Upload {results.get('run_name') or run_dir.name}: test accuracy {100 * accuracy:.2f} %"
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


def _push_cmd(args) -> int:
    url = push_run(
        args.output_dir,
        args.repo_id,
        private=True if args.private else None,
        revision=args.revision,
        commit_message=args.commit_message,
    )
    print(f"pushed {args.output_dir} to https://huggingface.co/{args.repo_id} ({url})")
    return 0


def register_cli(subparsers) -> None:
    push = subparsers.add_parser("push", help="publish a finished run folder as a Hub model repo (one commit)")
    push.add_argument("output_dir", metavar="OUTPUT_DIR", help="run folder written by recipes/finetune.py")
    push.add_argument("--repo-id", required=True, metavar="USER/NAME", help="Hub model repo to create or update")
    push.add_argument("--private", action="store_true", help="create the repo private (an existing repo is unchanged)")
    push.add_argument("--revision", metavar="BRANCH", help="push to this branch (created when missing)")
    push.add_argument("--commit-message", metavar="MSG", help="commit title")
    push.set_defaults(func=_push_cmd)


# --------------------------------------------------------------------------- studies


def stage_study(study_dir: str | os.PathLike, staging: str | os.PathLike, repo_id: str) -> list[str]:
    """Fill `staging` with what a study dataset repo holds: card, study.yaml, report files, every results.json.

    Weights, checkpoints and logs are never staged. Returns the staged paths (relative, sorted).
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    from .constants import GZ10_CITATION, HFGAL_CITATION
    from .leaderboard import ZOOBOT_CAVEAT
    from .report import PLOTS, _write_report
    from .study import read_results
    from .study_plan import STUDY_FILE
    from .utils import hub_card_template

    out_dir, staging = Path(study_dir).absolute(), Path(staging)
    report_md, built = _write_report(out_dir)
    study, groups = built["study"], built["groups"]
    for path in report_md.parent.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, staging / path.name)
    shutil.copy2(out_dir / STUDY_FILE, staging / STUDY_FILE)
    for group in groups:
        for run in group.runs:
            results = out_dir / "runs" / run.slug / "results.json"
            if read_results(results.parent) is not None:
                (staging / "runs" / run.slug).mkdir(parents=True)
                shutil.copy2(results, staging / "runs" / run.slug / "results.json")
    configs = [{"config_name": key, "data_files": f"{key}.csv"} for key in ("table1", "table2", "variants")]
    configs = [c for c in configs if (staging / c["data_files"]).is_file()]
    dataset = study.dataset
    card_data = DatasetCardData(
        pretty_name=f"hfgal study {study.name}: GZ10 backbone leaderboard",
        license="apache-2.0",
        tags=["astronomy", "galaxy-morphology", "galaxy10", "benchmark", "leaderboard", "hfgal"],
        task_categories=["image-classification"],
        size_categories=["n<1K"],
        source_datasets=[dataset] if "/" in dataset and not Path(dataset).exists() else None,
        configs=configs or None,
    )
    card = DatasetCard.from_template(
        card_data,
        template_path=str(hub_card_template("study_card.md")),
        study=study,
        repo_id=repo_id,
        leaderboard=built["leaderboard"],
        first_config=configs[0]["config_name"] if configs else None,
        hfgal_citation=f"{HFGAL_CITATION}\n{GZ10_CITATION}",
        finished=sum(len(g.results) for g in groups),
        failed=sum(len(g.failed) for g in groups),
        table1=built["table1"][0] if built["table1"] else None,
        table2=built["table2"][0] if built["table2"] else None,
        variants=built["variants"][0] if built["variants"] else None,
        published=built["published"],
        plots=[name for name in PLOTS if (staging / name).is_file()],
        zoobot_caveat=ZOOBOT_CAVEAT if built["table2"] else None,
    )
    card.save(staging / "README.md")
    return sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())


def push_study(study_dir: str | os.PathLike, repo_id: str, *, private: bool | None = None) -> str:
    """Publish a study as a Hub dataset repo in one commit: leaderboard card, tables, plots, report, results.json.

    Args:
        study_dir: folder written by recipes/study.py.
        repo_id: `namespace/name` of the dataset repo (created if missing).
        private: visibility of a newly created repo.

    Returns:
        The commit URL.
    """
    from .study_plan import STUDY_FILE, load_study

    validate_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="hfgal-study-push-") as staging:
        stage_study(study_dir, staging, repo_id)
        study_name = load_study(Path(study_dir).absolute() / STUDY_FILE).name
        return upload_one_commit(
            staging,
            repo_id,
            repo_type="dataset",
            private=private,
            commit_message=f"Upload hfgal study {study_name}: tables, plots, report, results",
        )
