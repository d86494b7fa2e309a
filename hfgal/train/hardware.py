"""The machine a run uses: what it is (CPU, GPUs, processes) and library versions for the run record, and the CPU
settings the recipe applies before training on a CPU."""

from __future__ import annotations

import os
import sys

import torch

from .results import Hardware


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
