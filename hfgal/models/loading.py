"""Models for fine-tuning: one path through `AutoModelForImageClassification` (`hfgal.models.checkpoint`) for
transformers and timm-on-Hub ids and local folders, named configs of the study's architectures (random weights, no
download), and what the rest of the recipe needs to know about the model it got (`LoadedModel`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..data.geometry import Geometry
from ..errors import HfgalError
from .checkpoint import gz10_labels, open_checkpoint
from .equivariant import MODEL_TYPE as EQUIVARIANT_MODEL_TYPE
from .equivariant import NAMED_CONFIGS as EQUIVARIANT_CONFIGS
from .equivariant import register as register_equivariant
from .preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ZOOBOT_MEAN,
    ZOOBOT_STD,
    is_zoobot_encoder,
    processor_normalization,
)

logger = logging.getLogger(__name__)


# transformers' EfficientNet copies Keras' `batch_norm_momentum=0.99` into `nn.BatchNorm2d(momentum=...)` (and leaves
# the expansion BatchNorm at PyTorch's default 0.1). Keras weighs the *old* running statistics by its momentum;
# PyTorch weighs the *new batch* by it (running = (1 - momentum) * running + momentum * batch), so 0.99 makes the
# running statistics ~ the last batch (at the end of an epoch, a handful of augmented images). The PyTorch
# equivalent of Keras' 0.99, used by every BatchNorm of the original Keras model, is 1 - 0.99 = 0.01.
KERAS_MOMENTUM_MODEL_TYPES = ("efficientnet",)


def pytorch_batch_norm_momentum(model: Any, overrides: dict[str, Any]) -> float | None:
    """For the families above, turn a Keras-sense `batch_norm_momentum` (> 0.5) into PyTorch's sense in the config
    and give every BatchNorm of the model that momentum, in place. An explicit override is kept as given.

    Returns:
        The momentum now in the config (None for other families).
    """
    import torch

    config = model.config
    momentum = getattr(config, "batch_norm_momentum", None)
    if momentum is None or getattr(config, "model_type", None) not in KERAS_MOMENTUM_MODEL_TYPES:
        return None
    if momentum > 0.5 and "batch_norm_momentum" not in overrides:
        config.batch_norm_momentum = round(1.0 - momentum, 6)
        logger.info("batch_norm_momentum %s (Keras sense) -> %s (PyTorch sense)", momentum, config.batch_norm_momentum)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = config.batch_norm_momentum
    return config.batch_norm_momentum


# Named configs of the study's architectures: built offline with random weights (no download). Shrink them for
# tests with `model_config_overrides`, e.g. {"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1]}.
NAMED_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "convnextv2-tiny": ("convnextv2", {"depths": [3, 3, 9, 3], "hidden_sizes": [96, 192, 384, 768]}),
    "convnextv2-nano": ("convnextv2", {"depths": [2, 2, 8, 2], "hidden_sizes": [80, 160, 320, 640]}),
    "vit-base": ("vit", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224}),
    "dinov2-base": (
        "dinov2",
        {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224},
    ),
    "swinv2-base": (
        "swinv2",
        {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "image_size": 192, "window_size": 12},
    ),
    "beit-base": ("beit", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224}),
    "efficientnet-b7": ("efficientnet", {"width_coefficient": 2.0, "depth_coefficient": 3.1, "image_size": 600}),
    "resnet-101": ("resnet", {"depths": [3, 4, 23, 3], "layer_type": "bottleneck"}),
    # Rotation-equivariant GCNNs, hfgal's own model type (hfgal.models.equivariant): gcnn-d4-tiny, -d8-small, -d16-base
    **{name: (EQUIVARIANT_MODEL_TYPE, defaults) for name, defaults in EQUIVARIANT_CONFIGS.items()},
}


@dataclass
class LoadedModel:
    """A classifier ready for GZ10 and what the rest of the recipe needs to know about it.

    Attributes:
        model: the model, with a 10-class GZ10 head.
        geometry: hfgal's preparation for it: the whole image resized to its input size.
        mean, std: the normalisation its weights expect, as `(x / 255 - mean) / std`.
        init: `pretrained` or `scratch`.
        base_model: Hub id of the pretrained weights, when there are any.
        model_type: the config's `model_type`.
        processor_geometry: how the checkpoint's own image processor resizes and crops (the poster protocol's
            preparation), when it has one.
    """

    model: Any
    geometry: Geometry
    mean: tuple[float, ...]
    std: tuple[float, ...]
    init: str
    base_model: str | None
    model_type: str
    processor_geometry: Geometry | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return self.geometry.height, self.geometry.width

    def input_geometry(self, preprocessing: str) -> Geometry:
        """How training and serving prepare images: `resize` (hfgal: the whole image, to the input size) or
        `processor` (the checkpoint's own processor's resize and centre crop).

        Raises:
            HfgalError: `processor` for a model that has no image processor (a named config, a bare config folder).
        """
        if preprocessing != "processor":
            return self.geometry
        if self.processor_geometry is None:
            raise HfgalError(
                "--preprocessing processor needs the checkpoint's image processor, and this model has none "
                "(a named config or a folder without preprocessor_config.json); use --preprocessing resize"
            )
        return self.processor_geometry


def load_model(
    name_or_path: str,
    *,
    init: str = "pretrained",
    config_overrides: dict[str, Any] | None = None,
    image_size: tuple[int, int] | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Build a 10-class GZ10 classifier through `AutoModelForImageClassification`.

    Args:
        name_or_path: a transformers or timm-on-Hub id (`facebook/dinov2-base`, `timm/vgg16.tv_in1k`,
            `mwalmsley/zoobot-encoder-convnext_nano`), a local folder, a named config (`convnextv2-tiny`, ...,
            random weights) or `timm:<architecture>` (random weights, built through `TimmWrapperConfig`).
        init: `pretrained` loads the weights; `scratch` builds the same architecture with random weights.
        config_overrides: config attributes to change (for timm architectures: timm `model_args`).
        image_size: (height, width) override; otherwise the model's own processor/config decides.
        revision: Hub revision.
        trust_remote_code: allow custom code from the repo (off by default; a warning is logged when on).

    Returns:
        `LoadedModel` with the head replaced for the 10 GZ10 classes (`id2label`/`label2id` set).

    Raises:
        HfgalError: unknown or unreachable id, bad overrides.
    """
    if init not in ("pretrained", "scratch"):
        raise HfgalError(f"--init {init!r} is not valid; use pretrained or scratch")
    overrides = dict(config_overrides or {})
    base_model = None
    if name_or_path in NAMED_CONFIGS:
        model, processor, init = _named_config_model(name_or_path, overrides), None, "scratch"
    elif name_or_path.startswith("timm:"):
        model, init = _timm_architecture(name_or_path.split(":", 1)[1], overrides), "scratch"
        processor = dict(model.config.pretrained_cfg or {}) or None  # timm's data config of the architecture
    else:
        checkpoint = open_checkpoint(
            name_or_path,
            revision=revision,
            trust_remote_code=trust_remote_code,
            overrides=overrides,
            gz10_head=True,
            random_weights=init == "scratch",
            hint="offline, pass a local folder with config.json, a named config "
            f"({', '.join(NAMED_CONFIGS)}) or timm:<architecture>; or --init scratch to train it from random weights",
        )
        model, processor = checkpoint.model, checkpoint.processor
        if init == "pretrained" and not _is_local(name_or_path):
            base_model = name_or_path
    pytorch_batch_norm_momentum(model, overrides)
    geometry, mean, std = _input_settings(model, processor)
    if init == "pretrained" and is_zoobot_encoder(name_or_path):
        logger.info(
            "%s: a Zoobot encoder, fed [0, 1] pixels as Zoobot trained it (not %s, %s)", name_or_path, mean, std
        )
        mean, std = ZOOBOT_MEAN, ZOOBOT_STD
    return LoadedModel(
        model=model,
        geometry=Geometry(image_size or geometry.size),  # hfgal's preparation: the whole cutout, bilinear
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        init=init,
        base_model=base_model,
        model_type=model.config.model_type,
        processor_geometry=geometry if processor is not None else None,
    )


def _is_local(name_or_path: str) -> bool:
    from pathlib import Path

    return Path(name_or_path).exists()


def _named_config_model(name: str, overrides: dict[str, Any]) -> Any:
    from transformers import AutoConfig, AutoModelForImageClassification

    register_equivariant()
    model_type, defaults = NAMED_CONFIGS[name]
    try:
        config = AutoConfig.for_model(model_type, **{**defaults, **overrides}, **gz10_labels())
    except (TypeError, ValueError) as err:
        raise HfgalError(f"bad --model_config_overrides for {name}: {err}") from None
    return AutoModelForImageClassification.from_config(config)


def _timm_architecture(arch: str, overrides: dict[str, Any]) -> Any:
    import timm
    from transformers import AutoModelForImageClassification, TimmWrapperConfig

    if not timm.is_model(arch):
        raise HfgalError(f"unknown timm architecture {arch!r}; see timm.list_models() for names")
    config = TimmWrapperConfig(architecture=arch, model_args=overrides or None, **gz10_labels())
    pretrained_cfg = timm.get_pretrained_cfg(arch)
    config.pretrained_cfg = dict(pretrained_cfg.to_dict()) if pretrained_cfg else {}
    try:
        return AutoModelForImageClassification.from_config(config)
    except TypeError as err:
        raise HfgalError(f"bad --model_config_overrides for timm:{arch}: {err}") from None


def _input_settings(model: Any, processor: Any | None) -> tuple[Geometry, tuple[float, ...], tuple[float, ...]]:
    """The checkpoint's own input (its processor's geometry) and normalisation; without a processor, the config's
    image size (a timm model's `pretrained_cfg`) and ImageNet statistics."""
    if processor is not None:
        return Geometry.from_processor(processor), *processor_normalization(processor)
    config = model.config
    if config.model_type == "timm_wrapper" and getattr(config, "pretrained_cfg", None):
        return Geometry.from_timm(config.pretrained_cfg), *processor_normalization(config.pretrained_cfg)
    size = getattr(config, "image_size", None)
    size = size[-1] if isinstance(size, (list, tuple)) else size
    return Geometry(int(size or 224)), IMAGENET_MEAN, IMAGENET_STD
