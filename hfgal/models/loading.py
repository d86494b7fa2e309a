"""Model loading: one path through `AutoModelForImageClassification`, for transformers and timm-on-Hub ids, named
configs of the study's architectures (random weights, no download), and the input size and normalisation each
backbone expects."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..constants import ID2LABEL, LABEL2ID, NUM_CLASSES
from ..errors import HfgalError

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_settings(processor: Any) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Square input side, mean and std from an image processor (transformers or TimmWrapper).

    Args:
        processor: an `ImageProcessor` (`size` as height/width, shortest_edge or crop_size) or a
            `TimmWrapperImageProcessor` (timm `data_config` with `input_size`).

    Returns:
        `(image_size, mean, std)`; ImageNet statistics when the processor has none.
    """
    data_config = getattr(processor, "data_config", None)
    if data_config:  # TimmWrapperImageProcessor
        size = int(data_config["input_size"][-1])
        mean = tuple(float(m) for m in data_config.get("mean", IMAGENET_MEAN))
        std = tuple(float(s) for s in data_config.get("std", IMAGENET_STD))
        return size, mean, std
    size_cfg = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size_cfg = size_cfg or getattr(processor, "size", None) or {}
    if isinstance(size_cfg, int):
        size = size_cfg
    else:
        size_cfg = dict(size_cfg)
        size = size_cfg.get("height") or size_cfg.get("shortest_edge") or size_cfg.get("width") or 224
    mean = tuple(float(m) for m in (getattr(processor, "image_mean", None) or IMAGENET_MEAN))
    std = tuple(float(s) for s in (getattr(processor, "image_std", None) or IMAGENET_STD))
    return int(size), mean, std


# Named configs of the study's architectures: built offline with random weights (no download). Shrink them for
# tests with `model_config_overrides`, e.g. {"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1]}.
NAMED_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "convnextv2-tiny": ("convnextv2", {"depths": [3, 3, 9, 3], "hidden_sizes": [96, 192, 384, 768]}),
    "convnextv2-nano": ("convnextv2", {"depths": [2, 2, 8, 2], "hidden_sizes": [80, 160, 320, 640]}),
    "vit-base": ("vit", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224}),
    "dinov2-base": (
        "dinov2",
        {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224},
    ),
    "swinv2-base": (
        "swinv2",
        {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "image_size": 192, "window_size": 12},
    ),
    "beit-base": ("beit", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224}),
    "efficientnet-b7": ("efficientnet", {"width_coefficient": 2.0, "depth_coefficient": 3.1, "image_size": 600}),
    "resnet-101": ("resnet", {"depths": [3, 4, 23, 3], "layer_type": "bottleneck"}),
}


@dataclass
class LoadedModel:
    """A classifier ready for GZ10 and what the rest of the recipe needs to know about it."""

    model: Any
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    init: str  # "pretrained" | "scratch"
    base_model: str | None  # Hub id of the pretrained weights, when there are any
    model_type: str


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


def _gz10_labels() -> dict[str, Any]:
    return {"num_labels": NUM_CLASSES, "id2label": dict(ID2LABEL), "label2id": dict(LABEL2ID)}


def _config_image_size(config: Any) -> int | None:
    size = getattr(config, "image_size", None)
    if isinstance(size, (list, tuple)):
        size = size[-1]
    if size is None and getattr(config, "model_type", "") == "timm_wrapper":
        size = (getattr(config, "pretrained_cfg", None) or {}).get("input_size", [3, 224, 224])[-1]
    return int(size) if size else None


def strip_timm_num_classes(config: Any) -> None:
    # Folders written by timm's save_for_hf carry model_args.num_classes, which collides with TimmWrapper's own
    # num_classes keyword ("multiple values for keyword argument"). The head size comes from num_labels instead.
    model_args = getattr(config, "model_args", None)
    if isinstance(model_args, dict):
        model_args.pop("num_classes", None)


def load_model(
    name_or_path: str,
    *,
    init: str = "pretrained",
    config_overrides: dict[str, Any] | None = None,
    image_size: tuple[int, int] | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Build a 10-class GZ10 classifier through `AutoModelForImageClassification`.

    Args:
        name_or_path: a transformers or timm-on-Hub id (`facebook/dinov2-base`, `timm/vgg16.tv_in1k`,
            `mwalmsley/zoobot-encoder-convnext_nano`), a local folder, a named config (`convnextv2-tiny`, ...,
            random weights) or `timm:<architecture>` (random weights, built through `TimmWrapperConfig`).
        init: `pretrained` loads the weights; `scratch` builds the same architecture with random weights.
        config_overrides: config attributes to change (for timm architectures: timm `model_args`).
        image_size: (height, width) override; otherwise the model's own processor/config decides.
        revision: Hub revision.
        trust_remote_code: allow custom code from the repo (off by default; a warning is logged when on).

    Returns:
        `LoadedModel` with the head replaced for the 10 GZ10 classes (`id2label`/`label2id` set).

    Raises:
        HfgalError: unknown or unreachable id, bad overrides.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, TimmWrapperConfig

    if init not in ("pretrained", "scratch"):
        raise HfgalError(f"--init {init!r} is not valid; use pretrained or scratch")
    overrides = dict(config_overrides or {})
    if trust_remote_code:
        logger.warning("trust_remote_code is on: code from %s will run on this machine", name_or_path)
    processor = None
    base_model = None
    if name_or_path in NAMED_CONFIGS:
        model_type, defaults = NAMED_CONFIGS[name_or_path]
        try:
            config = AutoConfig.for_model(model_type, **{**defaults, **overrides}, **_gz10_labels())
        except (TypeError, ValueError) as err:
            raise HfgalError(f"bad --model_config_overrides for {name_or_path}: {err}") from None
        model = AutoModelForImageClassification.from_config(config)
        init = "scratch"
    elif name_or_path.startswith("timm:"):
        import timm

        arch = name_or_path.split(":", 1)[1]
        if not timm.is_model(arch):
            raise HfgalError(f"unknown timm architecture {arch!r}; see timm.list_models() for names")
        config = TimmWrapperConfig(architecture=arch, model_args=overrides or None, **_gz10_labels())
        config.pretrained_cfg = dict(timm.get_pretrained_cfg(arch).to_dict()) if timm.get_pretrained_cfg(arch) else {}
        try:
            model = AutoModelForImageClassification.from_config(config)
        except TypeError as err:
            raise HfgalError(f"bad --model_config_overrides for {name_or_path}: {err}") from None
        init = "scratch"
    else:
        # Offline, the Hub client retries for ~25 s before giving up: look in the local cache only instead.
        local_only = Path(name_or_path).exists() or not hub_reachable()
        try:
            config = AutoConfig.from_pretrained(
                name_or_path, revision=revision, trust_remote_code=trust_remote_code, local_files_only=local_only
            )
        except (OSError, ValueError) as err:
            if "contains custom code" in str(err):
                raise HfgalError(
                    f"{name_or_path!r} needs its own modelling code (auto_map in config.json), which never runs by "
                    "default; read it, then pass --trust_remote_code true to run it"
                ) from None
            reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise HfgalError(
                f"could not load model {name_or_path!r} ({reason}); offline, pass a local folder with config.json, "
                f"a named config ({', '.join(NAMED_CONFIGS)}) or timm:<architecture>"
            ) from None
        strip_timm_num_classes(config)
        for key, value in overrides.items():
            if config.model_type == "timm_wrapper":
                config.model_args = {**(config.model_args or {}), key: value}
            else:
                setattr(config, key, value)
        for key, value in _gz10_labels().items():
            setattr(config, key, value)
        try:
            processor = AutoImageProcessor.from_pretrained(
                name_or_path, revision=revision, local_files_only=local_only
            )
        except (OSError, ValueError, TypeError, KeyError):
            processor = None  # a bare config folder: fall back to the config's image size and ImageNet stats
        if init == "scratch":
            model = AutoModelForImageClassification.from_config(config, trust_remote_code=trust_remote_code)
        else:
            try:
                model = AutoModelForImageClassification.from_pretrained(
                    name_or_path,
                    config=config,
                    revision=revision,
                    ignore_mismatched_sizes=True,
                    trust_remote_code=trust_remote_code,
                    local_files_only=local_only,
                )
            except OSError as err:
                reason = str(err).splitlines()[0][:160]
                raise HfgalError(
                    f"could not load weights of {name_or_path!r} ({reason}); pass --init scratch to train the "
                    "architecture from random weights"
                ) from None
            base_model = name_or_path if not Path(name_or_path).exists() else None
    if processor is not None:
        size, mean, std = image_settings(processor)
    else:
        size, mean, std = _config_image_size(model.config) or 224, IMAGENET_MEAN, IMAGENET_STD
        if model.config.model_type == "timm_wrapper":
            cfg = getattr(model.config, "pretrained_cfg", None) or {}
            mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    return LoadedModel(
        model=model,
        image_size=image_size or (size, size),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        init=init,
        base_model=base_model,
        model_type=model.config.model_type,
    )
