"""A rotation-equivariant galaxy classifier (group-equivariant CNN) as a transformers `PreTrainedModel`.

Galaxies have no preferred orientation. Instead of leaving that to data augmentation, the network builds it in: the
image is lifted to feature fields over a rotation group G (one channel per field and group element), every kernel is
used in all its rotated (and flipped) copies, and the final features are pooled over space and then over G, so the
logits of a rotated image equal those of the original (exactly for rotations by multiples of 90 degrees and flips,
approximately for the finer rotations of C8/D8/D16). The design follows group convolutions (Cohen & Welling 2016)
and the E(2)-steerable GCNNs that reached 95.5 % on Galaxy10 DECaLS (Pandya et al. 2023, arXiv:2311.01500).

Self-contained on purpose: this file imports only torch, transformers and its sibling configuration file, so it can
be copied into a Hub repo and loaded with `trust_remote_code=True` without hfgal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput

from .configuration_gz10_equivariant import GZ10EquivariantConfig, parse_group

try:  # transformers >= 5: initialisers that leave loaded weights alone
    from transformers import initialization as init
except ImportError:  # transformers 4
    init = None

RING_WIDTH = 0.6  # standard deviation (pixels) of the radial Gaussian rings of steerable kernels


# --------------------------------------------------------------------------- the group and its kernel bases


def group_matrices(group: str) -> torch.Tensor:
    """The 2x2 matrices of every element of C_N or D_N acting on (column, row) offsets, `(|G|, 2, 2)` float64.

    Element `s * N + r` is the rotation by `2 pi r / N` after the mirror `(x, y) -> (-x, y)` when `s == 1`. Built on
    the CPU even inside a meta-device context (transformers 5 instantiates models on `meta` before loading weights).
    """
    reflections, order = parse_group(group)
    mats = []
    for s in range(2 if reflections else 1):
        mirror = torch.tensor([[-1.0 if s else 1.0, 0.0], [0.0, 1.0]], dtype=torch.float64, device="cpu")
        for r in range(order):
            angle = 2 * math.pi * r / order
            c, si = math.cos(angle), math.sin(angle)
            mats.append(torch.tensor([[c, -si], [si, c]], dtype=torch.float64, device="cpu") @ mirror)
    return torch.stack(mats)


def inverse_products(mats: torch.Tensor) -> torch.Tensor:
    """`table[g, h]` = the index of the element `g^-1 h`, `(|G|, |G|)` int64."""
    products = torch.einsum("gji,hjk->ghik", mats, mats)  # M_g^T M_h = M_g^-1 M_h (orthogonal matrices)
    distance = (products.unsqueeze(2) - mats.view(1, 1, -1, 2, 2)).abs().flatten(-2).amax(-1)
    return distance.argmin(-1)


def kernel_offsets(kernel_size: int) -> torch.Tensor:
    """(column, row) offsets of the kernel's pixels in `F.conv2d` order, `(k*k, 2)` float64."""
    half = (kernel_size - 1) / 2
    axis = torch.arange(kernel_size, dtype=torch.float64, device="cpu") - half
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([cols.flatten(), rows.flatten()], dim=-1)


def free_basis(group: str, kernel_size: int) -> torch.Tensor:
    """`basis[g, b, p]`: pixel `b` of a free kernel lands on pixel `p` of its copy transformed by g (0/1 entries).

    Exact on the pixel grid for groups of 90-degree rotations and flips, which map the grid onto itself.
    """
    mats, offsets = group_matrices(group), kernel_offsets(kernel_size)
    # The copy for g takes, at pixel p, the value of the kernel at g^-1 p.
    sources = torch.einsum("gji,pj->gpi", mats, offsets)  # (G, k*k, 2): g^-1 p
    match = (sources.unsqueeze(2) - offsets.view(1, 1, -1, 2)).abs().amax(-1) < 1e-6  # (G, p, b)
    if not bool((match.sum(-1) == 1).all()):
        raise ValueError(f"{group} does not map the {kernel_size}x{kernel_size} grid onto itself; use steerable")
    return match.transpose(1, 2).to(torch.float64)


def steerable_basis(
    group: str, kernel_size: int, max_frequency: int, ring_sigmas: list[float] | None = None
) -> torch.Tensor:
    """`basis[g, b, p]`: steerable kernel `b` (a Gaussian ring times cos or sin of m phi) rotated by g, at pixel p.

    Rings sit at radii 0, 1, ..., (k-1)/2 with widths `ring_sigmas` (default 0.6 px each); a ring of radius r
    carries angular frequencies up to min(max_frequency, 2r) (higher ones alias on a pixel grid). Each function is
    rotated analytically and then sampled, so the copies for rotations by multiples of 90 degrees are exact and the
    others as good as the grid allows.
    """
    mats, offsets = group_matrices(group), kernel_offsets(kernel_size)
    sources = torch.einsum("gji,pj->gpi", mats, offsets)  # (G, k*k, 2): g^-1 p
    radius = sources.norm(dim=-1)
    angle = torch.atan2(sources[..., 1], sources[..., 0])
    functions = []
    for ring in range(kernel_size // 2 + 1):
        sigma = RING_WIDTH if ring_sigmas is None else ring_sigmas[ring]
        profile = torch.exp(-((radius - ring) ** 2) / (2 * sigma**2))
        for m in range(min(max_frequency, 2 * ring) + 1):
            waves = [torch.ones_like(angle)] if m == 0 else [torch.cos(m * angle), torch.sin(m * angle)]
            for wave in waves:
                value = profile * wave
                if m > 0:  # the angle of the centre is undefined: only m = 0 may be non-zero there
                    value = torch.where(radius < 1e-9, torch.zeros_like(value), value)
                functions.append(value)
    basis = torch.stack(functions, dim=1)  # (G, B, k*k)
    return basis / basis[0].norm(dim=-1).view(1, -1, 1)


def kernel_basis(config: GZ10EquivariantConfig) -> torch.Tensor:
    if config.filter_basis == "free":
        return free_basis(config.group, config.kernel_size)
    return steerable_basis(config.group, config.kernel_size, config.max_frequency, config.ring_sigmas)


def expansion_index(config: GZ10EquivariantConfig, basis: torch.Tensor, lifting: bool) -> torch.Tensor:
    """Where each entry of the expanded kernel comes from, int64 (see `GroupConv2d.expanded_kernel`).

    Free kernels: the expanded kernel is a rearrangement of the weights, so the index points straight into the
    weights (`g^-1 h` and the source pixel). Steerable kernels: it points into the weights already combined with the
    transformed bases, picking for output element g the input-group slice `g^-1 h` (group convolutions only).
    """
    inverse = inverse_products(group_matrices(config.group))  # (G, G)
    order = basis.shape[0]
    if config.filter_basis == "free":
        source = basis.argmax(dim=1)  # (G, k*k): the weight that lands on pixel p of copy g
        if lifting:
            return source
        return inverse.unsqueeze(-1) * basis.shape[1] + source.unsqueeze(1)  # (G, G, k*k)
    if lifting:
        return torch.zeros(0, dtype=torch.long, device="cpu")
    return inverse * order + torch.arange(order, device="cpu").view(-1, 1)  # (G, G): [g, h] -> the slice (g^-1 h, g)


# --------------------------------------------------------------------------- layers


class GroupConv2d(nn.Module):
    """Lifting (from `in_channels` image channels) or group convolution (from `in_channels` regular feature fields).

    Output channel `o * |G| + g` is field o seen by group element g; its kernel is the layer's kernel transformed by
    g, and for a group convolution the input's group axis is permuted by g as well (`g^-1 h`).
    """

    def __init__(
        self, config: GZ10EquivariantConfig, in_channels: int, out_fields: int, lifting: bool, padding: int | None
    ):
        super().__init__()
        self.kernel_size, self.group_order, self.lifting = config.kernel_size, config.group_order, lifting
        self.free = config.filter_basis == "free"
        self.padding = config.kernel_size // 2 if padding is None else padding
        basis = kernel_basis(config).float()
        self.register_buffer("basis", basis, persistent=False)  # (G, B, k*k)
        self.register_buffer("index", expansion_index(config, basis, lifting), persistent=False)
        group_axis = () if lifting else (self.group_order,)
        self.weight = nn.Parameter(torch.empty(out_fields, in_channels, *group_axis, basis.shape[1]))

    def fan_in(self) -> int:
        """Input channels times basis functions: the He initialisation of the expanded kernel."""
        width = self.weight.shape[1] * (1 if self.lifting else self.group_order)
        return width * self.weight.shape[-1]

    def expanded_kernel(self) -> torch.Tensor:
        """The ordinary conv2d kernel holding every transformed copy, `(O*|G|, I[*|G|], k, k)`."""
        weight, order, k = self.weight, self.group_order, self.kernel_size
        out_fields, in_channels = weight.shape[0], weight.shape[1]
        if self.free:  # a gather: (O, I, G, k*k) lifting, (O, I, G, G, k*k) group
            kernel = weight.flatten(2)[:, :, self.index]
        else:
            # Combine the weights with every transformed basis in one matmul: (O, I, [G_in,] B) @ (B, G * k*k)
            bases = self.basis.to(weight.dtype).transpose(0, 1).flatten(1)
            kernel = (weight @ bases).view(out_fields, in_channels, -1, k * k)
            if not self.lifting:  # output element g reads input element h through the slice g^-1 h
                kernel = kernel[:, :, self.index]
        # (O, I, G, [G,] k*k) -> (O, G, I, [G,] k*k): output channels field-major
        kernel = kernel.transpose(1, 2)
        width = in_channels * (1 if self.lifting else order)
        return kernel.reshape(out_fields * order, width, k, k)

    def forward(self, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        return F.conv2d(x, self.expanded_kernel(), stride=stride, padding=self.padding)


class FieldBatchNorm(nn.Module):
    """Batch norm with one statistic and one affine per field, shared by its |G| channels (keeps equivariance)."""

    def __init__(self, fields: int, group_order: int, eps: float):
        super().__init__()
        self.group_order = group_order
        self.norm = nn.BatchNorm3d(fields, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, F*G, H, W) -> (B, F, G, H, W): batch norm over everything but the field
        return self.norm(x.unflatten(1, (-1, self.group_order))).flatten(1, 2)

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The eval-mode batch norm as `x * scale + shift` per channel, `(F*G,)` each."""
        norm = self.norm
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        shift = norm.bias - norm.running_mean * scale
        return scale.repeat_interleave(self.group_order), shift.repeat_interleave(self.group_order)


class GroupConvLayer(nn.Module):
    """Group convolution, field batch norm, ReLU (a pointwise non-linearity commutes with permuted channels).

    In eval mode without autograd the batch norm is folded into the expanded kernel (one convolution with a bias),
    and that kernel is kept until a weight or a statistic changes or the layer goes back to training, so inference
    expands every kernel once (it holds |G| k*k / B floats per parameter meanwhile).
    """

    def __init__(self, config: GZ10EquivariantConfig, in_channels: int, out_fields: int, lifting=False, padding=None):
        super().__init__()
        self.conv = GroupConv2d(config, in_channels, out_fields, lifting, padding)
        self.norm = FieldBatchNorm(out_fields, config.group_order, config.batch_norm_eps)
        self.folded = None  # (key, kernel, bias) of the eval-mode convolution

    def forward(self, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        compiling = getattr(torch.compiler, "is_compiling", lambda: False)()  # torch < 2.3 has none
        if self.training or torch.is_grad_enabled() or compiling:
            return F.relu(self.norm(self.conv(x, stride)))
        kernel, bias = self.folded_kernel()
        return F.relu(F.conv2d(x, kernel, bias, stride=stride, padding=self.conv.padding))

    def train(self, mode: bool = True):
        self.folded = None
        return super().train(mode)

    def folded_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The expanded kernel scaled by the eval-mode batch norm, and its shift as a bias (cached)."""
        norm = self.norm.norm
        tensors = (self.conv.weight, norm.weight, norm.bias, norm.running_mean, norm.running_var)
        # Any in-place update (optimizer step, load_state_dict) bumps a tensor's version; .to() makes new tensors.
        key = tuple((t.data_ptr(), 0 if t.is_inference() else t._version, t.dtype, t.device) for t in tensors)
        key += (torch.is_inference_mode_enabled(),)
        if self.folded is None or self.folded[0] != key:
            scale, shift = self.norm.scale_and_shift()
            self.folded = (key, self.conv.expanded_kernel() * scale.view(-1, 1, 1, 1), shift)
        return self.folded[1], self.folded[2]


def gaussian_taps(sigma: float, like: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A normalised 1-d Gaussian of radius `ceil(2 sigma)` (at least 1), in `like`'s dtype and device."""
    radius = max(1, math.ceil(2 * sigma))
    taps = torch.arange(-radius, radius + 1, device=like.device, dtype=torch.float32)
    taps = torch.exp(-(taps**2) / (2 * sigma**2))
    return (taps / taps.sum()).to(like.dtype), radius


def halve(x: torch.Tensor, blur_sigma: float = 0.0) -> torch.Tensor:
    """Downsample by 2 with windows placed symmetrically about the centre, so 90-degree rotations and flips of the
    input commute with it. With a blur (antialiasing, isotropic, which makes it nearly commute with the other
    rotations as well): a Gaussian, then 2x2 averages on an even side or every other pixel on an odd one. Without:
    2x2 averages on an even side, 3x3 averages at stride 2 on an odd one."""
    even = x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0
    if blur_sigma <= 0:
        return F.avg_pool2d(x, 2) if even else F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
    taps, radius = gaussian_taps(blur_sigma, x)
    if even:  # the blur followed by 2x2 averages is one filter of 2 radius + 2 taps, centred between two pixels
        taps = F.conv1d(taps.view(1, 1, -1), taps.new_full((1, 1, 2), 0.5), padding=1).flatten()
    # One strided depthwise convolution: the blur is only evaluated where it is sampled (4x fewer outputs).
    window = (taps.view(-1, 1) * taps.view(1, -1)).expand(x.shape[1], 1, -1, -1)
    return F.conv2d(x, window, stride=2, padding=radius, groups=x.shape[1])


def disc_mask(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """1 inside the inscribed disc, a Gaussian fall-off over its outer 10 %, `(1, 1, H, W)`."""
    rows = torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2
    cols = torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2
    radius = (rows.view(-1, 1) ** 2 + cols.view(1, -1) ** 2).sqrt()
    edge = 0.9 * min(height, width) / 2
    falloff = 0.05 * min(height, width) / 2
    mask = torch.exp(-(((radius - edge).clamp(min=0) / falloff) ** 2))
    return mask.to(dtype).view(1, 1, height, width)


# --------------------------------------------------------------------------- models


class GZ10EquivariantPreTrainedModel(PreTrainedModel):
    config_class = GZ10EquivariantConfig
    config: GZ10EquivariantConfig
    base_model_prefix = "gcnn"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, GroupConv2d):
            # The bases are derived from the config, never loaded: rebuild them (also after meta-device loading).
            basis = kernel_basis(self.config).float()
            _copy(module.basis, basis)
            _copy(module.index, expansion_index(self.config, basis, module.lifting))
            _normal(module.weight, std=math.sqrt(2.0 / module.fan_in()))  # He init of the expanded kernel
        elif isinstance(module, nn.Linear):
            _normal(module.weight, std=0.01)
            if module.bias is not None:
                _zeros(module.bias)
        elif isinstance(module, nn.BatchNorm3d):
            _ones(module.weight)
            _zeros(module.bias)
            _zeros(module.running_mean)
            _ones(module.running_var)
            _zeros(module.num_batches_tracked)


def _normal(tensor: torch.Tensor, std: float) -> None:
    if init is not None:
        init.normal_(tensor, mean=0.0, std=std)
    else:
        with torch.no_grad():
            tensor.normal_(0.0, std)


def _copy(tensor: torch.Tensor, value: torch.Tensor) -> None:
    if init is not None:
        init.copy_(tensor, value)
    else:
        with torch.no_grad():
            tensor.copy_(value)


def _zeros(tensor: torch.Tensor) -> None:
    _copy(tensor, torch.zeros_like(tensor, device="cpu"))


def _ones(tensor: torch.Tensor) -> None:
    _copy(tensor, torch.ones_like(tensor, device="cpu"))


class GZ10EquivariantModel(GZ10EquivariantPreTrainedModel):
    """The equivariant backbone: lifting convolution, stages of group convolutions, invariant pooling.

    `last_hidden_state` is the final equivariant feature map `(B, F*|G|, h, w)`; `pooler_output` the invariant
    features `(B, F)` (global spatial mean, then max or mean over the group axis of each field).
    """

    def __init__(self, config: GZ10EquivariantConfig):
        super().__init__(config)
        self.stem = GroupConvLayer(config, config.num_channels, config.stem_size, True, config.stem_padding)
        stages, width, widths = [], config.stem_size, config.stage_widths
        for index, stage in enumerate(widths):
            layers = []
            for position, fields in enumerate(stage):
                last = index == len(widths) - 1 and position == len(stage) - 1
                padding = config.last_layer_padding if last else None
                layers.append(GroupConvLayer(config, width, fields, padding=padding))
                width = fields
            stages.append(nn.ModuleList(layers))
        self.stages = nn.ModuleList(stages)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple:
        config = self.config
        x = pixel_values.to(self.stem.conv.weight.dtype)  # (B, C, H, W)
        if config.input_mask:
            x = x * disc_mask(x.shape[-2], x.shape[-1], x.device, x.dtype)
        # A stride-2 sampling grid is symmetric about the centre only on an odd side; on an even one, pool instead.
        odd = x.shape[-1] % 2 == 1 and x.shape[-2] % 2 == 1
        if config.stem_stride == 2 and odd:
            x = self.stem(x, stride=2)
        else:
            x = self.stem(x)
            x = halve(x, config.pool_blur_sigma) if config.stem_stride == 2 else x
        hidden_states = [x]
        for index, stage in enumerate(self.stages):
            x = halve(x, config.pool_blur_sigma) if index > 0 else x  # like ConvNeXt, stage 0 keeps the stem's size
            for layer in stage:
                x = layer(x)
            hidden_states.append(x)
        if config.pool_after_last_stage:
            x = halve(x, config.pool_blur_sigma)
        fields = x.mean(dim=(-2, -1)).unflatten(1, (-1, config.group_order))  # (B, F, |G|)
        pooled = fields.amax(-1) if config.group_pooling == "max" else fields.mean(-1)
        hidden_states = tuple(hidden_states) if output_hidden_states else None
        if return_dict is False:
            return tuple(v for v in (x, pooled, hidden_states) if v is not None)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states
        )


class GZ10EquivariantForImageClassification(GZ10EquivariantPreTrainedModel):
    """The equivariant backbone with a linear head on its invariant features; returns `ImageClassifierOutput`."""

    def __init__(self, config: GZ10EquivariantConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.gcnn = GZ10EquivariantModel(config)
        self.dropout = nn.Dropout(config.dropout)
        width = config.stage_widths[-1][-1]
        self.classifier = nn.Linear(width, config.num_labels) if config.num_labels else nn.Identity()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        outputs = self.gcnn(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None if labels is None else self.classification_loss(logits, labels)
        if return_dict is False:
            return tuple(v for v in (loss, logits, outputs.hidden_states) if v is not None)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy for class ids, MSE for regression, BCE for multi-label (`config.problem_type`)."""
        problem = self.config.problem_type
        if problem is None:
            if self.num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.squeeze(-1).float())
        if problem == "single_label_classification":
            return F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


__all__ = [
    "GZ10EquivariantForImageClassification",
    "GZ10EquivariantModel",
    "GZ10EquivariantPreTrainedModel",
    "free_basis",
    "group_matrices",
    "halve",
    "steerable_basis",
]
