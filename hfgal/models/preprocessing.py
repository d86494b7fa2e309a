"""Each backbone's own input: the size and crop its image processor applies (`hfgal.data.geometry.Geometry`) and the
normalisation it really applies, which is not always what it states (EfficientNet divides twice; Zoobot encoders
were trained on [0, 1] pixels whatever their timm config says)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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


def processor_normalization(processor: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The `(x / 255 - mean) / std` an image processor applies: a timm processor's `data_config` mean/std, or what a
    transformers processor is measured to do (`effective_normalization`)."""
    data_config = processor if isinstance(processor, dict) else getattr(processor, "data_config", None)
    if data_config:
        mean, std = data_config.get("mean", IMAGENET_MEAN), data_config.get("std", IMAGENET_STD)
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)
    return effective_normalization(processor)


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
        outputs = []
        for level in (0, 128, 255):
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
