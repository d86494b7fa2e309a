"""Energy and CO2 of training and evaluation, measured offline with codecarbon, one tracker per machine.

Every cost is counted once: a resumed run adds the training its earlier processes did up to the checkpoint it
resumes from (a ledger saved with every checkpoint), and runs that share a machine book only their share of it
(codecarbon's process-level CPU/RAM tracking, and their share of shared GPUs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..errors import HfgalError
from ..io import atomic_write_json
from ..runs import CARBON_LEDGER_FILE, CHECKPOINT_PREFIX, PHASE_FIELDS, CarbonPhase, CarbonRecord

logger = logging.getLogger(__name__)

# Keys of the `carbon` dict that are not phase names.
_SUMMARY_KEYS = (
    "emissions_kg",
    "energy_kwh",
    "duration_s",
    "country_iso_code",
    "region",
    "tracking_mode",
    "cpu_model",
    "gpu_model",
    "cpu_energy_kwh",
    "gpu_energy_kwh",
    "ram_energy_kwh",
    "segments",
    "concurrency",
    "gpu_share",
    "complete",
)
_DEFAULT_PHASES = ("train", "eval")


@dataclass
class _Active:
    phase: str
    tracker: Any  # codecarbon tracker, or None on ranks that do not measure / when codecarbon failed
    started: float


class _DropExpectedWarnings(logging.Filter):
    # We ask for concurrent trackers on purpose (a study runs several on one machine); codecarbon warns about it
    # at every construction.
    def filter(self, record: logging.LogRecord) -> bool:
        return "Multiple instances of codecarbon are allowed" not in record.getMessage()


def _quiet_codecarbon() -> None:
    cc_logger = logging.getLogger("codecarbon")
    cc_logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropExpectedWarnings) for f in cc_logger.filters):
        cc_logger.addFilter(_DropExpectedWarnings())


class CarbonCallback(TrainerCallback):
    """Measure energy (kWh), emissions (kg CO2eq) and time of training and of any named phase, offline.

    Wraps `codecarbon.OfflineEmissionsTracker`: the grid's carbon intensity comes from the country (and optional
    region) you give, never from an IP look-up, so the number is right on clusters without internet.
    Training is tracked from `on_train_begin` to `on_train_end`; wrap other work in `with callback.track("eval")`.
    In multi-process runs only local rank 0 of each machine measures, and `summary(gather=True)` adds the machines
    up. With every checkpoint the training measured so far (all processes, all earlier segments) is saved as
    `carbon.json` in the checkpoint folder; a run resumed from that checkpoint (`resumed_from`) adds it to its own,
    so an interrupted run reports what the whole training cost, not its last segment. Nothing else is written:
    codecarbon's CSV/API outputs are off and no lock file is taken, so concurrent runs never block each other. If
    codecarbon fails to start, a warning is logged once and the phase reports zero energy: tracking never stops a
    run. Wall time is measured whether or not energy is.

    Args:
        output_dir: folder codecarbon may use for its own hardware logs (only on macOS with powermetrics or Intel
            Power Gadget); defaults to the Trainer's `output_dir`.
        country_iso_code: ISO 3166-1 alpha-3 code of the country whose electricity mix is used ("USA", "FRA").
        region: optional US state or Canadian province (e.g. "california") for a regional mix.
        enabled: False measures no energy (zeros with the same keys); wall time is still measured.
        tracking_mode: codecarbon's "machine" (the whole machine's CPU and RAM), "process" (this process's share of
            them) or "auto": "machine" for a run alone, "process" when `concurrency` > 1.
        measure_power_secs: seconds between power samples.
        concurrency: how many runs share this machine at the same time (recipes/study.py --jobs / --gpus).
        gpu_share: the share of the visible GPUs' energy this run books: 1 when they are its own (--gpus gives
            each run its own), 1/N when N concurrent runs share them. codecarbon reads GPU power per device, not
            per process.
        resumed_from: the checkpoint folder this run resumes from; its ledger is added to this run's training.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike | None = None,
        country_iso_code: str = "USA",
        region: str | None = None,
        enabled: bool = True,
        tracking_mode: str = "auto",
        measure_power_secs: float = 15.0,
        concurrency: int = 1,
        gpu_share: float = 1.0,
        resumed_from: str | os.PathLike | None = None,
    ):
        if tracking_mode not in ("auto", "machine", "process"):
            raise HfgalError(f"tracking_mode {tracking_mode!r} is not known; use 'auto', 'machine' or 'process'")
        if measure_power_secs <= 0:
            raise HfgalError(f"measure_power_secs={measure_power_secs} must be positive; the default is 15")
        if concurrency < 1 or not 0 < gpu_share <= 1:
            raise HfgalError(
                f"concurrency {concurrency} / gpu_share {gpu_share}: use concurrency >= 1, 0 < share <= 1"
            )
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.country_iso_code = str(country_iso_code).upper()
        self.region = region.lower() if region else None
        self.enabled = enabled
        self.concurrency = int(concurrency)
        self.gpu_share = float(gpu_share)
        if tracking_mode == "auto":
            tracking_mode = "process" if self.concurrency > 1 else "machine"
        self.tracking_mode = tracking_mode
        self.measure_power_secs = float(measure_power_secs)
        if enabled:
            _check_country(self.country_iso_code)
        self._phases: dict[str, CarbonPhase] = {name: CarbonPhase() for name in _DEFAULT_PHASES}
        self._hardware: dict[str, str | None] = {"cpu_model": None, "gpu_model": None}
        self._active: _Active | None = None
        self._warned = False
        # Launchers (torchrun, accelerate) set LOCAL_RANK; the Trainer's state refines it in on_train_begin.
        self._local_zero = int(os.environ.get("LOCAL_RANK", 0) or 0) == 0
        self._earlier, self._earlier_segments, self._complete = read_ledger(resumed_from)

    @classmethod
    def from_args(cls, args: Any, resumed_from: str | os.PathLike | None = None) -> CarbonCallback:
        """The callback a recipe run asks for with its `GZ10TrainingArguments` (country, region, sharing)."""
        return cls(
            country_iso_code=args.carbon_country_iso_code,
            region=args.carbon_region,
            enabled=args.carbon_tracking,
            tracking_mode=args.carbon_tracking_mode,
            concurrency=args.concurrent_runs,
            gpu_share=args.gpu_share,
            resumed_from=resumed_from,
        )

    # ------------------------------------------------------------------ Trainer hooks

    def on_train_begin(self, args, state, control, **kwargs):
        self._local_zero = bool(state.is_local_process_zero)
        if self.output_dir is None and getattr(args, "output_dir", None):
            self.output_dir = Path(args.output_dir)
        if self._active is not None:
            self._warn_once(f"training started inside carbon phase {self._active.phase!r}; it is counted there")
            return
        self._start("train")

    def on_train_end(self, args, state, control, **kwargs):
        if self._active is not None and self._active.phase == "train":
            self._stop()

    def on_save(self, args, state, control, **kwargs):
        # Every rank gets here after the checkpoint's files are written; the machines are added up, then the
        # process that saved the checkpoint records the training so far beside it.
        phases, _ = _gather({"train": self._training_so_far()}, dict(self._hardware))
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
            if checkpoint.is_dir():
                ledger = {
                    "train": dataclasses.asdict(phases["train"] + self._earlier),
                    "segments": self._earlier_segments + 1,
                    "complete": self._complete,
                }
                atomic_write_json(checkpoint / CARBON_LEDGER_FILE, ledger)

    # ------------------------------------------------------------------ phases

    @contextlib.contextmanager
    def track(self, phase: str) -> Iterator[CarbonCallback]:
        """Track the energy, emissions and time of the enclosed block as `phase` (added up over repeated uses).

        Args:
            phase: a name such as "eval"; it becomes a key of `summary()`.

        Returns:
            A context manager yielding this callback.

        Raises:
            HfgalError: if `phase` is a reserved summary key, or another phase is being tracked (a machine is
                measured once, so phases cannot nest).
        """
        if not isinstance(phase, str) or not phase or phase in _SUMMARY_KEYS:
            raise HfgalError(f"carbon phase name {phase!r} is not allowed; use a name such as 'eval' or 'predict'")
        if self._active is not None:
            raise HfgalError(
                f"carbon phase {phase!r} started while {self._active.phase!r} is tracked; end that phase first"
            )
        self._start(phase)
        try:
            yield self
        finally:
            self._stop()

    def _start(self, phase: str) -> None:
        self._phases.setdefault(phase, CarbonPhase())
        tracker = self._start_tracker() if self.enabled and self._local_zero else None
        self._active = _Active(phase, tracker, time.perf_counter())

    def _stop(self) -> None:
        active, self._active = self._active, None
        if active is None:
            return
        duration = time.perf_counter() - active.started
        booked = CarbonPhase()
        if active.tracker is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    stopped = active.tracker.stop()
                data = getattr(active.tracker, "final_emissions_data", None)
                if stopped is None or data is None:
                    raise RuntimeError("codecarbon returned no measurement (see its log above)")
                booked = self._booked(data)
                self._hardware = {"cpu_model": data.cpu_model or None, "gpu_model": data.gpu_model or None}
            except Exception as err:  # a measurement must never end a training run
                self._warn_once(f"codecarbon failed to measure phase {active.phase!r} ({err}); it counts as 0 kWh")
        self._phases[active.phase] += dataclasses.replace(booked, duration_s=duration)

    def _booked(self, data: Any) -> CarbonPhase:
        """What this run books from a codecarbon measurement (no duration): all of it, but only its share of the
        GPUs; emissions scale with the energy booked."""
        energy = float(data.energy_consumed)
        cpu, ram = float(data.cpu_energy or 0.0), float(data.ram_energy or 0.0)
        gpu = float(data.gpu_energy or 0.0) * self.gpu_share
        booked = energy - float(data.gpu_energy or 0.0) * (1 - self.gpu_share)
        emissions = float(data.emissions) * booked / energy if energy > 0 else float(data.emissions)
        return CarbonPhase(emissions, booked, 0.0, cpu, gpu, ram)

    def _training_so_far(self) -> CarbonPhase:
        """This process's training so far, the running tracker read without stopping it."""
        done = self._phases.get("train", CarbonPhase())
        active = self._active
        if active is None or active.phase != "train":
            return done
        booked = CarbonPhase()
        if active.tracker is not None:
            try:
                # codecarbon's public flush() skips a sample younger than 50 ms; a checkpoint books up to now.
                active.tracker._measure_power_and_energy()
                # codecarbon offers no public call for the totals with energy; this one has been stable since 2.x.
                booked = self._booked(active.tracker._prepare_emissions_data())
            except Exception as err:  # a measurement must never end a training run
                self._warn_once(f"codecarbon could not be read at a checkpoint ({err}); the ledger counts 0 kWh")
        return done + dataclasses.replace(booked, duration_s=time.perf_counter() - active.started)

    def _start_tracker(self):
        try:
            _quiet_codecarbon()
            from codecarbon import OfflineEmissionsTracker

            kwargs = self._tracker_kwargs(OfflineEmissionsTracker)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                tracker = OfflineEmissionsTracker(**kwargs)
                tracker.start()
            # codecarbon catches its own start-up errors and only logs them: an unset start time is the sign (and,
            # before codecarbon 3.3, no hardware list at all, or an empty one).
            if getattr(tracker, "_start_time", None) is None or not getattr(tracker, "_hardware", None):
                raise RuntimeError("the tracker did not start (see codecarbon's log above)")
            return tracker
        except Exception as err:  # a measurement must never end a training run
            self._warn_once(f"codecarbon could not start ({err}); energy and emissions are reported as 0")
            return None

    def _tracker_kwargs(self, tracker_cls) -> dict[str, Any]:
        from codecarbon.emissions_tracker import BaseEmissionsTracker

        accepted = set(inspect.signature(BaseEmissionsTracker.__init__).parameters)
        kwargs: dict[str, Any] = {
            "country_iso_code": self.country_iso_code,
            "region": self.region,
            "project_name": "hfgal",
            "measure_power_secs": self.measure_power_secs,
            "tracking_mode": self.tracking_mode,
            # Only the GPUs this process may use (codecarbon 3 reads CUDA_VISIBLE_DEVICES itself; 2.x does not).
            "gpu_ids": _visible_gpus(),
            "log_level": "warning",
            # A study runs several trackers on one machine; codecarbon 2.x would otherwise hold /tmp/.codecarbon.lock.
            "allow_multiple_runs": True,
            # Explicit values beat ~/.codecarbon.config, which could otherwise switch on an HTTP endpoint.
            "emissions_endpoint": False,
        }
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            kwargs["output_dir"] = str(self.output_dir)
        # codecarbon 3 replaced save_to_file with output_methods; both mean "write no emissions.csv".
        if "output_methods" in accepted:
            kwargs["output_methods"] = []
        else:
            kwargs["save_to_file"] = False
        if kwargs["gpu_ids"] is None:
            del kwargs["gpu_ids"]  # codecarbon's default: every GPU it sees
        return {k: v for k, v in kwargs.items() if k in accepted or k in ("country_iso_code", "region")}

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("hfgal carbon tracking: %s", message)

    # ------------------------------------------------------------------ results

    def summary(self, gather: bool = False) -> CarbonRecord:
        """The `carbon` record of results.json: per-phase and total kg CO2eq, kWh and seconds, and the setting.

        Args:
            gather: add up the machines of a multi-process run through `torch.distributed` (when initialised):
                emissions and energy are summed over ranks (ranks that did not measure add 0), durations take
                the longest rank. Every rank must call it, and every rank gets the same record.

        Returns:
            A `CarbonRecord` with a `train` and an `eval` phase and any other tracked phase; emissions in kg as
            codecarbon reports them.
        """
        phases = {name: dataclasses.replace(values) for name, values in self._phases.items()}
        hardware = dict(self._hardware)
        if gather:
            phases, hardware = _gather(phases, hardware)
        # The earlier segments are already a whole-cluster total: added once, after the machines are added up.
        phases["train"] = phases.get("train", CarbonPhase()) + self._earlier
        return CarbonRecord(
            phases=phases,
            country_iso_code=self.country_iso_code,
            region=self.region,
            tracking_mode=self.tracking_mode,
            cpu_model=hardware["cpu_model"],
            gpu_model=hardware["gpu_model"],
            segments=self._earlier_segments + 1,
            concurrency=self.concurrency,
            gpu_share=self.gpu_share,
            complete=self._complete,
        )


def read_ledger(checkpoint: str | os.PathLike | None) -> tuple[CarbonPhase, int, bool]:
    """The training a checkpoint's earlier segments did: (train phase, number of segments, all of it measured).

    A checkpoint without a ledger (saved by an older hfgal, or killed in the moment between its save and the
    ledger's) cannot say what came before it: nothing is added, and the record says it is incomplete.
    """
    if checkpoint is None:
        return CarbonPhase(), 0, True
    import json

    try:
        ledger = json.loads((Path(checkpoint) / CARBON_LEDGER_FILE).read_text())
        train = CarbonPhase(**{k: float(ledger["train"].get(k, 0.0)) for k in PHASE_FIELDS})
        return train, int(ledger["segments"]), bool(ledger.get("complete", True))
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning(
            "%s has no readable %s: the training before it is not counted in this run's energy, CO2 and time",
            checkpoint,
            CARBON_LEDGER_FILE,
        )
        return CarbonPhase(), 1, False


def _visible_gpus() -> list[int] | None:
    ids = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not ids:
        return None
    try:
        return [int(i) for i in ids.split(",") if i.strip()]
    except ValueError:  # GPU UUIDs: codecarbon 3 matches those itself
        return None


def _gather(phases: dict[str, CarbonPhase], hardware: dict[str, str | None]):
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return phases, hardware
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (phases, hardware))
    # Reduced in rank order on every rank, so all ranks compute bit-identical totals.
    names = list(dict.fromkeys(name for rank_phases, _ in gathered for name in rank_phases))
    merged = {}
    for name in names:
        per_rank = [rank_phases.get(name, CarbonPhase()) for rank_phases, _ in gathered]
        # Energy adds up over machines; they run a phase side by side, so its duration is the slowest one's.
        merged[name] = dataclasses.replace(
            sum(per_rank, CarbonPhase()), duration_s=float(max(p.duration_s for p in per_rank))
        )
    measured = [rank_hardware for _, rank_hardware in gathered if rank_hardware["cpu_model"] is not None]
    return merged, (measured[0] if measured else hardware)


def _check_country(code: str) -> None:
    try:
        from codecarbon.input import DataSource

        known = DataSource().get_global_energy_mix_data()
    except Exception:  # without codecarbon's tables the tracker warns at start instead
        return
    if code not in known:
        raise HfgalError(
            f"country code {code!r} is not in codecarbon's energy-mix table; "
            "use an ISO 3166-1 alpha-3 code such as USA, FRA, DEU or CAN"
        )
