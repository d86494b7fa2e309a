"""`RunRecord`, the typed `results.json` of a finished fine-tuning run, and the records it is made of.

The recipe builds one `RunRecord` and writes it last (it marks the run complete); cards, study tables, the report,
shared training and the Space read it back through `hfgal.runs.read_results` / `check_run_dir`, never by parsing the
JSON themselves. Light on imports (no torch, no transformers), so `hfgal card` and `hfgal study report` start fast.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import HfgalError
from ..io import atomic_write_json
from .names import RESULTS_FILE


def _from_mapping(cls, data: Mapping[str, Any], where: str):
    """`cls(**data)`, strictly: a record is read as it was written, or refused in one line.

    Unknown keys are an error (a record written by a newer hfgal, or edited by hand: nothing is dropped silently);
    a missing key takes the field's default only where the field has one (fields a record could lack because an
    older hfgal did not write them), and a missing required field is an error.
    """
    if not isinstance(data, Mapping):
        raise HfgalError(f"{where}: expected a mapping, got {type(data).__name__}; rerun the evaluation of this run")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise HfgalError(
            f"{where}: unknown field(s) {', '.join(unknown)} (written by a newer hfgal?); upgrade hfgal, or rerun "
            "the evaluation of this run"
        )
    try:
        return cls(**data)
    except TypeError as err:
        missing = str(err).split("argument", 1)[-1].strip(": ")
        raise HfgalError(f"{where}: missing {missing}; rerun the evaluation of this run") from None


# The same strict reading for the records of the other run-folder files (hfgal.runs.evaluation).
record_from_mapping = _from_mapping


@dataclass
class SplitMetrics:
    """The metrics of one split (`hfgal.train.metrics.compute_gz10_metrics`): accuracies in [0, 1]."""

    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    accuracy_ci95: list[float]  # [low, high], 95 % Wilson score interval of the accuracy
    num_examples: int
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> precision, recall, f1, support
    confusion_matrix: list[list[int]] = field(default_factory=list)  # rows = true class, columns = predicted

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "metrics") -> SplitMetrics:
        return _from_mapping(cls, data, where)


@dataclass
class CarbonPhase:
    """Energy, emissions and wall time of one tracked phase (training, evaluation, ...).

    `energy_kwh` is what the run books: its CPU, GPU and RAM parts (`cpu_energy_kwh`, ...) add up to it.
    """

    emissions_kg: float = 0.0
    energy_kwh: float = 0.0
    duration_s: float = 0.0
    cpu_energy_kwh: float = 0.0
    gpu_energy_kwh: float = 0.0
    ram_energy_kwh: float = 0.0

    def __add__(self, other: CarbonPhase) -> CarbonPhase:
        return CarbonPhase(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


PHASE_FIELDS = tuple(f.name for f in fields(CarbonPhase))


@dataclass
class CarbonRecord:
    """The `carbon` block of results.json: tracked phases, their totals and how they were measured.

    In the JSON the phases sit at the top of the block (`carbon.train`, `carbon.eval`) beside the totals
    (`carbon.emissions_kg`, in kg CO2eq as codecarbon reports them; cards show grams).
    """

    phases: dict[str, CarbonPhase] = field(default_factory=lambda: {"train": CarbonPhase(), "eval": CarbonPhase()})
    country_iso_code: str | None = None
    region: str | None = None
    tracking_mode: str | None = None
    cpu_model: str | None = None
    gpu_model: str | None = None
    segments: int = 1  # processes the training ran in: 1 + the times it was resumed
    concurrency: int = 1  # runs sharing the machine while it was measured
    gpu_share: float = 1.0  # the share of the visible GPUs' energy booked to this run
    complete: bool = True  # False when a resumed segment could not say what came before it

    @property
    def total(self) -> CarbonPhase:
        return sum(self.phases.values(), CarbonPhase())

    @property
    def emissions_kg(self) -> float:
        return self.total.emissions_kg

    @property
    def energy_kwh(self) -> float:
        return self.total.energy_kwh

    @property
    def duration_s(self) -> float:
        return self.total.duration_s

    @property
    def measured(self) -> bool:
        """Whether anything was measured (zeros mean tracking was off or failed: no claim is made)."""
        return self.emissions_kg > 0 or self.energy_kwh > 0

    def with_training_of(self, trained: CarbonRecord) -> CarbonRecord:
        """This run's phases with `trained`'s training phase: the CO2 of a run that evaluates another run's model
        (`--trained_run`) counts the training it stands on."""
        phases = {"train": trained.phases.get("train", CarbonPhase())}
        phases.update((name, phase) for name, phase in self.phases.items() if name != "train")
        return dataclasses.replace(self, phases=phases)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: dataclasses.asdict(phase) for name, phase in self.phases.items()}
        out.update(dataclasses.asdict(self.total))
        out.update((f.name, getattr(self, f.name)) for f in fields(self) if f.name != "phases")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "carbon") -> CarbonRecord:
        data = data or {}
        # Beside its phases (mappings) and settings, the block holds the totals `to_dict` derives from the phases.
        unknown = sorted(k for k, v in data.items() if not isinstance(v, Mapping) and k not in PHASE_FIELDS)
        unknown = [k for k in unknown if k not in {f.name for f in fields(cls)}]
        if unknown:
            raise HfgalError(f"{where}: unknown field(s) {', '.join(unknown)} (from a newer hfgal?); upgrade hfgal")
        phases = {
            name: CarbonPhase(**{k: float(value.get(k) or 0.0) for k in PHASE_FIELDS})
            for name, value in data.items()
            if isinstance(value, Mapping)
        }
        setting = {f.name: data[f.name] for f in fields(cls) if f.name != "phases" and f.name in data}
        return cls(phases=phases, **setting)


@dataclass
class Hardware:
    """Where the run trained: this machine's CPU and GPUs, and the size of the run."""

    cpu: str | None = None
    cpu_count: int | None = None
    gpu: str | None = None
    gpu_count: int = 0
    num_processes: int = 1
    num_machines: int = 1
    torch_threads: int | None = None  # intra-op threads of each process (hfgal.train.hardware.choose_threads)

    def describe(self) -> str:
        """One line for cards and reports, e.g. `1 x NVIDIA H100` or `CPU: AMD EPYC (2 cores)`."""
        where = f" on each of {self.num_machines} machines" if self.num_machines > 1 else ""
        if self.gpu:
            return f"{self.gpu_count or 1} x {self.gpu}{where}"
        if self.cpu:
            cores = f" ({self.cpu_count} cores)" if self.cpu_count else ""
            return f"CPU: {self.cpu}{cores}{where}"
        return "n/a"


@dataclass
class Hyperparameters:
    """The optimisation settings that shaped the model (the rest is in config.yaml)."""

    learning_rate: float | None = None
    per_device_train_batch_size: int | None = None
    effective_batch_size: int | None = None
    num_train_epochs: float | None = None
    max_steps: int | None = None
    weight_decay: float | None = None
    warmup_steps: float | None = None
    lr_scheduler_type: str | None = None
    label_smoothing_factor: float | None = None
    layer_decay: float | None = None
    optim: str | None = None
    bf16: bool | None = None
    fp16: bool | None = None


@dataclass
class SelectionOnTest:
    """A DIAGNOSTIC, not a result: what choosing the checkpoint on the test split would have reported.

    The seed study kept the epoch with the best test accuracy; hfgal selects on validation and evaluates test once.
    Under `--test_each_eval` test is also scored at every evaluation (never used to select), and this records
    the best of those scores, so a report can show how much that selection flatters a model.
    """

    test_accuracy: float  # the best test accuracy over the evaluations
    step: int  # where it was reached
    epoch: float | None
    evaluations: int  # how many evaluations it was the best of


# The fields a run copies from the run whose training it shares (`--trained_run`): what training produced.
TRAINING_OUTCOME = (
    "model", "model_type", "base_model", "init", "params_total", "params_trainable",
    "best_checkpoint", "global_step", "epochs", "train_seconds", "train_images_per_second",
)  # fmt: skip


@dataclass
class RunRecord:
    """results.json of a finished fine-tuning run: what was trained on which data, how the checkpoint was chosen,
    its validation and test metrics, and what it cost.

    `validation` and `test` are the metrics of the checkpoint selected on validation; test is evaluated once.
    """

    model: str
    validation: SplitMetrics
    test: SplitMetrics
    model_type: str | None = None
    base_model: str | None = None  # Hub id of the pretrained weights, when there are any
    init: str = "pretrained"  # or "scratch"
    params_total: int | None = None
    params_trainable: int | None = None
    image_size: int | list[int] | None = None
    linear_probe: bool = False
    d4_augment: bool = True
    tta: bool = False
    dataset: str = ""
    dataset_revision: str | None = None
    split_scheme: str | None = None  # the split actually used: default, poster, hub-split or published
    split: str | None = None  # how it was made, in one line (`hfgal.data.split.describe_split`)
    split_separation_arcsec: float | None = None  # linking radius, when sky neighbours were kept together
    split_close_pairs: list[dict[str, float]] | None = None  # per radius: close pairs, and how many cross the split
    preprocessing: str | None = None  # how images became model inputs (Geometry.describe())
    normalization: dict[str, list[float]] | None = None  # {"mean": [...], "std": [...]} of 0-1 pixels, as trained
    protocol: str | None = None  # the study protocol the run follows (poster, honest), when it follows one
    selection_on_test: SelectionOnTest | None = None  # diagnostic only, see SelectionOnTest
    seed: int | None = None
    run_name: str = ""
    best_checkpoint: str | None = None
    global_step: int | None = None
    epochs: float | None = None
    train_seconds: float | None = None
    train_images_per_second: float | None = None
    trained_by: str | None = None  # the run whose training this one shares (`--trained_run`)
    carbon: CarbonRecord = field(default_factory=CarbonRecord)
    cache_build_seconds: float = 0.0
    hardware: Hardware = field(default_factory=Hardware)
    training: Hyperparameters = field(default_factory=Hyperparameters)
    versions: dict[str, str | None] = field(default_factory=dict)
    hfgal_version: str | None = None
    complete: bool = True

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("validation", "test", "hardware", "training"):
            out[name] = dataclasses.asdict(out[name])
        out["carbon"] = self.carbon.to_dict()
        if self.selection_on_test is not None:
            out["selection_on_test"] = dataclasses.asdict(self.selection_on_test)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = RESULTS_FILE) -> RunRecord:
        if not isinstance(data, Mapping):
            raise HfgalError(f"{where}: not a results mapping; rerun the evaluation of this run")
        data = dict(data)
        for split in ("validation", "test"):
            metrics = data.get(split)
            if not isinstance(metrics, Mapping) or "accuracy" not in metrics or "macro_f1" not in metrics:
                raise HfgalError(f"{where}: no {split} metrics; rerun the evaluation of this run")
            data[split] = SplitMetrics.from_dict(metrics, f"{where} ({split})")
        data["carbon"] = CarbonRecord.from_dict(data.get("carbon"), f"{where} (carbon)")
        data["hardware"] = _from_mapping(Hardware, data.get("hardware") or {}, f"{where} (hardware)")
        data["training"] = _from_mapping(Hyperparameters, data.get("training") or {}, f"{where} (training)")
        if isinstance(data.get("selection_on_test"), Mapping):
            data["selection_on_test"] = _from_mapping(SelectionOnTest, data["selection_on_test"], where)
        return _from_mapping(cls, data, where)

    def training_outcome(self) -> dict[str, Any]:
        """What training produced (`TRAINING_OUTCOME`), for a run that shares this run's training."""
        return {name: getattr(self, name) for name in TRAINING_OUTCOME}

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write `run_dir/results.json` atomically: the last file of a run, so its presence marks it complete."""
        return atomic_write_json(Path(run_dir) / RESULTS_FILE, self.to_dict())
