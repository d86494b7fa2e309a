"""Opening a checkpoint: the one place hfgal calls `AutoModelForImageClassification.from_pretrained`, for training
(`hfgal.models.loading.load_model`) and for inference (`hfgal.inference.load_classifier`) alike.

A checkpoint is a transformers or timm-on-Hub repo id or a local folder (an hfgal run folder, a saved model, a repo
laid out like one). Weights are read from safetensors when the checkpoint has them; a pickle-only checkpoint is read
only through `torch.load(weights_only=True)`, which refuses pickles that would run code; custom modelling code runs
only when asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..constants import ID2LABEL, LABEL2ID, NUM_CLASSES
from ..errors import HfgalError
from .equivariant import register as register_equivariant

logger = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """What `open_checkpoint` returns: the model's config, the model, and its own image processor (None when the
    checkpoint has none: a bare config folder, a timm repo whose `pretrained_cfg` is missing)."""

    config: Any
    model: Any
    processor: Any | None


def gz10_labels() -> dict[str, Any]:
    """The config attributes of a 10-class GZ10 head."""
    return {"num_labels": NUM_CLASSES, "id2label": dict(ID2LABEL), "label2id": dict(LABEL2ID)}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint answers a TCP connection within `timeout` seconds (False when HF_HUB_OFFLINE)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


def strip_timm_num_classes(config: Any) -> None:
    # Folders written by timm's save_for_hf carry model_args.num_classes, which collides with TimmWrapper's own
    # num_classes keyword ("multiple values for keyword argument"). The head size comes from num_labels instead.
    model_args = getattr(config, "model_args", None)
    if isinstance(model_args, dict):
        model_args.pop("num_classes", None)


def open_checkpoint(
    name_or_path: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    overrides: dict[str, Any] | None = None,
    gz10_head: bool = False,
    random_weights: bool = False,
    use_safetensors: bool | None = None,
    remote_code_flag: str = "--trust_remote_code true",
    hint: str = "pass a local folder with config.json",
) -> Checkpoint:
    """Open a checkpoint through `AutoConfig`, `AutoModelForImageClassification` and `AutoImageProcessor`.

    Args:
        name_or_path: a Hub id or a local folder.
        revision: Hub revision.
        trust_remote_code: run the checkpoint's own modelling code (off by default; a warning is logged when on).
        overrides: config attributes to change (for timm models: timm `model_args`).
        gz10_head: give the model a fresh 10-class GZ10 head (`id2label`/`label2id`) instead of its own.
        random_weights: build the architecture with random weights instead of loading them.
        use_safetensors: as `from_pretrained` (None: safetensors first, a pickle only when there is nothing else).
        remote_code_flag: how the user turns on `trust_remote_code`, for the message that names it.
        hint: what to pass instead, for the messages of a checkpoint that cannot be opened.

    Raises:
        HfgalError: unknown or unreachable id, custom code not allowed, bad overrides, unsafe or missing weights.
    """
    from transformers import AutoConfig, AutoModelForImageClassification

    register_equivariant()
    if trust_remote_code:
        logger.warning("trust_remote_code is on: code from %s will run on this machine", name_or_path)
    # Offline, the Hub client retries for ~25 s before giving up: look in the local cache only instead.
    local_only = Path(name_or_path).exists() or not hub_reachable()
    common = {"revision": revision, "trust_remote_code": trust_remote_code, "local_files_only": local_only}
    with _no_safetensors_conversion():
        try:
            config = AutoConfig.from_pretrained(name_or_path, **common)
        except (OSError, ValueError) as err:
            raise _open_error(name_or_path, err, remote_code_flag, hint) from None
        strip_timm_num_classes(config)
        for key, value in (overrides or {}).items():
            if config.model_type == "timm_wrapper":
                config.model_args = {**(config.model_args or {}), key: value}
            else:
                setattr(config, key, value)
        for key, value in (gz10_labels() if gz10_head else {}).items():
            setattr(config, key, value)
        try:
            if random_weights:
                model = AutoModelForImageClassification.from_config(config, trust_remote_code=trust_remote_code)
            else:
                model = AutoModelForImageClassification.from_pretrained(
                    name_or_path, config=config, use_safetensors=use_safetensors, weights_only=True,
                    ignore_mismatched_sizes=gz10_head, **common,
                )  # fmt: skip
        except HfgalError:
            raise
        except Exception as err:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError, UnpicklingError
            raise _open_error(name_or_path, err, remote_code_flag, hint) from None
    return Checkpoint(config, model, open_processor(name_or_path, revision=revision, local_only=local_only))


def open_processor(name_or_path: str, *, revision: str | None = None, local_only: bool = True) -> Any | None:
    """The checkpoint's own image processor, as `AutoImageProcessor` (and so `pipeline()`) loads it, or None."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(name_or_path, revision=revision, local_files_only=local_only)
    except (OSError, ValueError, TypeError, KeyError):
        return None  # a bare config folder, or a timm repo without pretrained_cfg


def _open_error(where: str, err: Exception, remote_code_flag: str, hint: str) -> HfgalError:
    text = str(err)
    if type(err).__name__ == "UnpicklingError" or "Weights only load failed" in text:
        return HfgalError(
            f"refusing the pickled weights of {where!r}: they would run code when loaded "
            "(torch.load weights_only=True); use a checkpoint with model.safetensors"
        )
    if "contains custom code" in text or "trust_remote_code" in text:
        return HfgalError(
            f"{where!r} needs its own modelling code (auto_map in config.json), which never runs by default; read "
            f"it, then pass {remote_code_flag} to run it"
        )
    reason = text.splitlines()[0][:160] if text else type(err).__name__
    return HfgalError(f"could not load model {where!r} ({reason}); {hint}")


@contextlib.contextmanager
def _no_safetensors_conversion() -> Iterator[None]:
    # For pickle-only Hub repos transformers would otherwise ask the Hub's conversion Space (sending the token)
    # to open a pull request: not something loading a model should do.
    previous = os.environ.get("DISABLE_SAFETENSORS_CONVERSION")
    os.environ["DISABLE_SAFETENSORS_CONVERSION"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("DISABLE_SAFETENSORS_CONVERSION", None)
        else:
            os.environ["DISABLE_SAFETENSORS_CONVERSION"] = previous
