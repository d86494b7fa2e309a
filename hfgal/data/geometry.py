"""How an image becomes a model's input: the side it is resized to, the central crop kept, the resampling filter.

hfgal's own preprocessing resizes the whole cutout to the model's input size, so no part of the galaxy or its
surroundings is cut away (`Geometry(size)`). A backbone's own image processor may resize larger and keep the centre
(`hfgal.models.preprocessing.processor_geometry`). The uint8 cache and inference prepare images with `prepare_rgb`,
so served pixels are the pixels the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# PIL's resampling filters by their enum value, as transformers' processors store them.
PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class Geometry:
    """Resize the image so its shortest side is `resize`, keep the central `size` x `size`, with `resample`.

    With `resize == size` nothing is cropped, and the whole image is resized to a square (hfgal's default).
    """

    size: int
    resize: int | None = None
    resample: str = "bilinear"

    def __post_init__(self):
        if self.resize is None:
            object.__setattr__(self, "resize", self.size)
        if self.resize < self.size:
            raise ValueError(f"resize {self.resize} is smaller than the crop {self.size}")
        if self.resample not in PIL_FILTERS.values():
            raise ValueError(f"unknown resampling filter {self.resample!r}")

    @property
    def crops(self) -> bool:
        return self.resize > self.size

    def cache_key(self) -> str:
        """What tells this preparation apart in cache file names ('' for hfgal's default: whole image, bilinear)."""
        if not self.crops and self.resample == "bilinear":
            return ""
        return f"-resize{self.resize}-{self.resample}"

    def describe(self) -> str:
        if not self.crops:
            return f"whole image resized to {self.size} x {self.size} ({self.resample})"
        return f"resized to {self.resize} px ({self.resample}), central {self.size} x {self.size} kept"


def prepare_rgb(image, geometry: Geometry | tuple[int, int]) -> np.ndarray:
    """PIL image -> `(3, H, W)` uint8: RGB, resized and centre-cropped as `geometry` says.

    A `(height, width)` tuple resizes the whole image to that size (hfgal's default for non-square inputs).
    With a crop, the shortest side is resized to `geometry.resize` (aspect kept), then the centre is kept, as
    image processors do; without one the whole image is resized to the square.
    """

    image = image.convert("RGB")
    if isinstance(geometry, tuple):
        height, width, resample = geometry[0], geometry[1], "bilinear"
        if image.size != (width, height):
            image = image.resize((width, height), _filter(resample))
    elif not geometry.crops:
        if image.size != (geometry.size, geometry.size):
            image = image.resize((geometry.size, geometry.size), _filter(geometry.resample))
    else:
        w, h = image.size
        scale = geometry.resize / min(w, h)
        new = (max(geometry.size, round(w * scale)), max(geometry.size, round(h * scale)))
        if image.size != new:
            image = image.resize(new, _filter(geometry.resample))
        left, top = (new[0] - geometry.size) // 2, (new[1] - geometry.size) // 2
        image = image.crop((left, top, left + geometry.size, top + geometry.size))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def _filter(name: str):
    from PIL import Image

    return getattr(Image.Resampling, name.upper())
