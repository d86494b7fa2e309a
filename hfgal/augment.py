"""On-device augmentation for GZ10 batches: dihedral views, small affine jitter, normalisation.

Everything here works on whole batches of `(B, 3, H, W)` tensors already on the training device, so the data
loader only moves uint8 pixels and the model is the only cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dihedral_view(images: torch.Tensor, k: int) -> torch.Tensor:
    """Return view `k` (0-7) of the dihedral group D4: `k % 4` quarter turns, then a flip if `k >= 4`."""
    out = torch.rot90(images, k % 4, dims=(-2, -1))
    return out.flip(-1) if k >= 4 else out


def dihedral_views(images: torch.Tensor) -> torch.Tensor:
    """All 8 D4 views of a batch, stacked view-major: `(8, B, C, H, W)`."""
    return torch.stack([dihedral_view(images, k) for k in range(8)])


def random_dihedral(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply an independent random D4 view to every image of a `(B, C, H, W)` batch.

    GZ10 galaxies have no preferred orientation: the 8 dihedral views are equally real.
    """
    b = images.shape[0]
    k = torch.randint(0, 8, (b,), device=images.device, generator=generator)
    out = images
    # Rotations and flips are permutations of pixels: apply each of the 4 rotations to the images drawn for it,
    # then flip the half drawn with k >= 4. 4 batched ops instead of one per image.
    rotated = torch.empty_like(out)
    for r in range(4):
        mask = (k % 4) == r
        if mask.any():
            rotated[mask] = torch.rot90(out[mask], r, dims=(-2, -1))
    flip = (k >= 4).view(b, 1, 1, 1)
    return torch.where(flip, rotated.flip(-1), rotated)


def random_affine(
    images: torch.Tensor,
    max_translate: float = 0.05,
    scale_range: tuple[float, float] = (0.9, 1.1),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Small random translation and isotropic scale of a float `(B, C, H, W)` batch, one grid_sample call.

    Args:
        images: float batch on any device.
        max_translate: largest shift as a fraction of the image side.
        scale_range: zoom factors drawn uniformly (>1 zooms in).

    Returns:
        The transformed batch; pixels pulled from outside the image are filled by reflection (sky-like).
    """
    b = images.shape[0]
    device, dtype = images.device, images.dtype
    u = torch.rand(b, 3, device=device, generator=generator, dtype=torch.float32)
    scale = scale_range[0] + (scale_range[1] - scale_range[0]) * u[:, 0]
    shift = (u[:, 1:] * 2 - 1) * max_translate * 2  # grid coords span [-1, 1]
    theta = torch.zeros(b, 2, 3, device=device, dtype=torch.float32)
    theta[:, 0, 0] = 1 / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False).to(
        dtype
    )


def normalize(
    images_uint8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 `(B, 3, H, W)` -> normalised float `(B, 3, H, W)`: `(x / 255 - mean) / std`, fused in one pass."""
    mean_t = torch.tensor(mean, device=images_uint8.device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    std_t = torch.tensor(std, device=images_uint8.device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    return ((images_uint8.float() - mean_t) / std_t).to(dtype)
