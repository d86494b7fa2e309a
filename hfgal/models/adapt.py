"""Adapting a loaded backbone to fine-tuning: linear probe, layer-wise learning-rate groups, parameters DDP must not
wait for, and parameter counts."""

from __future__ import annotations

import math
from typing import Any

from ..errors import HfgalError


def classifier_layer(model: Any) -> tuple[str, Any]:
    """The final classifier of an image-classification model: `(qualified module name, module)`.

    timm models (through TimmWrapper) name it themselves (`get_classifier()`: `head.fc` for MaxViT and ConvNeXt, not
    the pre-logits MLP or norm before it); transformers models call it `classifier` (a Linear, or ResNet's
    Flatten + Linear). Otherwise: the last Linear whose outputs are the model's labels.
    """
    import torch

    timm_model = getattr(model, "timm_model", None)
    head = timm_model.get_classifier() if hasattr(timm_model, "get_classifier") else getattr(model, "classifier", None)
    if isinstance(head, torch.nn.Module):  # ResNet's is Flatten + Linear: the Linear
        head = next((m for m in reversed(list(head.modules())) if isinstance(m, torch.nn.Linear)), head)
    if not isinstance(head, torch.nn.Module) or not any(True for _ in head.parameters()):
        num_labels = getattr(getattr(model, "config", None), "num_labels", None)
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_labels]
        head = linears[-1] if linears else None
    names = {id(module): name for name, module in model.named_modules()}
    if head is None or id(head) not in names:
        raise HfgalError(f"could not find the classification head of {type(model).__name__} to train")
    return names[id(head)], head


def _frozen_mode(module: Any, args: Any) -> None:
    # A forward pre-hook: whatever `model.train()` set, this frozen module runs as in evaluation.
    module.training = False


def freeze_backbone(model: Any) -> int:
    """Linear probe: train only the final linear classifier; the backbone is a fixed feature extractor.

    Every parameter but the classifier's is frozen, including a timm head's pre-logits MLP and norm (MaxViT's
    `head.pre_logits`), so the probe is linear. Every module without a trainable parameter also runs in evaluation
    mode during training (a forward pre-hook, so it survives `model.train()`): BatchNorm running statistics stay
    those of pretraining, and dropout / stochastic depth stay off, as in the usual linear evaluation (DINO, MAE).

    Returns:
        The number of trainable parameters.
    """
    _, head = classifier_layer(model)
    for param in model.parameters():
        param.requires_grad_(False)
    for param in head.parameters():
        param.requires_grad_(True)
    for module in model.modules():
        if module is not model and not any(p.requires_grad for p in module.parameters()):
            module.register_forward_pre_hook(_frozen_mode)
            module.eval()
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_groups(model: Any) -> list[list[str]]:
    """Parameter names grouped by depth, input to output, for layer-wise learning-rate decay.

    As BEiT (per Transformer block) and ConvNeXt (per stage) do: the embeddings / stem are group 0, then one group per
    stage of a hierarchical model (ConvNeXt, Swin, ResNet, EfficientNet, MaxViT) or per block of an isotropic one
    (ViT, DINOv2, BEiT), then the final norm and head on top. timm models group themselves
    (`group_matcher(coarse=True)`: stem, stages, head); for transformers models the stages / blocks are the numbered
    children of the container that holds most of them (`encoder.stages`, `encoder.layers`, `encoder.layer`), and
    EfficientNet's flat list of blocks is folded back into its stages.
    """
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None and hasattr(timm_model, "group_matcher"):
        from timm.models import group_parameters

        prefix = next(name for name, module in model.named_modules() if module is timm_model)
        grouped = group_parameters(timm_model, timm_model.group_matcher(coarse=True))
        return [[f"{prefix}.{name}" for name in grouped[k]] for k in sorted(grouped)]

    names = [name for name, _ in model.named_parameters()]
    # The container of the stages / blocks: the path before a name's first numbered part, the one with most children.
    children: dict[str, set[str]] = {}
    for name in names:
        parts = name.split(".")
        first = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        if first is not None:
            children.setdefault(".".join(parts[:first]), set()).add(parts[first])
    container = max(children, key=lambda c: len(children[c])) if children else None
    config = getattr(model, "config", None)
    stage_of = _efficientnet_stage_of_block(config) if getattr(config, "model_type", "") == "efficientnet" else None
    order: dict[str, int] = {}
    depth_of: list[tuple[str, int | None]] = []
    for name in names:
        unit = None
        if container is not None and name.startswith(container + "."):
            index = name[len(container) + 1 :].split(".", 1)[0]
            unit = f"stage {stage_of[int(index)]}" if stage_of else index
        if unit is not None:
            order.setdefault(unit, len(order))
        depth_of.append((name, None if unit is None else order[unit] + 1))
    top = len(order) + 1
    groups: list[list[str]] = [[] for _ in range(top + 1)]
    seen_unit = False
    for name, depth in depth_of:
        if depth is None:
            groups[top if seen_unit else 0].append(name)  # before the first stage: embeddings; after: norm, head
        else:
            seen_unit = True
            groups[depth].append(name)
    return [g for g in groups if g]


def _efficientnet_stage_of_block(config: Any) -> list[int]:
    # transformers' EfficientNetEncoder lists its blocks flat: stage i repeats ceil(depth_coefficient * repeats[i]).
    stages: list[int] = []
    for stage, repeats in enumerate(config.num_block_repeats):
        stages += [stage] * int(math.ceil(config.depth_coefficient * repeats))
    return stages


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
