"""The machine a run uses: what it is (CPU, GPUs, processes) and library versions for the run record, the torch
thread count every run sets for itself, and the allocator setting the recipe applies before training on a CPU."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import torch

from ..errors import HfgalError
from ..io import available_cores
from ..runs import Hardware

THREADS_ENV = "HFGAL_NUM_THREADS"
# Set by `accelerate launch` (every launcher mode) and torchrun in the processes they start.
LAUNCHER_ENV = ("ACCELERATE_MIXED_PRECISION", "ACCELERATE_DYNAMO_BACKEND", "TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE")


def hardware_info(num_processes: int = 1, num_machines: int = 1) -> Hardware:
    """CPU/GPU names and counts of this machine, and the size of the run."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return Hardware(
        cpu=cpu,
        cpu_count=os.cpu_count(),
        gpu=torch.cuda.get_device_name(0) if gpu_count else None,
        gpu_count=gpu_count,
        num_processes=num_processes,
        num_machines=num_machines,
        torch_threads=torch.get_num_threads(),
    )


def versions_info() -> dict[str, str | None]:
    """Installed versions of hfgal and the libraries that shape a run's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("hfgal", "torch", "transformers", "timm", "datasets", "accelerate", "codecarbon"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed blocks instead of handing big ones back to the OS; True if it applied.

    By default glibc serves every allocation above a few MB (a batch of activations, an augmented batch) with a
    fresh `mmap` and unmaps it when freed, so a CPU training step page-faults its way through every large tensor
    again (a normalised 32 x 3 x 224 x 224 batch: 11 ms of page faults for 1 ms of arithmetic on the 2-core test
    machine). Serving them from the heap and never trimming it (`M_MMAP_MAX=0`, a 1 GB trim threshold) is what
    PyTorch's CPU tuning guide gets from jemalloc/tcmalloc, without preloading a library. It affects the whole
    process, so the recipes call it only to train on a CPU; resident memory then stays at its peak.
    `HFGAL_KEEP_FREED_MEMORY=0` leaves glibc's default (for a shared login node, say).
    """
    import ctypes
    import platform

    if os.environ.get("HFGAL_KEEP_FREED_MEMORY") == "0":
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


# --------------------------------------------------------------------------- threads


def _positive_int(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise HfgalError(f"{name}={value!r} is not a thread count; set it to a whole number >= 1, or unset it")
    return number


def choose_threads(
    requested: int | None,
    on_cpu: bool,
    dataloader_workers: int = 0,
    env: Mapping[str, str] | None = None,
    cores: int | None = None,
) -> tuple[int, str]:
    """The torch intra-op thread count of one training process, and why (one phrase for the log).

    In order: `--cpu_threads N`; `HFGAL_NUM_THREADS=N`; `OMP_NUM_THREADS` when a person can be the one who set it;
    else the available cores shared among the machine's local processes (`LOCAL_WORLD_SIZE`). `accelerate launch`
    writes `OMP_NUM_THREADS` into every process it starts: `--num_cpu_threads_per_process`, else the launching
    shell's `OMP_NUM_THREADS`, else (`--cpu` only) physical cores / local processes when that is above 1, else 1;
    torchrun writes 1 when it starts several processes and nobody set it. So a value above 1 was chosen (by the
    user or by accelerate's `--cpu` rule) and is kept, while a launched process's 1 is most often nobody's choice
    and is not: a one-thread run asks for it with `--cpu_threads 1` or `HFGAL_NUM_THREADS=1`. On a GPU the host
    keeps its share minus one core per DataLoader worker, for what runs there (batch slicing, evaluation's metrics).

    Args:
        requested: `--cpu_threads` (None: not given).
        on_cpu: whether the model trains on a CPU.
        dataloader_workers: `--dataloader_num_workers` (each worker process takes a core on a GPU run).
        env: the environment (default `os.environ`).
        cores: CPUs available to this process (default `available_cores()`).

    Raises:
        HfgalError: `HFGAL_NUM_THREADS` is not a whole number >= 1.
    """
    env = os.environ if env is None else env
    if requested is not None:
        return requested, "--cpu_threads"
    if env.get(THREADS_ENV):
        return _positive_int(env[THREADS_ENV], THREADS_ENV), THREADS_ENV
    launched = any(env.get(name) for name in LAUNCHER_ENV)
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1 and not (launched and int(omp) == 1):
        return int(omp), "OMP_NUM_THREADS"
    cores = cores or available_cores()
    local = max(1, int(env.get("LOCAL_WORLD_SIZE") or 1))
    share = max(1, cores // local)
    why = f"{cores} available cores / {local} local process{'es' if local > 1 else ''}"
    if not on_cpu and dataloader_workers:
        share = max(1, share - dataloader_workers)
        why += f" - {dataloader_workers} DataLoader workers"
    if launched and omp == "1":
        why += f"; the launcher's OMP_NUM_THREADS=1 is not used, one thread is --cpu_threads 1 or {THREADS_ENV}=1"
    return share, why


def set_torch_threads(training_args) -> int:
    """Set this process's torch thread count (`choose_threads`) and say it once per machine; returns it.

    Args:
        training_args: the run's `GZ10TrainingArguments` (`cpu_threads`, device, `dataloader_num_workers`).
    """
    threads, why = choose_threads(
        getattr(training_args, "cpu_threads", None),
        on_cpu=training_args.device.type == "cpu",
        dataloader_workers=training_args.dataloader_num_workers,
    )
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if int(os.environ.get("LOCAL_RANK") or 0) == 0:
        where = "CPU" if training_args.device.type == "cpu" else "host"
        print(f"hfgal: {threads} torch {where} thread{'s' if threads > 1 else ''} per process ({why})", flush=True)
    return threads
