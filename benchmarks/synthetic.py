"""Measure how fast `hfgal.data.synthetic` renders 256x256 galaxies on ONE core (a benchmark, not a test).

    python benchmarks/synthetic.py                 # 1000 images, balanced classes, pinned to one core
    python benchmarks/synthetic.py --n 3000 --profile

Prints images/second (wall-clock and per CPU-second) overall and per class. BLAS and OpenMP are limited to one
thread before numpy loads, and the process is pinned to a single CPU where the OS allows it, so the number is a
per-core rate.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from hfgal.constants import GZ10_CLASSES, NUM_CLASSES  # noqa: E402
from hfgal.data.synthetic import synthetic_catalog, synthetic_images  # noqa: E402
from hfgal.errors import run_cli  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images to render (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="also print the top cProfile entries")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    labels = synthetic_catalog(args.n, seed=args.seed, proportions="balanced")["label"]
    synthetic_images(0, min(20, args.n), labels, args.seed)  # warm the grid caches

    start, cpu_start = time.perf_counter(), time.process_time()
    images = synthetic_images(0, args.n, labels, args.seed)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    # On a shared machine wall time includes waiting for the core; CPU time is what one free core would take.
    print(f"{args.n} images {images.shape[1:]} in {seconds:.2f} s wall, {cpu:.2f} s CPU")
    print(f"{args.n / seconds:.0f} images/s wall-clock, {args.n / cpu:.0f} images/s per CPU-second (one core)")

    # Per-class rates on a smaller sample: classes differ in how many light components they draw.
    per_class = max(args.n // NUM_CLASSES, 10)
    for c in range(NUM_CLASSES):
        rows = np.full(per_class, c, dtype=np.uint8)
        cpu_start = time.process_time()
        synthetic_images(0, per_class, rows, args.seed)
        rate = per_class / (time.process_time() - cpu_start)
        print(f"  {c} {GZ10_CLASSES[c]:<24} {rate:6.0f} images/s per CPU-second")

    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(synthetic_images, 0, args.n, labels, args.seed)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    run_cli(main)
