"""Measuring how invariant a classifier is to rotations of its input (any model, equivariant or not).

`rotation_invariance(model, images, angles, ...)` rotates full-resolution galaxy images about their centre (bilinear),
resizes them to the model's input as hfgal's cache does (antialiased), and compares the logits with those of the
unrotated images. Two numbers per angle:

- `relative_change`: mean over images of |logits(R x) - logits(x)|, divided by the mean distance of the images'
  logits from their batch mean. 0 is perfect invariance; about 1 means a rotation moves a galaxy's output as far as
  an average galaxy sits from the average output.
- `agreement`: the fraction of images whose predicted class does not change.

Rotating pixels by an angle that is not a multiple of 90 degrees interpolates them, and the image corners leave the
frame: no classifier can be exactly invariant to that, so the numbers are a measurement, not a pass/fail test.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class InvarianceAtAngle:
    """How much the logits move when every image is rotated by `degrees`."""

    degrees: float
    relative_change: float
    agreement: float


def rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate a float `(B, C, H, W)` batch about its centre by `degrees` (bilinear; zeros enter at the corners)."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    matrix = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=torch.float32, device=images.device)
    grid = F.affine_grid(matrix.expand(images.shape[0], 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def model_inputs(
    images: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float], degrees: float = 0.0
) -> torch.Tensor:
    """Rotated model inputs from `(B, 3, H, W)` uint8 images: rotate at full resolution, resize, normalise."""
    pixels = rotate(images.float() / 255.0, degrees) if degrees else images.float() / 255.0
    pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean_t = torch.tensor(mean, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)
    return (pixels - mean_t) / std_t


@torch.no_grad()
def rotation_invariance(
    model: Any,
    images: torch.Tensor,
    angles: Sequence[float],
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> list[InvarianceAtAngle]:
    """Measure the rotation invariance of an image classifier's logits, angle by angle.

    Args:
        model: a transformers image classifier (`model(pixel_values=...).logits`), put in eval mode here.
        images: `(B, 3, H, W)` uint8 galaxy images at full resolution (at least 2).
        angles: rotations in degrees.
        size: the model's input side.
        mean, std: the model's normalisation of 0-1 pixels.

    Returns:
        One `InvarianceAtAngle` per angle.
    """
    model.eval()
    device = next(model.parameters()).device

    def logits(degrees: float) -> torch.Tensor:
        pixel_values = model_inputs(images.to(device), size, mean, std, degrees)
        return model(pixel_values=pixel_values).logits.float()

    reference = logits(0.0)
    spread = (reference - reference.mean(0, keepdim=True)).norm(dim=-1).mean().clamp_min(1e-12)
    out = []
    for degrees in angles:
        rotated = logits(degrees)
        change = (rotated - reference).norm(dim=-1).mean() / spread
        agreement = (rotated.argmax(-1) == reference.argmax(-1)).float().mean()
        out.append(InvarianceAtAngle(float(degrees), float(change), float(agreement)))
    return out
