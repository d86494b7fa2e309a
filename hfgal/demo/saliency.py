"""Where did the model look? Occlusion sensitivity maps that work for any image classifier.

Grad-CAM needs a convolutional layer to hook and gradient saliency is noisy on vision transformers; occlusion
needs only forward passes, so the same code explains ConvNeXt, ViT, Swin and timm checkpoints alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL import Image


def occlusion_masks(size: int, grid: int = 5, window: float = 1 / 3) -> torch.Tensor:
    """Square occluders on a `grid x grid` lattice of centres covering a `size x size` image.

    Args:
        size: side of the (square) model input in pixels.
        grid: number of occluder centres per side; `grid**2` forward passes are needed.
        window: occluder side as a fraction of the image side. Overlapping windows give a smooth map.

    Returns:
        A `(grid**2, 1, size, size)` bool tensor, True where the occluder covers the image.
    """
    import torch

    if grid < 1 or not 0 < window <= 1:
        raise ValueError(f"grid must be >= 1 and window in (0, 1], got grid={grid}, window={window}")
    half = max(1.0, window * size / 2)
    centres = torch.linspace(0, size - 1, grid) if grid > 1 else torch.tensor([(size - 1) / 2])
    pixels = torch.arange(size, dtype=torch.float32)
    covered = (pixels[None, :] - centres[:, None]).abs() < half  # (grid, size): does centre i cover pixel j
    # (grid, grid, size, size): rows from the first centre index, columns from the second
    masks = covered[:, None, :, None] & covered[None, :, None, :]
    return masks.reshape(grid * grid, 1, size, size)


def occlusion_map(
    classifier: Any,
    image: Image.Image,
    *,
    target: int | None = None,
    grid: int = 5,
    window: float | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Occlusion sensitivity of `classifier` on `image`: how much hiding each region lowers the target class.

    Each occluder is filled with the sky level (per-channel median of the image border) rather than a grey
    square, so an occluded patch looks like empty sky, which the model saw during training.

    Args:
        classifier: a `hfgal.inference.GalaxyClassifier` (uses its `preprocess`, `model` and `device`).
        image: an RGB PIL image, as returned by `hfgal.inference.load_image`.
        target: class index to explain; the model's top class on the unoccluded image when None.
        grid: occluder centres per side (`grid**2` extra forward passes, run in batches).
        window: occluder side as a fraction of the input side; by default twice the spacing of the centres, so
            neighbouring occluders overlap and the map has no block edges.
        batch_size: occluded images per forward pass.

    Returns:
        A float32 `(S, S)` map in [0, 1] at the model's input resolution; 1 marks the region whose removal hurt
        the target probability most. All zeros when no occlusion lowered it.
    """
    import torch

    model = classifier.model
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device(classifier.device)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = classifier.preprocess([image]).to(device=device, dtype=torch.float32)  # (1, 3, S, S)
    size = x.shape[-1]
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)  # (1, 3, 4S)
    sky = border.median(dim=-1).values.view(1, -1, 1, 1)
    window = min(1.0, 2.0 / (grid + 1)) if window is None else window
    masks = occlusion_masks(size, grid, window).to(device)  # (N, 1, S, S)

    def probabilities(batch: torch.Tensor) -> torch.Tensor:
        logits = model(pixel_values=batch.to(dtype)).logits
        return logits.float().softmax(-1)

    with torch.inference_mode():
        base = probabilities(x)[0]
        target = int(base.argmax()) if target is None else int(target)
        drops = []
        for start in range(0, masks.shape[0], batch_size):
            chunk = masks[start : start + batch_size]
            occluded = torch.where(chunk, sky, x)  # (n, 3, S, S)
            drops.append(base[target] - probabilities(occluded)[:, target])
        drop = torch.cat(drops).clamp(min=0)  # (N,)
        weights = masks.float()
        heat = (drop.view(-1, 1, 1, 1) * weights).sum(0)[0] / weights.sum(0)[0].clamp(min=1)  # (S, S)
        peak = heat.max()
        if peak > 0:
            heat = heat / peak
    return heat.cpu().numpy().astype(np.float32)


def render_overlay(
    image: Image.Image, heat: np.ndarray, *, size: int = 384, alpha: float = 0.6, colormap: str = "inferno"
) -> Image.Image:
    """Blend a [0, 1] heat map over the image, strongest where the heat is high.

    The image is squashed to a square like the model input, so the map lines up with what the model saw.

    Args:
        image: the RGB image that was classified.
        heat: `(h, w)` map in [0, 1] (any resolution; resized bilinearly).
        size: side of the returned square image in pixels.
        alpha: opacity of the colour map where the heat is 1.
        colormap: a matplotlib colormap name.

    Returns:
        An RGB PIL image of `size x size` pixels.
    """
    from matplotlib import colormaps
    from PIL import Image

    base = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    heat_img = Image.fromarray(np.clip(heat, 0, 1).astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR)
    h = np.clip(np.asarray(heat_img, dtype=np.float32), 0, 1)
    colour = colormaps[colormap](h)[..., :3].astype(np.float32)
    weight = alpha * h[..., None]
    out = base * (1 - weight) + colour * weight
    return Image.fromarray((out * 255).round().astype(np.uint8))
