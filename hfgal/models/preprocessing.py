"""Each backbone's own image processor as a `Geometry`: the side it resizes to, the centre it keeps, its filter.

hfgal resizes the whole cutout to the model's input size; a backbone's processor may instead resize a little larger
and keep the centre (ConvNeXt's `crop_pct` 0.875: 256 px, then the central 224 px; timm's `crop_pct`; DINOv2's
256 -> 224). The `poster` protocol, which reproduces the seed study, prepares images the processor's way.
"""

from __future__ import annotations

import math
from typing import Any

from ..data.geometry import PIL_FILTERS, Geometry


def _get(config: Any, key: str) -> Any:
    if config is None:
        return None
    if isinstance(config, dict):
        return config.get(key)
    return getattr(config, key, None)


def processor_geometry(processor: Any) -> Geometry:
    """The geometry an image processor applies to a square image (transformers processors and timm's).

    Args:
        processor: an `ImageProcessor` (`size`, `do_center_crop`/`crop_size`, ConvNeXt's `crop_pct`, `resample`)
            or a `TimmWrapperImageProcessor` (timm `data_config`: `input_size`, `crop_pct`, `interpolation`).

    Returns:
        The `Geometry`; a processor that does not crop gives `resize == size`.
    """
    data_config = getattr(processor, "data_config", None)
    if data_config:  # timm: Resize(floor(size / crop_pct)) then CenterCrop(size), as timm.data.transforms_factory
        size = int(data_config["input_size"][-1])
        crop_pct = float(data_config.get("crop_pct") or 1.0)
        resample = str(data_config.get("interpolation") or "bilinear")
        return Geometry(size, math.floor(size / crop_pct), resample if resample in PIL_FILTERS.values() else "bicubic")
    resample = PIL_FILTERS.get(int(getattr(processor, "resample", 2) or 2), "bilinear")
    size_cfg = getattr(processor, "size", None)
    shortest = _get(size_cfg, "shortest_edge")
    side = int(shortest or _get(size_cfg, "height") or _get(size_cfg, "width") or 224)
    crop_pct = getattr(processor, "crop_pct", None)
    if crop_pct and shortest:  # ConvNeXt: below 384 px, resize to size / crop_pct then crop; above, warp to size
        if side < 384:
            return Geometry(side, int(side / crop_pct), resample)
        return Geometry(side, side, resample)
    if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None) is not None:
        crop = int(_get(processor.crop_size, "height") or _get(processor.crop_size, "shortest_edge") or side)
        return Geometry(crop, max(side, crop), resample)
    return Geometry(side, side, resample)


def input_geometry(loaded: Any, preprocessing: str) -> Geometry | tuple[int, int]:
    """How training and serving prepare images for a loaded model (`hfgal.models.loading.LoadedModel`).

    Args:
        loaded: the loaded model (its `image_size` and, when it has a processor, `processor_geometry`).
        preprocessing: `resize` (hfgal: the whole image, to `image_size`) or `processor` (the checkpoint's own
            processor's resize and centre crop).

    Raises:
        HfgalError: `processor` for a model that has no image processor (a named config, a bare config folder).
    """
    from ..errors import HfgalError

    if preprocessing == "processor":
        if loaded.processor_geometry is None:
            raise HfgalError(
                "--preprocessing processor needs the checkpoint's image processor, and this model has none "
                "(a named config or a folder without preprocessor_config.json); use --preprocessing resize"
            )
        return loaded.processor_geometry
    height, width = loaded.image_size
    return Geometry(height) if height == width else (height, width)
