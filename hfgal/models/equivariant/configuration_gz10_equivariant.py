"""Configuration of the rotation-equivariant galaxy classifier (`model_type` `gz10_equivariant`).

Self-contained on purpose: this file imports only `transformers`, so it can be copied into a Hub repo next to
`modeling_gz10_equivariant.py` and loaded with `trust_remote_code=True` by someone who never installed hfgal.
"""

from __future__ import annotations

import re

from transformers import PretrainedConfig

GROUP_PATTERN = re.compile(r"^([CD])([1-9][0-9]*)$")


def parse_group(group: str) -> tuple[bool, int]:
    """`"D16"` -> (True, 16): whether the group has reflections (dihedral D_N) or not (cyclic C_N), and N."""
    match = GROUP_PATTERN.match(str(group))
    if not match:
        raise ValueError(f"group {group!r} is not valid; use C<N> (rotations) or D<N> (rotations and flips), e.g. D4")
    return match.group(1) == "D", int(match.group(2))


class GZ10EquivariantConfig(PretrainedConfig):
    r"""Configuration of a group-equivariant CNN (GCNN) for galaxy images, invariant to the rotations (and flips)
    of a discrete group.

    The network lifts the image to feature fields over the group (one channel per field and group element, the
    regular representation), stacks group convolutions (kernels rotated/flipped for every group element), and pools
    over space and then over the group, so the logits do not change when the input is rotated by an element of the
    group. With `filter_basis="free"` (groups whose rotations are multiples of 90 degrees: C1, C2, C4, D1, D2, D4) the
    kernels are free 3x3 (or kxk) arrays rotated and flipped on the pixel grid, which is exact. Finer groups (C8, D8,
    D16, ...) use `"steerable"` kernels: combinations of radial rings times angular harmonics cos/sin(m phi),
    sampled at the rotated grid coordinates, which is exact for the 90-degree subgroup and approximate in between.

    Args:
        group: `C<N>` (N rotations) or `D<N>` (N rotations and their mirror images); `C1` is a plain CNN of the same
            architecture.
        num_channels: input channels (3 for g/r/z colour images).
        image_size: the input side the model is meant for (the recipe's default `--image_size`).
        kernel_size: odd side of every convolution kernel.
        filter_basis: `free`, `steerable`, or `auto` (free when every rotation of the group is a multiple of 90
            degrees, steerable otherwise).
        max_frequency: highest angular frequency of the steerable basis (per ring of radius r, at most
            `max_frequency` and at most 2r).
        ring_sigmas: radial widths (pixels) of the steerable basis' Gaussian rings at radii 0, 1, ..., (k-1)/2;
            `None` gives every ring 0.6. escnn's default for 3x3 kernels, which the published GCNNs use, is
            `[0.005, 0.4]` (a point at the centre, a narrow ring through the 8 neighbours).
        stem_size: fields of the lifting convolution.
        stem_stride: 1, or 2 to downsample right after the lifting convolution (the published GCNNs do).
        stem_padding: zero padding of the lifting convolution (default `kernel_size // 2`).
        hidden_sizes: the stages, each one width (fields of each of its `depths[i]` layers) or a list of per-layer
            widths (then `depths` follows from it). Every stage but the first starts by halving the resolution.
        depths: group convolutions per stage (only needed where a stage is given as one width).
        last_layer_padding: zero padding of the last group convolution (default `kernel_size // 2`; 0 shrinks the
            map by `kernel_size - 1`, as the published GCNN's last layer does).
        pool_after_last_stage: halve the resolution once more after the last stage, before the global pooling.
        pool_blur_sigma: standard deviation (pixels) of the Gaussian blur before each downsampling (antialiasing,
            which keeps the network close to equivariant to rotations between the 90-degree ones); 0 disables it.
        group_pooling: `max` or `mean` over the group axis after global spatial averaging.
        input_mask: multiply the input by a disc (soft edge) so the image corners, which rotate out of the frame,
            carry no signal.
        dropout: dropout before the classifier.
        batch_norm_eps: epsilon of the batch norms (one statistic per field, shared over its group channels).
    """

    model_type = "gz10_equivariant"

    def __init__(
        self,
        group: str = "D4",
        num_channels: int = 3,
        image_size: int = 64,
        kernel_size: int = 3,
        filter_basis: str = "auto",
        max_frequency: int = 2,
        ring_sigmas: list[float] | None = None,
        stem_size: int = 4,
        stem_stride: int = 1,
        stem_padding: int | None = None,
        hidden_sizes: list[int | list[int]] | None = None,
        depths: list[int] | None = None,
        last_layer_padding: int | None = None,
        pool_after_last_stage: bool = False,
        pool_blur_sigma: float = 0.66,
        group_pooling: str = "max",
        input_mask: bool = True,
        dropout: float = 0.0,
        batch_norm_eps: float = 1e-5,
        **kwargs,
    ):
        reflections, order = parse_group(group)
        hidden_sizes, depths = _stages(hidden_sizes if hidden_sizes is not None else [8, 16, 32], depths)
        if stem_size < 1:
            raise ValueError(f"stem_size {stem_size} must be positive")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size {kernel_size} must be odd (a kernel centred on its pixel rotates onto itself)"
            )
        if filter_basis == "auto":
            filter_basis = "free" if 4 % order == 0 else "steerable"
        if filter_basis not in ("free", "steerable"):
            raise ValueError(f"filter_basis {filter_basis!r} must be free, steerable or auto")
        if filter_basis == "free" and 4 % order:
            raise ValueError(f"free kernels rotate exactly only by multiples of 90 degrees; {group} needs steerable")
        if group_pooling not in ("max", "mean"):
            raise ValueError(f"group_pooling {group_pooling!r} must be max or mean")
        if pool_blur_sigma < 0:
            raise ValueError(f"pool_blur_sigma {pool_blur_sigma} must be >= 0")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride {stem_stride} must be 1 or 2")
        for name, padding in (("stem_padding", stem_padding), ("last_layer_padding", last_layer_padding)):
            if padding is not None and not 0 <= padding <= kernel_size:
                raise ValueError(f"{name} {padding} must be between 0 and kernel_size {kernel_size}")
        if ring_sigmas is not None and (len(ring_sigmas) != kernel_size // 2 + 1 or min(ring_sigmas) <= 0):
            raise ValueError(f"ring_sigmas {ring_sigmas} must be {kernel_size // 2 + 1} positive widths, one per ring")
        self.group = f"{'D' if reflections else 'C'}{order}"
        self.num_channels = num_channels
        self.image_size = image_size
        self.kernel_size = kernel_size
        self.filter_basis = filter_basis
        self.max_frequency = max_frequency
        self.ring_sigmas = None if ring_sigmas is None else [float(v) for v in ring_sigmas]
        self.stem_size = stem_size
        self.stem_stride = stem_stride
        self.stem_padding = stem_padding
        self.hidden_sizes = hidden_sizes
        self.depths = depths
        self.last_layer_padding = last_layer_padding
        self.pool_after_last_stage = bool(pool_after_last_stage)
        self.pool_blur_sigma = pool_blur_sigma
        self.group_pooling = group_pooling
        self.input_mask = input_mask
        self.dropout = dropout
        self.batch_norm_eps = batch_norm_eps
        super().__init__(**kwargs)

    @property
    def group_order(self) -> int:
        """Number of group elements |G| (channels per field)."""
        reflections, order = parse_group(self.group)
        return order * (2 if reflections else 1)

    @property
    def stage_widths(self) -> list[list[int]]:
        """Fields of every group convolution after the lifting one, stage by stage."""
        stages = zip(self.hidden_sizes, self.depths, strict=True)
        return [list(w) if isinstance(w, list) else [w] * d for w, d in stages]


def _stages(hidden_sizes: list, depths: list[int] | None) -> tuple[list, list[int]]:
    """Check the stages and fill in `depths` where a stage lists its per-layer widths."""
    hidden_sizes = [list(w) if isinstance(w, (list, tuple)) else w for w in hidden_sizes]
    implied = [len(w) if isinstance(w, list) else None for w in hidden_sizes]
    if depths is None:
        depths = [n or 1 for n in implied]
    depths = list(depths)
    if len(hidden_sizes) != len(depths) or not hidden_sizes:
        raise ValueError(f"hidden_sizes {hidden_sizes} and depths {depths} must be non-empty and of equal length")
    if any(n is not None and n != d for n, d in zip(implied, depths, strict=True)):
        raise ValueError(
            f"depths {depths} disagree with the per-layer widths of hidden_sizes {hidden_sizes}; "
            "set depths to null (or leave it out) where stages list their widths"
        )
    widths = [v for w in hidden_sizes for v in (w if isinstance(w, list) else [w])]
    if not widths or min(widths) < 1 or min(depths) < 1:
        raise ValueError(f"hidden_sizes {hidden_sizes} and depths {depths} must be positive")
    return hidden_sizes, depths


__all__ = ["GZ10EquivariantConfig", "parse_group"]
