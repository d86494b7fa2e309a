"""Evaluating a saved model on a GZ10 split the way a training run evaluates its selected model (`hfgal evaluate`).

The split is loaded by `load_gz10` with the run's split settings, decoded once into the uint8 cache by the geometry
the model folder's own image processor defines, normalised on the device and scored by `GZ10Trainer.predict`
(`predict_probabilities`, TTA included) and `compute_gz10_metrics`: the code path of the recipe's final evaluation,
called, not re-implemented. So a run folder evaluated on its own dataset and split gives its results.json accuracy
exactly, and any other checkpoint is scored as a run would have scored it. On top: the calibration of its
probabilities (ECE, reliability diagram) and, on request, a temperature fitted on validation.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import GZ10_CLASSES
from ..errors import HfgalError
from ..runs import (
    CONFUSION_FILE,
    RELIABILITY_FILE,
    Calibration,
    EvaluationRecord,
    SplitMetrics,
    plot_confusion_matrix,
)
from .calibration import (
    calibration_scores,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    plot_reliability_diagram,
    reliability_bins,
    temper,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass
class EvaluationSettings:
    """Which data a model is scored on and how: a run folder's own settings (`from_run_config`) or chosen ones."""

    dataset: str
    split: str = "test"
    dataset_revision: str | None = None
    split_seed: int = 42
    split_scheme: str | None = None
    split_separation_arcsec: float | None = None
    tta: bool = False
    batch_size: int = 128
    image_cache_dir: str | None = None
    bf16: bool = False  # the run's evaluation precision: its logits, hence its accuracy, depend on it
    fp16: bool = False

    @classmethod
    def from_run_config(cls, config: dict[str, Any], **overrides: Any) -> EvaluationSettings:
        """The settings a run evaluated with (its config.yaml), with `overrides` (None values ignored). The image
        cache folder is not taken from the run: it belongs to the machine it ran on."""
        names = {f.name for f in fields(cls)} - {"image_cache_dir"}
        settings = {name: config[name] for name in names if config.get(name) is not None}
        if config.get("per_device_eval_batch_size"):
            settings["batch_size"] = int(config["per_device_eval_batch_size"])
        settings.update((k, v) for k, v in overrides.items() if v is not None)
        return cls(**settings)

    def check(self) -> None:
        """Fail in one line, before any model is loaded, when the data cannot be read or split as asked.

        Raises:
            HfgalError: an unknown split, a missing or malformed source, or a split it cannot honour.
        """
        from ..data.published import check_split_request
        from ..data.sources import resolve_source

        if self.split not in SPLITS:
            raise HfgalError(f"unknown split {self.split!r}; use train, validation or test")
        if self.batch_size < 1:
            raise HfgalError(f"batch size must be at least 1, got {self.batch_size}")
        found = resolve_source(self.dataset)
        check_split_request(
            self.split_scheme, self.split_separation_arcsec, arrived=found.split, location=found.location
        )

    def data_settings(self) -> tuple:
        """What decides the images and their scoring: equal settings give equal numbers."""
        return (self.dataset, self.dataset_revision, self.split_seed, self.split_scheme,
                self.split_separation_arcsec, self.tta, self.bf16, self.fp16)  # fmt: skip


def score_splits(
    model: Any, processor: Any, settings: EvaluationSettings, splits: list[str], device: str = "cpu"
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Any]:
    """Class probabilities of every image of `splits`, as the recipe computes them for its final evaluation.

    Args:
        model: a transformers image classifier (a `GalaxyClassifier.model`).
        processor: its image processor: its resize/crop fills the uint8 cache, its mean/std normalise on device.
        settings: the data and how it is scored.
        splits: e.g. `["validation", "test"]`.
        device: `cpu` runs on the CPU; anything else on the Trainer's accelerator (the first GPU).

    Returns:
        `({split: (probabilities (N, C) float64, true labels (N,))}, the GZ10Splits)`.

    Raises:
        HfgalError: an unknown split or an unreadable dataset.
    """
    from ..data.cache import cached_splits, collate_uint8
    from ..data.geometry import Geometry
    from ..data.sources import load_gz10
    from ..models.preprocessing import processor_normalization
    from .args import GZ10TrainingArguments
    from .trainer import GZ10Trainer, predict_probabilities

    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise HfgalError(f"unknown split {unknown[0]!r}; use train, validation or test")
    gz10 = load_gz10(
        settings.dataset,
        seed=settings.split_seed,
        split_scheme=settings.split_scheme,
        separation_arcsec=settings.split_separation_arcsec,
        revision=settings.dataset_revision,
    )
    geometry = Geometry.from_processor(processor)
    cached, _ = cached_splits({s: gz10.splits[s] for s in splits}, geometry, settings.image_cache_dir)
    mean, std = processor_normalization(processor)
    with tempfile.TemporaryDirectory(prefix="hfgal-evaluate-") as scratch:
        args = GZ10TrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=settings.batch_size,
            use_cpu=str(device).startswith("cpu"),
            bf16=settings.bf16,
            fp16=settings.fp16,
            eval_strategy="no",  # predictions only: nothing to train, select or save
            save_strategy="no",
            load_best_model_at_end=False,
            report_to="none",
            dataloader_num_workers=0,
            carbon_tracking=False,
        )
        trainer = GZ10Trainer(
            model=model, args=args, data_collator=collate_uint8, mean=mean, std=std, tta=settings.tta
        )
        scored = {split: predict_probabilities(trainer, cached[split]) for split in splits}
    return scored, gz10


def evaluate_model(
    model: Any,
    processor: Any,
    source: str,
    settings: EvaluationSettings,
    *,
    calibrate: bool = False,
    calibration: Calibration | None = None,
    device: str = "cpu",
) -> tuple[EvaluationRecord, Calibration | None, dict[str, tuple[np.ndarray, np.ndarray]], Any]:
    """Score one split with the metrics block of a training run, and the calibration of its probabilities.

    Args:
        model, processor: the checkpoint (as `load_classifier` loads it).
        source: what the model was loaded from, for the record.
        settings: the data and how it is scored.
        calibrate: fit a temperature on the validation split (also scored then).
        calibration: the temperature the model already has (calibration.json), reported beside the raw scores.
        device: where to run (see `score_splits`).

    Returns:
        `(record, the new Calibration or None, {split: (probabilities, labels)}, the GZ10Splits)`.
    """
    from .hardware import versions_info
    from .metrics import compute_gz10_metrics

    started = time.perf_counter()
    wanted = ["validation", settings.split] if calibrate and settings.split != "validation" else [settings.split]
    scored, gz10 = score_splits(model, processor, settings, wanted, device)
    probs, labels = scored[settings.split]
    fitted = None
    if calibrate:
        fitted = fit_calibration(scored, settings.tta)
        calibration = fitted
    temperature = calibration.temperature if calibration is not None else None
    tempered = temper(probs, temperature) if temperature is not None else None
    record = EvaluationRecord(
        model=source,
        dataset=settings.dataset,
        split=settings.split,
        metrics=SplitMetrics(**compute_gz10_metrics(probs.argmax(-1), labels)),
        ece=expected_calibration_error(probs, labels),
        nll=negative_log_likelihood(probs, labels),
        reliability=reliability_bins(probs, labels),
        tta=settings.tta,
        dataset_revision=settings.dataset_revision,
        split_scheme=gz10.info.scheme,
        split_description=gz10.info.description,
        temperature=temperature,
        ece_calibrated=None if tempered is None else expected_calibration_error(tempered, labels),
        nll_calibrated=None if tempered is None else negative_log_likelihood(tempered, labels),
        reliability_calibrated=[] if tempered is None else reliability_bins(tempered, labels),
        seconds=time.perf_counter() - started,
        device=str(device),
        hfgal_version=versions_info()["hfgal"],
    )
    return record, fitted, scored, gz10


def fit_calibration(scored: dict[str, tuple[np.ndarray, np.ndarray]], tta: bool) -> Calibration:
    """Fit the temperature on the validation split of `scored`; check it on test when test was scored too."""
    probs, labels = scored["validation"]
    temperature = fit_temperature(probs, labels)
    test = calibration_scores(*scored["test"], temperature) if "test" in scored else None
    calibration = Calibration(
        temperature=temperature,
        fitted_on="validation",
        tta=tta,
        validation=calibration_scores(probs, labels, temperature),
        test=test,
    )
    logger.info("temperature %.4f fitted on %d validation images", temperature, len(labels))
    return calibration


def write_evaluation(out: str | os.PathLike, record: EvaluationRecord, scored: dict, gz10: Any) -> Path:
    """Write an evaluation folder: predictions.csv (the split's catalogue), the confusion matrix, the reliability
    diagram, and evaluation.json last (it marks the evaluation complete). Every file is written atomically.

    Returns:
        The folder.
    """
    from .outputs import write_predictions

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_predictions(out, gz10, {record.split: scored[record.split]})
    title = f"{Path(record.model).name} — GZ10 {record.split}"
    plot_confusion_matrix(record.metrics.confusion_matrix, list(GZ10_CLASSES), out / CONFUSION_FILE, title=title)
    panels = [("the model's probabilities", record.reliability, record.ece)]
    if record.temperature is not None:
        label = f"after temperature T = {record.temperature:.3g}"
        panels.append((label, record.reliability_calibrated, record.ece_calibrated))
    plot_reliability_diagram(panels, out / RELIABILITY_FILE, title=f"Reliability — {title}")
    record.save(out)
    return out


def default_output(model: str, split: str, tta: bool) -> Path:
    """`<model folder>/evaluation-<split>[-tta]`, or `evaluations/<owner--name>/evaluation-<split>[-tta]` for a Hub
    id: evaluations of one model sit together, and a TTA evaluation does not replace the plain one."""
    from ..runs import EVALUATION_PREFIX

    name = f"{EVALUATION_PREFIX}{split}{'-tta' if tta else ''}"
    folder = Path(model).expanduser()
    return folder / name if folder.is_dir() else Path("evaluations") / model.replace("/", "--") / name
