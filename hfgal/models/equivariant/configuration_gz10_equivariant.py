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
        stem_size: fields of the lifting convolution.
        stem_stride: 1, or 2 to downsample right after the lifting convolution (the published GCNNs do).
        hidden_sizes: fields of each stage (every stage but the first starts by halving the resolution).
        depths: group convolutions per stage.
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
        stem_size: int = 4,
        stem_stride: int = 1,
        hidden_sizes: list[int] | None = None,
        depths: list[int] | None = None,
        pool_blur_sigma: float = 0.66,
        group_pooling: str = "max",
        input_mask: bool = True,
        dropout: float = 0.0,
        batch_norm_eps: float = 1e-5,
        **kwargs,
    ):
        reflections, order = parse_group(group)
        hidden_sizes = list(hidden_sizes if hidden_sizes is not None else [8, 16, 32])
        depths = list(depths if depths is not None else [1] * len(hidden_sizes))
        if len(hidden_sizes) != len(depths) or not hidden_sizes:
            raise ValueError(f"hidden_sizes {hidden_sizes} and depths {depths} must be non-empty and of equal length")
        if min(hidden_sizes) < 1 or min(depths) < 1 or stem_size < 1:
            raise ValueError("hidden_sizes, depths and stem_size must be positive")
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
        self.group = f"{'D' if reflections else 'C'}{order}"
        self.num_channels = num_channels
        self.image_size = image_size
        self.kernel_size = kernel_size
        self.filter_basis = filter_basis
        self.max_frequency = max_frequency
        self.stem_size = stem_size
        self.stem_stride = stem_stride
        self.hidden_sizes = hidden_sizes
        self.depths = depths
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


__all__ = ["GZ10EquivariantConfig", "parse_group"]
