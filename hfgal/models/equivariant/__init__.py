"""Rotation-equivariant galaxy classifiers (group-equivariant CNNs) as first-class transformers models.

`configuration_gz10_equivariant.py` and `modeling_gz10_equivariant.py` are self-contained (torch + transformers
only): a saved or pushed model folder carries copies of them and an `auto_map`, so it loads with
`trust_remote_code=True` without hfgal. hfgal itself loads such folders with `trust_remote_code` off, through the
classes it registers with `AutoConfig`, `AutoModel` and `AutoModelForImageClassification`.

Registration without slowing `import hfgal`: this module imports neither torch nor transformers. `import hfgal`
calls `register_when_transformers_loads()`, which registers at once when transformers' auto classes are already
imported and otherwise installs an import hook that registers the config right after
`transformers.models.auto.configuration_auto` is executed and the models right after `...auto.modeling_auto` is.
Those are the modules `AutoConfig`, `AutoModel*` and `pipeline` come from, so every way of loading a model sees the
`gz10_equivariant` type, and a process that never touches transformers pays nothing.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os

# Only what `import hfgal` needs is imported here: the hook costs about a millisecond and loads nothing heavy.

MODEL_TYPE = "gz10_equivariant"
# The modelling code a model folder carries (copied next to config.json), and the auto_map that points at it.
CODE_FILES = ("configuration_gz10_equivariant.py", "modeling_gz10_equivariant.py")
AUTO_MAP = {
    "AutoConfig": "configuration_gz10_equivariant.GZ10EquivariantConfig",
    "AutoModel": "modeling_gz10_equivariant.GZ10EquivariantModel",
    "AutoModelForImageClassification": "modeling_gz10_equivariant.GZ10EquivariantForImageClassification",
}

# Named configs (`--model gcnn-d4-tiny --init scratch`): random weights, no download. Sizes, in fields per stage
# (each field is |G| channels: 8 for D4, 16 for D8, 32 for D16):
# - gcnn-d4-tiny: exact D4, 64 px; trains on a 2-core CPU in minutes on the synthetic default.
# - gcnn-d8-small: D8 (45-degree rotations, steerable kernels), 128 px; a GPU model of ConvNeXt V2-Nano's cost class.
# - gcnn-d16-base: the published D16 GCNN's size (Pandya et al. 2023, arXiv:2311.01500: 3x3 kernels, regular
#   fields 12 | 24 | 48 48 | 48 48 96 | 96 96 | 112 | 192 at 255 px, downsampled 7 times): here 12 | 24 | 48x2 |
#   96x3 | 96x2 | 112 | 192, the same resolution schedule, group and widths (one 48-field layer widened to 96).
NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    "gcnn-d4-tiny": {
        "group": "D4",
        "image_size": 64,
        "stem_size": 4,
        "stem_stride": 2,
        "hidden_sizes": [8, 16, 32, 64],
        "depths": [1, 1, 1, 1],
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
        "stem_size": 12,
        "stem_stride": 2,
        "hidden_sizes": [24, 48, 96, 96, 112, 192],
        "depths": [1, 2, 3, 2, 1, 1],
    },
}

_CONFIG_AUTO = "transformers.models.auto.configuration_auto"
_MODELING_AUTO = "transformers.models.auto.modeling_auto"
_lock = threading.RLock()
_done: set[str] = set()


def register_config() -> None:
    """Register `GZ10EquivariantConfig` with `AutoConfig` (idempotent)."""
    with _lock:
        if "config" in _done:
            return
        from transformers import AutoConfig

        from .configuration_gz10_equivariant import GZ10EquivariantConfig

        AutoConfig.register(MODEL_TYPE, GZ10EquivariantConfig, exist_ok=True)
        # Saving a config then copies its code and writes auto_map (transformers' custom-model mechanism).
        GZ10EquivariantConfig.register_for_auto_class()
        _done.add("config")


def register() -> None:
    """Register the config and the models with `AutoConfig`, `AutoModel` and `AutoModelForImageClassification`."""
    with _lock:
        register_config()
        if "models" in _done:
            return
        from transformers import AutoModel, AutoModelForImageClassification

        from .configuration_gz10_equivariant import GZ10EquivariantConfig
        from .modeling_gz10_equivariant import GZ10EquivariantForImageClassification, GZ10EquivariantModel

        AutoModel.register(GZ10EquivariantConfig, GZ10EquivariantModel, exist_ok=True)
        AutoModelForImageClassification.register(
            GZ10EquivariantConfig, GZ10EquivariantForImageClassification, exist_ok=True
        )
        GZ10EquivariantModel.register_for_auto_class("AutoModel")
        GZ10EquivariantForImageClassification.register_for_auto_class("AutoModelForImageClassification")
        _done.add("models")


class _RegisterAfterImport:
    """A `sys.meta_path` finder: finds transformers' auto modules through the other finders and makes their loader
    register hfgal's model type right after the module executes."""

    def __init__(self, callbacks: dict[str, Any]):
        self.callbacks = callbacks

    def find_spec(self, fullname, path, target=None):
        callback = self.callbacks.get(fullname)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _ThenCall(spec.loader, fullname, callback, self)
                return spec
        return None


class _ThenCall:
    """A loader that runs the real loader, then a registration; anything else is the real loader's."""

    def __init__(self, loader, fullname: str, callback, finder: _RegisterAfterImport):
        self._loader, self._fullname, self._callback, self._finder = loader, fullname, callback, finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._finder.callbacks.pop(self._fullname, None)
        if not self._finder.callbacks and self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        _safely(self._callback)

    def __getattr__(self, name):
        return getattr(self._loader, name)


def _safely(callback) -> None:
    # A failed registration must never break importing transformers: hfgal's own entry points register again.
    try:
        callback()
    except Exception as err:  # noqa: BLE001 - logged, and load_model registers again
        import logging

        logging.getLogger(__name__).warning("could not register model type %s with transformers: %s", MODEL_TYPE, err)


def register_when_transformers_loads() -> None:
    """Register now if transformers' auto classes are imported, else as soon as they are (no import here)."""
    with _lock:
        callbacks = {}
        for module, callback in ((_CONFIG_AUTO, register_config), (_MODELING_AUTO, register)):
            if module in sys.modules:
                _safely(callback)
            else:
                callbacks[module] = callback
        if callbacks and not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _RegisterAfterImport(callbacks))


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
