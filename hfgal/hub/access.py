"""Talking to the Hugging Face Hub: what is a Hub id, which token, and whether a push can start.

Below every pipeline stage, so that data, training, publishing and the demo ask these questions the same way.
The token is returned to the caller that needs it and is never printed, logged or written by hfgal.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import HfgalError

# Local files that look like `namespace/name` but never are a Hub repo.
_LOCAL_SUFFIXES = (".h5", ".hdf5", ".csv", ".json", ".yaml", ".yml")


def is_hub_id(value: str | os.PathLike | None) -> bool:
    """Whether `value` can only mean a Hub repo id (`namespace/name`), not a local path or `synthetic:N`.

    An existing file or folder, anything starting with `.`, `/` or `~`, a name with a data-file suffix, or a string
    huggingface_hub's own validator refuses is not a Hub id.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hf_validate

    if not value:
        return False
    value = os.fspath(value)
    if value.startswith((".", "/", "~")) or value.count("/") != 1 or value.lower().endswith(_LOCAL_SUFFIXES):
        return False
    if Path(value).expanduser().exists():
        return False
    try:
        hf_validate(value)
    except HFValidationError:
        return False
    return True


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

    Raises:
        HfgalError: no token is configured.
    """
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise HfgalError("no Hugging Face token found; run `hf auth login` or set HF_TOKEN")
    return token


def require_online(what: str, instead: str | None = None) -> None:
    """Fail before any work when the Hub is switched off (`HF_HUB_OFFLINE`) but `what` needs it.

    Args:
        what: what needs the Hub, e.g. "--push_to_hub".
        instead: what the user can do offline, e.g. "push later with hfgal push".
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        todo = f"unset it, or {instead}" if instead else "unset it and retry"
        raise HfgalError(f"{what} needs the Hub but HF_HUB_OFFLINE is set; {todo}")


def check_push_access(repo_id: str | None, *, flag: str = "--push-to", instead: str | None = None) -> str:
    """Everything a push needs that can be checked before hours of work: the id, a token, the Hub switched on.

    Args:
        repo_id: the repo the work will be pushed to.
        flag: the option that asked for the push, for the messages.
        instead: what to do offline instead (e.g. "push later with hfgal push"), for the offline message.

    Returns:
        `repo_id`, validated.

    Raises:
        HfgalError: a bad or missing id, no token, or the Hub switched off.
    """
    validate_repo_id(repo_id)
    require_token()
    require_online(flag, instead)
    return repo_id
