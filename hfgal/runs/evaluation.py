"""The typed records of evaluating a saved model: `EvaluationRecord` (`evaluation.json`, written by `hfgal evaluate`)
and `Calibration` (`calibration.json`, the temperature saved with the model that `load_classifier` applies).

Like `RunRecord`, each is built in one place and read back through `from_dict`/`read_*` here, strictly: an unknown
or missing field is a one-line error, never a silent default. Light on imports (no torch), so cards read them fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HfgalError
from ..io import atomic_write_json
from .names import CALIBRATION_FILE, EVALUATION_FILE
from .record import SplitMetrics, record_from_mapping

# How the calibrated probabilities are made, in words, for records and cards.
TEMPERATURE_METHOD = (
    "temperature scaling (Guo et al. 2017): p_T = softmax(log p / T), one T for all classes, fitted by minimising "
    "the negative log-likelihood of the validation split"
)


@dataclass
class CalibrationScores:
    """How well the probabilities of one split are calibrated, before and after the temperature."""

    num_examples: int
    ece_before: float  # expected calibration error, 15 equal-width bins of top-label confidence, in [0, 1]
    ece_after: float
    nll_before: float  # mean negative log-likelihood of the true class (nats)
    nll_after: float


@dataclass
class Calibration:
    """calibration.json: the temperature `T` that calibrates a model's probabilities (`softmax(log p / T)`).

    `T > 1` softens over-confident probabilities, `T < 1` sharpens under-confident ones; the predicted class (and
    so every accuracy) is unchanged. `load_classifier` applies it by default when a model folder or repo has it.
    """

    temperature: float
    fitted_on: str  # the split it was fitted on: validation (never test)
    tta: bool  # whether the probabilities it was fitted to averaged the 8 dihedral views
    validation: CalibrationScores
    test: CalibrationScores | None = None  # the held-out check, when the test split was evaluated with it
    method: str = TEMPERATURE_METHOD

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = CALIBRATION_FILE) -> Calibration:
        data = dict(_mapping(data, where))
        for split in ("validation", "test"):
            if isinstance(data.get(split), Mapping):
                data[split] = record_from_mapping(CalibrationScores, data[split], f"{where} ({split})")
        calibration = record_from_mapping(cls, data, where)
        if not isinstance(calibration.temperature, (int, float)) or not calibration.temperature > 0:
            raise HfgalError(f"{where}: temperature {calibration.temperature!r} is not a positive number; refit it")
        return calibration

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `folder/calibration.json` atomically."""
        return atomic_write_json(Path(folder) / CALIBRATION_FILE, self.to_dict())


@dataclass
class ReliabilityBin:
    """One confidence bin of a reliability diagram: its edges, its images, their mean confidence and accuracy."""

    lower: float
    upper: float
    count: int
    confidence: float | None  # None for an empty bin
    accuracy: float | None


@dataclass
class EvaluationRecord:
    """evaluation.json: one split scored by `hfgal evaluate`, with the metrics block of a training run (computed by
    the same code) and the calibration of its probabilities.

    `metrics` scores the predicted classes, which a temperature does not change; `ece` and `reliability` are those
    of the probabilities as the model gives them, `ece_calibrated` those after `temperature`, when there is one.
    """

    model: str  # what --model named: a folder or a Hub id
    dataset: str
    split: str
    metrics: SplitMetrics
    ece: float
    nll: float
    reliability: list[ReliabilityBin]
    tta: bool = False
    dataset_revision: str | None = None
    split_scheme: str | None = None
    split_description: str | None = None
    temperature: float | None = None
    ece_calibrated: float | None = None
    nll_calibrated: float | None = None
    run_accuracy: float | None = None  # the run's results.json accuracy of this split, when --model is a run folder
    seconds: float | None = None
    device: str | None = None
    hfgal_version: str | None = None
    reliability_calibrated: list[ReliabilityBin] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = EVALUATION_FILE) -> EvaluationRecord:
        data = dict(_mapping(data, where))
        data["metrics"] = SplitMetrics.from_dict(_mapping(data.get("metrics"), f"{where} (metrics)"), where)
        for key in ("reliability", "reliability_calibrated"):
            data[key] = [record_from_mapping(ReliabilityBin, b, f"{where} ({key})") for b in data.get(key) or []]
        return record_from_mapping(cls, data, where)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `folder/evaluation.json` atomically."""
        return atomic_write_json(Path(folder) / EVALUATION_FILE, self.to_dict())


def read_calibration(folder: str | os.PathLike) -> Calibration | None:
    """The `Calibration` saved in a model folder, or None when it has none.

    Raises:
        HfgalError: the file exists but is not a valid calibration record.
    """
    return _read(Path(folder) / CALIBRATION_FILE, Calibration)


def read_evaluation(folder: str | os.PathLike) -> EvaluationRecord | None:
    """The `EvaluationRecord` of an evaluation folder, or None when it has none."""
    return _read(Path(folder) / EVALUATION_FILE, EvaluationRecord)


def _read(path: Path, cls):
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HfgalError(f"{path}: not valid JSON ({err}); delete it and rerun hfgal evaluate") from None
    return cls.from_dict(data, str(path))


def _mapping(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise HfgalError(f"{where}: expected a mapping, got {type(data).__name__}; rerun hfgal evaluate")
    return data
