"""hfgal: galaxy morphology classification with vision foundation models on the Hugging Face stack.

The package follows the data flow, one subpackage per stage, each importing only the ones before it:

    data/   GZ10 sources -> split DatasetDict -> uint8 cache -> on-device augmentation (+ synthetic galaxies, card)
    models/ backbones through AutoModelForImageClassification (+ named configs), adapted for fine-tuning
    train/  arguments, GZ10Trainer, metrics, carbon, resume, and the run record (results.json)
    hub/    model cards and one-commit pushes
    study/  study plans, the runner, tables, report, publication
    inference.py, demo/ and cli/ sit on top; errors.py, io.py, constants.py and hub_access.py below everything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .constants import DEFAULT_DATASET, GZ10_CLASSES, GZ10_DESCRIPTIONS, ID2LABEL, LABEL2ID, NUM_CLASSES

__version__ = "0.1.0"

# Heavy entry points (torch, transformers, datasets) load on first use so `hfgal --help` stays instant.
_LAZY = {
    "gz10_from_h5": "hfgal.data.sources",
    "load_gz10": "hfgal.data.sources",
    "load_classifier": "hfgal.inference",
    "load_image": "hfgal.data.imageio",
    "GalaxyClassifier": "hfgal.inference",
    "HfgalError": "hfgal.errors",
}

__all__ = [
    "DEFAULT_DATASET",
    "gz10_from_h5",
    "load_gz10",
    "load_classifier",
    "load_image",
    "GalaxyClassifier",
    "HfgalError",
    "GZ10_CLASSES",
    "GZ10_DESCRIPTIONS",
    "ID2LABEL",
    "LABEL2ID",
    "NUM_CLASSES",
    "__version__",
]

if TYPE_CHECKING:
    from .data.imageio import load_image
    from .data.sources import gz10_from_h5, load_gz10
    from .errors import HfgalError
    from .inference import GalaxyClassifier, load_classifier


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hfgal' has no attribute {name!r}")
