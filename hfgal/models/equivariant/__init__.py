"""Rotation-equivariant galaxy classifiers (group-equivariant CNNs) as first-class transformers models.

`configuration_gz10_equivariant.py` and `modeling_gz10_equivariant.py` are self-contained (torch + transformers
only): a saved or pushed model folder carries copies of them and an `auto_map`, so it loads with
`trust_remote_code=True` without hfgal. hfgal itself loads such folders with `trust_remote_code` off, through the
classes `register()` adds to `AutoConfig`, `AutoModel` and `AutoModelForImageClassification`; importing
`hfgal.models` calls it. This module itself imports neither torch nor transformers, so the names below (the model
type, the named configs) cost nothing to import.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ...constants import EQUIVARIANT_MODEL_TYPE

if TYPE_CHECKING:
    import os

MODEL_TYPE = EQUIVARIANT_MODEL_TYPE
# The modelling code a model folder carries (copied next to config.json), and the auto_map that points at it.
CODE_FILES = ("configuration_gz10_equivariant.py", "modeling_gz10_equivariant.py")
AUTO_MAP = {
    "AutoConfig": "configuration_gz10_equivariant.GZ10EquivariantConfig",
    "AutoModel": "modeling_gz10_equivariant.GZ10EquivariantModel",
    "AutoModelForImageClassification": "modeling_gz10_equivariant.GZ10EquivariantForImageClassification",
}

# Named configs (`--model gcnn-d4-tiny --init scratch`): random weights, no download. Sizes, in fields per layer
# (each field is |G| channels: 8 for D4, 16 for D8, 32 for D16):
# - gcnn-d4-tiny: exact D4, 64 px; trains on a 2-core CPU in minutes on the synthetic default.
# - gcnn-d8-small: D8 (45-degree rotations, steerable kernels), 128 px; a GPU model of ConvNeXt V2-Nano's cost class.
# - gcnn-d16-base: the published D16 GCNN (Pandya et al. 2023, arXiv:2311.01500; github.com/snehjp2/GCNNMorphology)
#   layer by layer: 3x3 kernels on escnn's basis (rings at radii 0 and 1 of widths 0.005 and 0.4 px, angular
#   frequencies up to 2), fields 12 | 24 | 48 48 | 48 48 96 | 96 96 | 112 | 192 at 255 px, the lifting convolution
#   at stride 2 with padding 2, antialiased pooling after blocks 2, 4, 7, 9, 10 and 11, the last convolution
#   unpadded. `architecture.PUBLISHED_D16` holds the published layers; docs/equivariant.md says where it differs.
NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    "gcnn-d4-tiny": {
        "group": "D4",
        "image_size": 64,
        "stem_size": 4,
        "stem_stride": 2,
        "hidden_sizes": [8, 16, 32, 64],
    },
    "gcnn-d8-small": {
        "group": "D8",
        "image_size": 128,
        "stem_size": 8,
        "stem_stride": 2,
        "hidden_sizes": [16, 32, 48, 64, 96],
        "depths": [1, 2, 2, 2, 1],
    },
    "gcnn-d16-base": {
        "group": "D16",
        "image_size": 255,
        "filter_basis": "steerable",  # also for group overrides (D4, C1): the published models all use it
        "ring_sigmas": [0.005, 0.4],
        "stem_size": 12,
        "stem_stride": 2,
        "stem_padding": 2,
        "hidden_sizes": [[24], [48, 48], [48, 48, 96], [96, 96], [112], [192]],
        "last_layer_padding": 0,
        "pool_after_last_stage": True,
    },
}

_lock = threading.Lock()
_registered = False


def register() -> None:
    """Register the config and the models with `AutoConfig`, `AutoModel` and `AutoModelForImageClassification`
    (idempotent; importing `hfgal.models` calls it). Saving such a model then also writes its code and `auto_map`
    (transformers' custom-model mechanism), so the folder loads without hfgal."""
    global _registered
    with _lock:
        if _registered:
            return
        from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

        from .configuration_gz10_equivariant import GZ10EquivariantConfig
        from .modeling_gz10_equivariant import GZ10EquivariantForImageClassification, GZ10EquivariantModel

        AutoConfig.register(MODEL_TYPE, GZ10EquivariantConfig, exist_ok=True)
        AutoModel.register(GZ10EquivariantConfig, GZ10EquivariantModel, exist_ok=True)
        AutoModelForImageClassification.register(
            GZ10EquivariantConfig, GZ10EquivariantForImageClassification, exist_ok=True
        )
        GZ10EquivariantConfig.register_for_auto_class()
        GZ10EquivariantModel.register_for_auto_class("AutoModel")
        GZ10EquivariantForImageClassification.register_for_auto_class("AutoModelForImageClassification")
        _registered = True


def write_remote_code(folder: str | os.PathLike) -> list[str]:
    """Make an equivariant model folder loadable without hfgal: copy the modelling code next to its config.json
    and point `auto_map` at it (other model folders are left alone).

    Args:
        folder: a folder written by `save_pretrained`.

    Returns:
        The code files the folder holds (empty for other model types).
    """
    import json
    from pathlib import Path

    from ...io import atomic_write_text

    folder = Path(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    if config.get("model_type") != MODEL_TYPE:
        return []
    here = Path(__file__).parent
    for name in CODE_FILES:
        code = (here / name).read_text()
        if not (folder / name).is_file() or (folder / name).read_text() != code:
            atomic_write_text(folder / name, code)
    if config.get("auto_map") != {**config.get("auto_map", {}), **AUTO_MAP}:
        config["auto_map"] = {**config.get("auto_map", {}), **AUTO_MAP}
        atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return list(CODE_FILES)


def __getattr__(name: str) -> Any:
    # The classes load torch: import them on first use (`from hfgal.models.equivariant import GZ10Equivariant...`).
    if name == "GZ10EquivariantConfig":
        from .configuration_gz10_equivariant import GZ10EquivariantConfig

        return GZ10EquivariantConfig
    if name in ("GZ10EquivariantModel", "GZ10EquivariantForImageClassification", "GZ10EquivariantPreTrainedModel"):
        from . import modeling_gz10_equivariant

        return getattr(modeling_gz10_equivariant, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
