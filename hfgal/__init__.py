"""hfgal: galaxy morphology classification with vision foundation models on the Hugging Face stack."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .constants import DEFAULT_DATASET, GZ10_CLASSES, GZ10_DESCRIPTIONS, ID2LABEL, LABEL2ID, NUM_CLASSES

__version__ = "0.1.0"

# Heavy entry points (torch, transformers, datasets) load on first use so `hfgal --help` stays instant.
_LAZY = {
    "gz10_from_h5": "hfgal.data",
    "load_gz10": "hfgal.data",
    "load_classifier": "hfgal.inference",
    "load_image": "hfgal.inference",
    "GalaxyClassifier": "hfgal.inference",
}

__all__ = [
    "DEFAULT_DATASET",
    "gz10_from_h5",
    "load_gz10",
    "load_classifier",
    "load_image",
    "GalaxyClassifier",
    "GZ10_CLASSES",
    "GZ10_DESCRIPTIONS",
    "ID2LABEL",
    "LABEL2ID",
    "NUM_CLASSES",
    "__version__",
]

if TYPE_CHECKING:
    from .data import gz10_from_h5, load_gz10
    from .inference import GalaxyClassifier, load_classifier, load_image


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hfgal' has no attribute {name!r}")
