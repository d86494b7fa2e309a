"""Adapting a loaded backbone to fine-tuning: linear probe, layer-wise learning-rate groups, parameters DDP must not
wait for, and parameter counts."""

from __future__ import annotations

from typing import Any

from ..errors import HfgalError


def freeze_backbone(model: Any) -> int:
    """Linear probe: freeze everything but the classification head; returns the number of trainable parameters."""
    head_names = ("classifier", "head", "fc")
    for name, param in model.named_parameters():
        leaf_module = name.rsplit(".", 2)[-2] if "." in name else name
        param.requires_grad = any(part in head_names for part in name.split(".")[-3:-1]) or leaf_module in head_names
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == 0:
        raise HfgalError(f"could not find the classification head of {type(model).__name__} to train")
    return trainable


def layer_groups(model: Any) -> list[list[str]]:
    """Parameter names grouped by depth, input to output, for layer-wise learning-rate decay.

    Depth is the position of a parameter's first numbered block (`encoder.layer.3`, `stages.2.blocks.1`, ...) in
    the order the model defines them: parameters before the first block are the embeddings (depth 0), those after
    the last one (final norm, head) the top. Works across ViT, ConvNeXt, Swin, ResNet and timm models.
    """
    order: dict[str, int] = {}
    depth_of: list[tuple[str, int | None]] = []
    for name, _ in model.named_parameters():
        parts = name.split(".")
        numbered = [i for i, p in enumerate(parts) if p.isdigit()]
        if numbered:
            # The block is the path up to the second numbered level (stage.block), or the first when alone.
            key = ".".join(parts[: numbered[min(1, len(numbered) - 1)] + 1])
            order.setdefault(key, len(order))
            depth_of.append((name, order[key] + 1))
        else:
            depth_of.append((name, None))
    top = len(order) + 1
    groups: list[list[str]] = [[] for _ in range(top + 1)]
    seen_block = False
    for name, depth in depth_of:
        if depth is None:
            groups[top if seen_block else 0].append(name)
        else:
            seen_block = True
            groups[depth].append(name)
    return [g for g in groups if g]


def freeze_unused_parameters(model: Any, image_size: tuple[int, int]) -> list[str]:
    """Freeze trainable parameters that no forward pass of image classification reaches; returns their names.

    DDP must otherwise search the autograd graph for unused parameters at every step (`find_unused_parameters`),
    which `transformers.Trainer` turns on for every model. Some checkpoints carry parameters that classification
    never touches (DINOv2's and BEiT's `mask_token`, for instance); freezing them changes nothing in training and
    lets DDP skip that search. One batch-1 forward/backward in eval mode finds them (eval mode: no running
    statistics of batch norm are updated).
    """
    import torch

    was_training = model.training
    model.eval()
    param = next(model.parameters())
    x = torch.zeros(1, 3, *image_size, device=param.device, dtype=param.dtype)
    try:
        model(pixel_values=x).logits.float().sum().backward()
        unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    for name, p in model.named_parameters():
        if name in unused:
            p.requires_grad_(False)
    return unused


def count_parameters(model: Any) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
