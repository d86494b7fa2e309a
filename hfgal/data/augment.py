"""On-device augmentation for GZ10 batches: dihedral views, small affine jitter, normalisation.

Everything here works on whole batches of `(B, 3, H, W)` tensors already on the training device, so the data
loader only moves uint8 pixels and the model is the only cost.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def dihedral_view(images: torch.Tensor, k: int) -> torch.Tensor:
    """Return view `k` (0-7) of the dihedral group D4: `k % 4` quarter turns, then a flip if `k >= 4`."""
    out = torch.rot90(images, k % 4, dims=(-2, -1))
    return out.flip(-1) if k >= 4 else out


def _dihedral_flags(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """View `k` of `dihedral_view` as (transpose, flip rows, flip columns), applied in that order."""
    r = k % 4
    transpose = (k % 2) == 1
    flip_rows = (r == 1) | (r == 2)
    flip_cols = ((r == 2) | (r == 3)) ^ (k >= 4)
    return transpose, flip_rows, flip_cols


def random_dihedral(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply an independent random D4 view to every image of a square `(B, C, H, W)` batch.

    GZ10 galaxies have no preferred orientation: the 8 dihedral views are equally real. Image `i` gets
    `dihedral_view(images[i], k[i])` with `k` drawn uniformly from 0-7.
    """
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"random D4 views need square images, got {tuple(images.shape[-2:])}")
    b = images.shape[0]
    k = torch.randint(0, 8, (b,), device=images.device, generator=generator)
    # Every D4 element is a transpose and/or a flip of rows and/or columns: three batched selects, with no
    # boolean indexing (which would wait on the device for the number of images drawn for each view).
    transpose, flip_rows, flip_cols = (f.view(b, 1, 1, 1) for f in _dihedral_flags(k))
    out = torch.where(transpose, images.transpose(-2, -1), images)
    out = torch.where(flip_rows, out.flip(-2), out)
    return torch.where(flip_cols, out.flip(-1), out)


def _affine_coords(
    images: torch.Tensor, max_translate: float, scale_range: tuple[float, float], generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a zoom and shift per image; return where its output columns `(B, 1, W)` and rows `(B, H, 1)` sample.

    Coordinates are `F.grid_sample`'s (the image spans [-1, 1]), equal bit for bit to those of
    `F.affine_grid` with `theta = [[1/scale, 0, shift_x], [0, 1/scale, shift_y]]`. The map is axis-aligned, so each
    coordinate depends on one pixel axis only: two broadcast multiply-adds instead of affine_grid's
    `(B, H*W, 3) @ (3, 2)` batched matmul.
    """
    b, _, h, w = images.shape
    device = images.device
    u = torch.rand(b, 3, device=device, generator=generator, dtype=torch.float32)
    scale = scale_range[0] + (scale_range[1] - scale_range[0]) * u[:, 0]
    shift = (u[:, 1:] * 2 - 1) * max_translate * 2  # grid coords span [-1, 1]
    inv_scale = (1 / scale).view(b, 1, 1)
    source_x = inv_scale * _base_coords(w, device).view(1, 1, w) + shift[:, 0].view(b, 1, 1)
    source_y = inv_scale * _base_coords(h, device).view(1, h, 1) + shift[:, 1].view(b, 1, 1)
    return source_x, source_y


def _base_coords(n: int, device) -> torch.Tensor:
    # Pixel centres in grid coordinates, computed as `F.affine_grid(..., align_corners=False)` does.
    return torch.linspace(-1, 1, n, device=device, dtype=torch.float32) * (n - 1) / n


def _grid_sample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.to(images.dtype)


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
    b, _, h, w = images.shape
    source_x, source_y = _affine_coords(images, max_translate, scale_range, generator)
    grid = torch.empty(b, h, w, 2, device=images.device, dtype=torch.float32)  # filled in place, no temporaries
    grid[..., 0] = source_x
    grid[..., 1] = source_y
    return _grid_sample(images, grid)


def random_dihedral_affine(
    images: torch.Tensor,
    max_translate: float = 0.05,
    scale_range: tuple[float, float] = (0.9, 1.1),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`random_affine(random_dihedral(images))` in a single resampling of a square float `(B, C, H, W)` batch.

    A D4 view maps the pixel grid onto itself, so it folds into the affine sampling grid as a sign change and/or
    swap of the grid's two coordinates: the result equals the two-step version up to float rounding, from the same
    random draws (the views first, then the affine parameters), at the cost of `random_affine` alone.
    """
    b, _, h, w = images.shape
    if h != w:
        raise ValueError(f"random D4 views need square images, got {(h, w)}")
    k = torch.randint(0, 8, (b,), device=images.device, generator=generator)
    # Where the affine map sends output pixel (x, y) in the D4 view, (B, 1, W) and (B, H, 1) ...
    view_x, view_y = _affine_coords(images, max_translate, scale_range, generator)
    # ... and where that point of the view lies in the original image: flips negate, the transpose swaps.
    transpose, flip_rows, flip_cols = _dihedral_flags(k)
    view_x = torch.where(flip_cols.view(b, 1, 1), -view_x, view_x)
    view_y = torch.where(flip_rows.view(b, 1, 1), -view_y, view_y)
    swap = transpose.view(b, 1, 1)
    grid = torch.empty(b, h, w, 2, device=images.device, dtype=torch.float32)
    torch.where(swap, view_y, view_x, out=grid[..., 0])
    torch.where(swap, view_x, view_y, out=grid[..., 1])
    return _grid_sample(images, grid)


def normalize(
    images_uint8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 `(B, 3, H, W)` -> normalised float `(B, 3, H, W)`: `(x / 255 - mean) / std`, in two passes."""
    mean_t, std_t = _pixel_stats(tuple(mean), tuple(std), images_uint8.device)
    # One float copy, then in place: the same values bit for bit as `(x.float() - mean_t) / std_t`. A mixed
    # uint8 - float32 subtraction would save the copy but runs unvectorised on a CPU (1.8x slower with hfgal's
    # allocator setting on one thread, 9x without it).
    return images_uint8.to(torch.float32).sub_(mean_t).div_(std_t).to(dtype)


@functools.lru_cache(maxsize=16)
def _pixel_stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
    # Built once per device: a fresh host-to-GPU copy at every step would make the host wait for the GPU.
    mean_t = torch.tensor(mean, device=device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    std_t = torch.tensor(std, device=device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    return mean_t, std_t
