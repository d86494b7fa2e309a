"""A GCNN's layers as a table (fields, map sizes, pooling, parameters, FLOPs), and the published D16 GCNN's.

`layer_table(config)` builds the model on the meta device and traces one image through it, so it costs no memory
or compute even for `gcnn-d16-base` at 255 px. `PUBLISHED_D16` is the D16 GCNN of Pandya et al. 2023
(arXiv:2311.01500) as its code builds it (github.com/snehjp2/GCNNMorphology, `src/scripts/models.py`,
`GeneralSteerableCNN(N=16, reflections=True)`), its parameters counted by instantiating that code's layers with
escnn 1.0.11.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Block:
    """One convolution block (convolution, batch norm, ReLU) and the pooling after it, if any."""

    block: int  # 1 is the lifting convolution
    fields: int  # regular fields out (|G| channels each)
    side: int  # side of the block's output map
    pooled_side: int | None  # side after the pooling that follows the block; None when none does
    params: int  # convolution and batch norm


# Published: (fields, output side, side after pooling or None, parameters of convolution + batch norm) per block.
# Blocks 2-11 have 192 weights per pair of regular fields (32 group elements x 6 basis kernels), block 1 has 6 per
# (input channel, field); each InnerBatchNorm has a weight and a bias per field.
PUBLISHED_D16 = tuple(
    Block(i + 1, *row)
    for i, row in enumerate(
        [
            (12, 129, None, 240),
            (24, 129, 65, 55_344),
            (48, 65, None, 221_280),
            (48, 65, 33, 442_464),
            (48, 33, None, 442_464),
            (48, 33, None, 442_464),
            (96, 33, 17, 884_928),
            (96, 17, None, 1_769_664),
            (96, 17, 9, 1_769_664),
            (112, 9, 5, 2_064_608),
            (192, 3, 2, 4_129_152),
        ]
    )
)
# The published head: group pooling of the 192 fields, then `PointwiseLinear` and `NormNonLinearity`, which escnn
# does not provide (the code does not run as published). Before its last clean-up (October 2023) the code pooled
# after blocks 2, 4, 7, 9 and 11 only (block 11 padded, a 5 x 5 map), then a 4,800-64-32-10 MLP with batch norm and
# ELU: 309,866 parameters, 12,532,138 in all.
PUBLISHED_D16_TRAINING_HEAD_PARAMS = 309_866


def layer_table(config: Any, image_size: int | None = None) -> tuple[list[Block], dict[str, int]]:
    """Trace one image through a GCNN built on the meta device and describe its blocks.

    Args:
        config: a `GZ10EquivariantConfig`.
        image_size: the input side (default `config.image_size`).

    Returns:
        The blocks, and totals: `params` (the whole classifier), `head_params` (everything but the blocks) and
        `forward_flops` per image (`torch.utils.flop_counter`: convolutions, pooling filters and the head).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .modeling_gz10_equivariant import GroupConvLayer, GZ10EquivariantForImageClassification

    side = image_size or config.image_size
    with torch.device("meta"):
        model = GZ10EquivariantForImageClassification(config)  # training mode: no eval-time kernel cache
    layers = [m for m in model.modules() if isinstance(m, GroupConvLayer)]
    sides: dict[int, tuple[int, int]] = {}  # block index -> (input side, output side)
    hooks = [
        layer.register_forward_hook(
            lambda module, args, out, i=i: sides.__setitem__(i, (args[0].shape[-1], out.shape[-1]))
        )
        for i, layer in enumerate(layers)
    ]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = model.gcnn(torch.empty(1, config.num_channels, side, side, device="meta"))
            model.classifier(out.pooler_output)
    finally:
        for hook in hooks:
            hook.remove()
    final_side = out.last_hidden_state.shape[-1]
    blocks = []
    for i, layer in enumerate(layers):
        following = sides[i + 1][0] if i + 1 < len(layers) else final_side
        out_side = sides[i][1]
        params = sum(p.numel() for p in layer.parameters())
        fields = layer.conv.weight.shape[0]
        blocks.append(Block(i + 1, fields, out_side, following if following != out_side else None, params))
    total = sum(p.numel() for p in model.parameters())
    head = total - sum(b.params for b in blocks)
    return blocks, {"params": total, "head_params": head, "forward_flops": int(counter.get_total_flops())}
