"""How a galaxy image becomes a model input: `Geometry` (the output size, an optional centre crop, the resampling
filter) and the image processor that applies it.

One preparation serves everything: a run's uint8 cache is filled by the very image processor the run folder saves
(`Geometry.image_processor`, resolved through `AutoImageProcessor` as `pipeline()` resolves it), so the pixels a
model was trained and evaluated on are the pixels `load_classifier`, `hfgal predict`, the Space and `pipeline()`
feed it. hfgal's own preparation resizes the whole cutout (nothing of the galaxy or its surroundings is cut away);
a backbone's own processor may resize larger and keep the centre (`Geometry.from_processor`), as the seed study did.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# PIL's resampling filters by their enum value, as transformers' processors store them.
PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
FILTER_IDS = {name: value for value, name in PIL_FILTERS.items()}


@dataclass(frozen=True)
class Geometry:
    """Resize the whole image to `size`, or (with `resize`) its shortest side to `resize` and keep the central
    `size`; with the `resample` filter.

    Args:
        size: the model's input, `(height, width)`; an int for a square.
        resize: the shortest side before the centre crop; None resizes the whole image to `size` (hfgal's default).
        resample: a PIL filter name (`bilinear`, `bicubic`, `nearest`, ...).
    """

    size: int | tuple[int, int]
    resize: int | None = None
    resample: str = "bilinear"

    def __post_init__(self):
        size = (self.size, self.size) if isinstance(self.size, int) else tuple(int(s) for s in self.size)
        object.__setattr__(self, "size", size[0] if size[0] == size[1] else size)
        if min(size) < 1:
            raise ValueError(f"input size {size} is not a size")
        if self.resize is not None and self.resize < min(size):
            raise ValueError(f"resize {self.resize} is smaller than the crop {size}")
        if self.resample not in FILTER_IDS:
            raise ValueError(f"unknown resampling filter {self.resample!r}")

    @property
    def height(self) -> int:
        return self.size if isinstance(self.size, int) else self.size[0]

    @property
    def width(self) -> int:
        return self.size if isinstance(self.size, int) else self.size[1]

    @property
    def crops(self) -> bool:
        return self.resize is not None

    def describe(self) -> str:
        if not self.crops:
            return f"whole image resized to {self.height} x {self.width} ({self.resample})"
        return f"resized to {self.resize} px ({self.resample}), central {self.height} x {self.width} kept"

    # ------------------------------------------------------------------ from and to image processors

    @classmethod
    def from_processor(cls, processor: Any) -> Geometry:
        """The geometry an image processor applies to a square cutout (transformers processors and timm's).

        Args:
            processor: an `ImageProcessor` (`size`, `do_center_crop`/`crop_size`, ConvNeXt's `crop_pct`,
                `resample`), a `TimmWrapperImageProcessor` or a timm data config / `pretrained_cfg` mapping.
        """
        data_config = processor if isinstance(processor, dict) else getattr(processor, "data_config", None)
        if data_config:
            return cls.from_timm(data_config)
        resample = getattr(processor, "resample", None)
        resample = PIL_FILTERS.get(int(resample) if resample is not None else 2, "bilinear")
        size_cfg = getattr(processor, "size", None)
        shortest = _get(size_cfg, "shortest_edge")
        height = int(shortest or _get(size_cfg, "height") or 224)
        width = int(shortest or _get(size_cfg, "width") or height)
        crop_pct = getattr(processor, "crop_pct", None)
        if crop_pct and shortest:  # ConvNeXt: below 384 px, resize to size / crop_pct then crop; above, warp to size
            return cls(height, int(height / crop_pct), resample) if height < 384 else cls(height, None, resample)
        crop = getattr(processor, "crop_size", None)
        if getattr(processor, "do_center_crop", False) and crop is not None:
            crop_h = int(_get(crop, "height") or _get(crop, "shortest_edge") or height)
            crop_w = int(_get(crop, "width") or crop_h)
            return cls((crop_h, crop_w), max(min(height, width), crop_h, crop_w), resample)
        return cls((height, width), None, resample)

    @classmethod
    def from_timm(cls, data_config: dict[str, Any]) -> Geometry:
        """timm's eval transform: `Resize(floor(size / crop_pct))` then `CenterCrop(size)`
        (`timm.data.transforms_factory.transforms_imagenet_eval`)."""
        height, width = (int(s) for s in data_config.get("input_size", (3, 224, 224))[-2:])
        crop_pct = float(data_config.get("crop_pct") or 1.0)
        resample = str(data_config.get("interpolation") or "bilinear")
        resample = resample if resample in FILTER_IDS else "bicubic"
        if crop_pct >= 1.0:
            return cls((height, width), None, resample)
        return cls((height, width), math.floor(min(height, width) / crop_pct), resample)

    def processor_config(self, mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, Any]:
        """The `preprocessor_config.json` of a standard transformers image processor that prepares images this
        way and normalises them as `(x / 255 - mean) / std`: `ViTImageProcessor` for a whole image,
        `CLIPImageProcessor` (shortest side, then centre crop) for a crop."""
        common = {
            "do_resize": True,
            "resample": FILTER_IDS[self.resample],
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": [float(m) for m in mean],
            "image_std": [float(s) for s in std],
        }
        if not self.crops:
            return {"image_processor_type": "ViTImageProcessor", "size": self._hw(), **common}
        return {
            "image_processor_type": "CLIPImageProcessor",
            "size": {"shortest_edge": self.resize},
            "do_center_crop": True,
            "crop_size": self._hw(),
            "do_convert_rgb": True,
            **common,
        }

    def image_processor(self, mean: tuple[float, ...] = (0.0,) * 3, std: tuple[float, ...] = (1.0,) * 3) -> Any:
        """The image processor of `processor_config`, as `AutoImageProcessor` (and so `pipeline()`) loads it from a
        saved folder: the same class and backend, hence the same pixels."""
        from transformers import AutoImageProcessor

        with tempfile.TemporaryDirectory(prefix="hfgal-processor-") as tmp:
            Path(tmp, "preprocessor_config.json").write_text(json.dumps(self.processor_config(mean, std)))
            return AutoImageProcessor.from_pretrained(tmp)

    def _hw(self) -> dict[str, int]:
        return {"height": self.height, "width": self.width}


def _get(config: Any, key: str) -> Any:
    if config is None:
        return None
    if isinstance(config, dict):
        return config.get(key)
    return getattr(config, key, None)


def processor_pixels(processor: Any, images: list) -> Any:
    """`(B, 3, H, W)` uint8 numpy pixels of PIL images, resized and cropped by `processor` but not normalised: what
    the processor feeds a model before its `(x / 255 - mean) / std`."""
    import numpy as np

    images = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
    # "pt": the tensor type every processor backend of every transformers 5.x returns (5.0's fast ones refuse "np").
    pixels = processor(images=images, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"]
    return np.asarray(pixels.numpy()).round().astype(np.uint8)  # integer-valued already: resizing ran on uint8 pixels
