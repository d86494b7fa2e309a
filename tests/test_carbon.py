"""CarbonCallback: a real Trainer run measured offline, phases, failure handling, and the 2-process sum."""

from __future__ import annotations

import json
import logging
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from hfgal.errors import HfgalError
from hfgal.train.carbon import CarbonCallback

SUMMARY_KEYS = {
    "train",
    "eval",
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
}
ZERO_PHASE = {
    "emissions_kg": 0.0,
    "energy_kwh": 0.0,
    "duration_s": 0.0,
    "cpu_energy_kwh": 0.0,
    "gpu_energy_kwh": 0.0,
    "ram_energy_kwh": 0.0,
}


class TinyClassifier(nn.Module):
    """Four features to ten GZ10 classes, returning what Trainer expects from a classification model."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 10)

    def forward(self, pixel_values, labels=None):
        logits = self.linear(pixel_values)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _codecarbon_files() -> set[str]:
    """Everything codecarbon could leave in the home folder or the temp folder (config, lock, CSV)."""
    places = [Path.home(), Path.home() / ".cache", Path(tempfile.gettempdir())]
    found = set()
    for place in places:
        if place.is_dir():
            found |= {str(p) for p in place.glob("*codecarbon*")}
            found |= {str(p) for p in place.glob("emissions*.csv")}
            found |= {str(p) for p in place.glob("powermetrics_log*")}
    return found


def test_trainer_run_is_measured_offline_without_writing_files(tmp_path, monkeypatch):
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    monkeypatch.chdir(tmp_path)  # codecarbon's default output folder is the working directory
    before = _codecarbon_files()
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(64, 4, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    dataset = [{"pixel_values": x, "labels": int(y)} for x, y in zip(features, labels, strict=True)]
    run_dir = tmp_path / "run"
    args = TrainingArguments(
        output_dir=str(run_dir),
        max_steps=4,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=0.1,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    callback = CarbonCallback(country_iso_code="fra")
    model = TinyClassifier()
    initial = model.linear.weight.detach().clone()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset, callbacks=[callback])
    trainer.train()
    assert not torch.equal(initial, model.linear.weight.detach())  # it really trained
    after_train = callback.summary().to_dict()
    with callback.track("eval"):
        metrics = trainer.evaluate()
    assert metrics["eval_loss"] > 0
    summary = callback.summary().to_dict()

    assert set(summary) == SUMMARY_KEYS
    assert summary["train"] == after_train["train"]  # the eval phase did not add to training
    assert after_train["eval"] == ZERO_PHASE
    for phase in ("train", "eval"):
        assert summary[phase]["duration_s"] > 0
        assert summary[phase]["energy_kwh"] > 0  # codecarbon always models at least RAM power
        assert summary[phase]["emissions_kg"] > 0
    for key in ("emissions_kg", "energy_kwh", "duration_s"):
        assert summary[key] == pytest.approx(summary["train"][key] + summary["eval"][key])
    # France's low-carbon grid: codecarbon's offline table gives well under 0.2 kg CO2eq per kWh
    assert summary["emissions_kg"] / summary["energy_kwh"] < 0.2
    assert summary["country_iso_code"] == "FRA"
    assert summary["region"] is None
    assert summary["tracking_mode"] == "machine"
    assert isinstance(summary["cpu_model"], str) and summary["cpu_model"]
    assert summary["gpu_model"] is None or isinstance(summary["gpu_model"], str)
    json.dumps(summary)  # plain JSON types, ready for results.json

    assert _codecarbon_files() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert not list(tmp_path.rglob("*.csv"))


def test_country_changes_emissions_not_energy_accounting():
    usa = CarbonCallback(country_iso_code="USA")
    with usa.track("eval"):
        _busy(0.3)
    s = usa.summary().to_dict()
    # The USA grid is far more carbon-intensive than France's (about 0.38 vs 0.06 kg/kWh in codecarbon's table).
    assert s["emissions_kg"] / s["energy_kwh"] > 0.2
    assert s["country_iso_code"] == "USA"


def test_phases_add_up_and_names_are_checked():
    callback = CarbonCallback()
    with callback.track("eval"):
        _busy(0.1)
    first = callback.summary().to_dict()["eval"]["duration_s"]
    with callback.track("eval"):
        _busy(0.1)
    with callback.track("predict"):
        _busy(0.05)
    s = callback.summary().to_dict()
    assert s["eval"]["duration_s"] > first >= 0.1
    assert s["predict"]["duration_s"] >= 0.05
    assert s["duration_s"] == pytest.approx(sum(s[p]["duration_s"] for p in ("train", "eval", "predict")))
    with pytest.raises(HfgalError, match="not allowed"):
        with callback.track("energy_kwh"):
            pass
    with callback.track("eval"):
        with pytest.raises(HfgalError, match="while 'eval' is tracked"):
            with callback.track("predict"):
                pass


def test_disabled_is_a_no_op_with_the_same_schema():
    callback = CarbonCallback(enabled=False)
    with callback.track("eval"):
        _busy(0.05)
    s = callback.summary(gather=True).to_dict()
    assert set(s) == SUMMARY_KEYS
    assert s["train"] == ZERO_PHASE  # never started
    assert s["eval"]["duration_s"] >= 0.05  # wall time is measured with tracking off too
    assert s["eval"]["energy_kwh"] == s["emissions_kg"] == s["energy_kwh"] == 0.0
    assert s["cpu_model"] is None


def test_bad_settings_are_one_line_errors():
    with pytest.raises(HfgalError, match="country code 'XYZ'"):
        CarbonCallback(country_iso_code="XYZ")
    with pytest.raises(HfgalError, match="tracking_mode 'gpu'"):
        CarbonCallback(tracking_mode="gpu")
    CarbonCallback(country_iso_code="XYZ", enabled=False)  # nothing is checked when tracking is off


def test_codecarbon_failure_warns_once_and_reports_zero(monkeypatch, caplog):
    from codecarbon.core.resource_tracker import ResourceTracker

    def no_hardware(self):
        raise RuntimeError("no hardware information")

    # codecarbon catches this inside start() and only logs it: the callback must notice by itself.
    monkeypatch.setattr(ResourceTracker, "set_CPU_GPU_ram_tracking", no_hardware)
    callback = CarbonCallback()
    with caplog.at_level(logging.WARNING, logger="hfgal.train.carbon"):
        with callback.track("eval"):
            _busy(0.05)
        with callback.track("eval"):
            _busy(0.05)
    s = callback.summary().to_dict()
    assert s["eval"]["energy_kwh"] == s["eval"]["emissions_kg"] == 0.0
    assert s["eval"]["duration_s"] >= 0.1
    warnings = [r for r in caplog.records if r.name == "hfgal.train.carbon"]
    assert len(warnings) == 1 and "codecarbon could not start" in warnings[0].getMessage()


def test_only_local_rank_zero_measures(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    callback = CarbonCallback()
    with callback.track("eval"):
        _busy(0.05)
    s = callback.summary().to_dict()
    assert s["eval"]["energy_kwh"] == 0.0 and s["eval"]["duration_s"] >= 0.05
    assert s["cpu_model"] is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        results = {}
        # "machines": every rank is local rank 0 of its own machine; "one_machine": both ranks share a machine.
        for setting, local_rank in (("machines", 0), ("one_machine", rank)):
            os.environ["LOCAL_RANK"] = str(local_rank)
            callback = CarbonCallback(measure_power_secs=5)
            with callback.track("eval"):
                _busy(0.2 + 0.2 * rank)
            local, gathered = callback.summary().to_dict(), callback.summary(gather=True).to_dict()
            results[setting] = {"local": local, "gathered": gathered}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two fresh interpreters importing torch and transformers: ~20 s on 2 shared cores
def test_summary_gather_sums_machines_over_two_gloo_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_gather_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    machines = [r["machines"] for r in ranks]
    assert machines[0]["gathered"] == machines[1]["gathered"]  # every rank gets the same totals
    gathered = machines[0]["gathered"]
    local = [m["local"] for m in machines]
    assert all(s["eval"]["energy_kwh"] > 0 for s in local)
    for key in ("energy_kwh", "emissions_kg"):
        assert gathered["eval"][key] == pytest.approx(local[0]["eval"][key] + local[1]["eval"][key])
        assert gathered[key] == pytest.approx(gathered["eval"][key])
    # phases run side by side on the machines: the wall time is the slower rank's
    assert gathered["eval"]["duration_s"] == max(s["eval"]["duration_s"] for s in local)
    assert gathered["cpu_model"] == local[0]["cpu_model"]

    one = [r["one_machine"] for r in ranks]
    assert one[0]["gathered"] == one[1]["gathered"]
    assert one[1]["local"]["eval"]["energy_kwh"] == 0.0  # local rank 1 leaves the machine to local rank 0
    assert one[1]["local"]["cpu_model"] is None
    assert one[0]["gathered"]["eval"]["energy_kwh"] == pytest.approx(one[0]["local"]["eval"]["energy_kwh"])
    assert one[1]["gathered"]["cpu_model"] == one[0]["local"]["cpu_model"]


def _tiny_trainer(run_dir: Path, callback: CarbonCallback, max_steps: int):
    from transformers import Trainer, TrainingArguments

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(64, 4, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    dataset = [{"pixel_values": x, "labels": int(y)} for x, y in zip(features, labels, strict=True)]
    args = TrainingArguments(
        output_dir=str(run_dir), max_steps=max_steps, per_device_train_batch_size=8, learning_rate=0.1,
        use_cpu=True, report_to="none", save_strategy="steps", save_steps=3, logging_strategy="no",
        eval_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    torch.manual_seed(0)
    return Trainer(model=TinyClassifier(), args=args, train_dataset=dataset, callbacks=[callback])


def test_checkpoints_carry_the_training_so_far_and_a_resumed_run_adds_it(tmp_path):
    from hfgal.train.carbon import read_ledger

    run = tmp_path / "run"
    first = CarbonCallback(measure_power_secs=1)
    _tiny_trainer(run, first, max_steps=6).train()
    at3, segments3, complete3 = read_ledger(run / "checkpoint-3")
    at6, segments6, _ = read_ledger(run / "checkpoint-6")
    assert segments3 == segments6 == 1 and complete3
    assert 0 < at3.duration_s < at6.duration_s <= first.summary().phases["train"].duration_s
    assert 0 < at3.energy_kwh < at6.energy_kwh and at6.emissions_kg > 0
    assert at6.energy_kwh == pytest.approx(at6.cpu_energy_kwh + at6.gpu_energy_kwh + at6.ram_energy_kwh)

    # A second process resumes from checkpoint-3: its record is the ledger plus its own segment, and says so.
    resumed = CarbonCallback(measure_power_secs=1, resumed_from=run / "checkpoint-3")
    _tiny_trainer(run, resumed, max_steps=6).train(resume_from_checkpoint=str(run / "checkpoint-3"))
    record = resumed.summary()
    own = record.phases["train"].duration_s - at3.duration_s
    assert record.segments == 2 and record.complete
    assert own > 0 and record.phases["train"].energy_kwh > at3.energy_kwh
    assert read_ledger(run / "checkpoint-6")[1] == 2  # the checkpoint it wrote counts both segments

    # A checkpoint without a ledger (an older hfgal) resumes, but its record says the earlier cost is missing.
    (run / "checkpoint-3" / "carbon.json").unlink()
    blind = CarbonCallback(measure_power_secs=1, resumed_from=run / "checkpoint-3")
    assert blind.summary().complete is False


def test_concurrent_runs_book_their_share(monkeypatch):
    shared = CarbonCallback(concurrency=2, gpu_share=0.5)
    assert shared.tracking_mode == "process" and CarbonCallback().tracking_mode == "machine"

    class Measured:  # what codecarbon reports for a phase: 2 Wh of GPU energy among 3 Wh
        energy_consumed, cpu_energy, gpu_energy, ram_energy, emissions = 0.003, 0.0006, 0.002, 0.0004, 0.0012

    booked = shared._booked(Measured)
    assert booked.gpu_energy_kwh == pytest.approx(0.001) and booked.energy_kwh == pytest.approx(0.002)
    assert booked.emissions_kg == pytest.approx(0.0012 * 2 / 3)  # the same grid: emissions follow the energy
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert CarbonCallback()._tracker_kwargs(object)["gpu_ids"] == [2, 3]
    with pytest.raises(HfgalError, match="gpu_share"):
        CarbonCallback(gpu_share=0)


_BURN = """
import json, sys, time
from hfgal.train.carbon import CarbonCallback

callback = CarbonCallback(concurrency=int(sys.argv[1]), measure_power_secs=0.5)
with callback.track("eval"):
    wall, cpu = time.perf_counter(), time.process_time()
    end = wall + float(sys.argv[2])
    while time.perf_counter() < end:  # one core busy, like one of several runs sharing the machine
        pass
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"kwh": callback.summary().to_dict()["eval"]["cpu_energy_kwh"], "wall_s": wall, "cpu_s": cpu}))
"""


@pytest.mark.slow  # two rounds of one process per core, each burning a core for 8 s
def test_runs_sharing_the_machine_each_book_their_own_cpu_time():
    """Runs started together each book the CPU energy of their own CPU time, not the whole machine's.

    One process per core fills the machine. Alone (concurrency 1, "machine" mode) each books the whole machine at
    full load: the TDP. Shared (concurrency = cores, "process" mode) each books the TDP times its own share of the
    machine's CPU time, whatever else runs beside it (other jobs on a loaded CI machine take CPU time from the burners,
    and the bookings shrink with it).
    """
    import subprocess
    import sys

    import psutil

    cores = psutil.cpu_count()

    def together(concurrency: int) -> list[dict]:
        cmd = [sys.executable, "-c", _BURN, str(concurrency), "8"]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(cores)]
        return [json.loads(p.communicate(timeout=120)[0]) for p in procs]

    machine_watts = statistics.fmean(r["kwh"] / r["wall_s"] for r in together(concurrency=1))
    shared = together(concurrency=cores)
    for run in shared:
        own_share = run["cpu_s"] / (run["wall_s"] * cores)
        booked_share = run["kwh"] / run["wall_s"] / machine_watts
        # codecarbon samples each process's CPU time every 0.5 s; the whole machine would be a share of 1.0.
        assert 0.7 < booked_share / own_share < 1.4, (shared, machine_watts, cores)
    assert sum(r["kwh"] / r["wall_s"] for r in shared) < 1.2 * machine_watts, (shared, machine_watts)
