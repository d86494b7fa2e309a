"""Model loading: one path through `AutoModelForImageClassification`, for transformers and timm-on-Hub ids, named
configs of the study's architectures (random weights, no download), and the input size and normalisation each
backbone expects."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..constants import ID2LABEL, LABEL2ID, NUM_CLASSES
from ..data.geometry import Geometry
from ..errors import HfgalError
from .equivariant import MODEL_TYPE as EQUIVARIANT_MODEL_TYPE
from .equivariant import NAMED_CONFIGS as EQUIVARIANT_CONFIGS
from .equivariant import register as register_equivariant
from .preprocessing import processor_geometry

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_settings(processor: Any) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Square input side, mean and std from an image processor (transformers or TimmWrapper).

    Args:
        processor: an `ImageProcessor` (`size` as height/width, shortest_edge or crop_size) or a
            `TimmWrapperImageProcessor` (timm `data_config` with `input_size`).

    Returns:
        `(image_size, mean, std)` in hfgal's `(x / 255 - mean) / std` form: what the processor really does to
        pixel values (see `effective_normalization`); ImageNet statistics when the processor has none.
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
    mean, std = effective_normalization(processor)
    return int(size), mean, std


def effective_normalization(processor: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std that reproduce what a transformers image processor does to pixel values.

    A processor's `image_mean`/`image_std` are not always what it applies: EfficientNet's (`google/efficientnet-b7`)
    stores the square root of the ImageNet std with `include_top: true` and divides by it twice (effective std
    0.229, 0.224, 0.225); `rescale_offset` shifts by -1 before normalising; `do_normalize: false` skips it. Rather
    than re-implementing each processor's rules, ask the processor itself: it maps uniform black, mid-grey and
    white images through its own pipeline, and the per-channel affine map it applies gives the effective
    `(x / 255 - mean) / std`. Values that match the processor's own attributes are returned as written.

    Args:
        processor: a transformers image processor (anything callable as `processor(images=..., return_tensors="pt")`).

    Returns:
        `(mean, std)` per channel, in units of `x / 255`.
    """
    import numpy as np
    from PIL import Image

    stated_mean = tuple(float(m) for m in (getattr(processor, "image_mean", None) or IMAGENET_MEAN))
    stated_std = tuple(float(s) for s in (getattr(processor, "image_std", None) or IMAGENET_STD))
    try:
        levels = (0, 128, 255)
        outputs = []
        for level in levels:
            pixels = processor(images=Image.new("RGB", (32, 32), (level,) * 3), return_tensors="pt")["pixel_values"]
            pixels = pixels[0].float().numpy()  # (C, H, W); uniform input: any pixel, the centre one is never padding
            outputs.append(pixels[:, pixels.shape[1] // 2, pixels.shape[2] // 2].astype(np.float64))
    except Exception as err:  # noqa: BLE001 - a processor that cannot be probed still states its statistics
        logger.warning("could not probe %s (%s); using its stated mean/std", type(processor).__name__, err)
        return stated_mean, stated_std
    black, grey, white = outputs
    gain = white - black  # output change per unit of x / 255
    if np.any(np.abs(gain) < 1e-6) or not np.allclose(grey, black + gain * 128 / 255, atol=1e-3 * np.abs(gain).max()):
        logger.warning("%s is not a per-channel affine map; using its stated mean/std", type(processor).__name__)
        return stated_mean, stated_std
    std, mean = 1.0 / gain, -black / gain
    if (
        len(mean) == len(stated_mean)
        and np.allclose(mean, stated_mean, atol=1e-5)
        and np.allclose(std, stated_std, rtol=1e-5)
    ):
        return stated_mean, stated_std
    mean, std = tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)
    logger.info(
        "%s normalises with effective mean %s, std %s (stated: mean %s, std %s)",
        type(processor).__name__,
        mean,
        std,
        stated_mean,
        stated_std,
    )
    return mean, std


# Zoobot trains its encoders on images scaled to [0, 1] with no mean/std normalisation; the mean/std in their timm
# config.json are only timm's defaults for the architecture (e.g. ImageNet for convnext_nano, 0.5 for
# maxvit_rmlp_base_rw_224). Sources (mwalmsley/zoobot v2.0.1, commit 1517b20d):
#   zoobot/pytorch/training/train_with_pytorch_lightning.py L273-279: "check range of loaded images, should be 0-1",
#       `assert images.max() <= 1.0` / `assert images.min() >= 0.0` on the training batch fed to the model;
#   zoobot/pytorch/estimators/define_model.py L444: the encoder is a bare `timm.create_model(...)` (no normalisation);
#   and its data transforms (mwalmsley/galaxy-datasets commit 3347aa0, galaxy_datasets/transforms.py
#   `default_transforms`): `A.ToFloat(max_value=255.0)`, no Normalize.
ZOOBOT_MEAN = (0.0, 0.0, 0.0)
ZOOBOT_STD = (1.0, 1.0, 1.0)
_ZOOBOT_ENCODER = re.compile(r"zoobot-encoder-")


def is_zoobot_encoder(name_or_path: str) -> bool:
    """Whether `name_or_path` is a Zoobot encoder as published (`mwalmsley/zoobot-encoder-*`, or a folder laid out as
    such a repo: timm config.json, no preprocessor_config.json, named or carded `zoobot-encoder-*`)."""
    path = Path(name_or_path)
    if not path.is_dir():
        return name_or_path.startswith("mwalmsley/") and bool(_ZOOBOT_ENCODER.search(name_or_path))
    if (path / "preprocessor_config.json").is_file():
        return False  # a folder that states its own preprocessing (an hfgal run, for one) is taken at its word
    card = path / "README.md"
    return bool(
        _ZOOBOT_ENCODER.search(path.resolve().name)
        or (card.is_file() and _ZOOBOT_ENCODER.search(card.read_text(encoding="utf-8", errors="replace")))
    )


# transformers' EfficientNet copies Keras' `batch_norm_momentum=0.99` into `nn.BatchNorm2d(momentum=...)` (and leaves
# the expansion BatchNorm at PyTorch's default 0.1). Keras weighs the *old* running statistics by its momentum;
# PyTorch weighs the *new batch* by it (running = (1 - momentum) * running + momentum * batch), so 0.99 makes the
# running statistics ~ the last batch (at the end of an epoch, a handful of augmented images). The PyTorch
# equivalent of Keras' 0.99, used by every BatchNorm of the original Keras model, is 1 - 0.99 = 0.01.
KERAS_MOMENTUM_MODEL_TYPES = ("efficientnet",)


def pytorch_batch_norm_momentum(model: Any, overrides: dict[str, Any]) -> float | None:
    """For the families above, turn a Keras-sense `batch_norm_momentum` (> 0.5) into PyTorch's sense in the config
    and give every BatchNorm of the model that momentum, in place. An explicit override is kept as given.

    Returns:
        The momentum now in the config (None for other families).
    """
    import torch

    config = model.config
    momentum = getattr(config, "batch_norm_momentum", None)
    if momentum is None or getattr(config, "model_type", None) not in KERAS_MOMENTUM_MODEL_TYPES:
        return None
    if momentum > 0.5 and "batch_norm_momentum" not in overrides:
        config.batch_norm_momentum = round(1.0 - momentum, 6)
        logger.info("batch_norm_momentum %s (Keras sense) -> %s (PyTorch sense)", momentum, config.batch_norm_momentum)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = config.batch_norm_momentum
    return config.batch_norm_momentum


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
    # Rotation-equivariant GCNNs, hfgal's own model type (hfgal.models.equivariant): gcnn-d4-tiny, -d8-small, -d16-base
    **{name: (EQUIVARIANT_MODEL_TYPE, defaults) for name, defaults in EQUIVARIANT_CONFIGS.items()},
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
    processor: Any = None  # the checkpoint's own image processor, when it has one
    processor_geometry: Geometry | None = None  # how that processor resizes and crops (the poster protocol's way)


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

    register_equivariant()  # normally done by the import hook `import hfgal` installs; here explicitly
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
    pytorch_batch_norm_momentum(model, overrides)
    if processor is not None:
        size, mean, std = image_settings(processor)
    else:
        size, mean, std = _config_image_size(model.config) or 224, IMAGENET_MEAN, IMAGENET_STD
        if model.config.model_type == "timm_wrapper":
            cfg = getattr(model.config, "pretrained_cfg", None) or {}
            mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    if init == "pretrained" and is_zoobot_encoder(name_or_path):
        logger.info(
            "%s: a Zoobot encoder, fed [0, 1] pixels as Zoobot trained it (not mean %s, std %s)",
            name_or_path,
            mean,
            std,
        )
        mean, std = ZOOBOT_MEAN, ZOOBOT_STD
    return LoadedModel(
        model=model,
        image_size=image_size or (size, size),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        init=init,
        base_model=base_model,
        model_type=model.config.model_type,
        processor=processor,
        processor_geometry=processor_geometry(processor) if processor is not None else None,
    )
