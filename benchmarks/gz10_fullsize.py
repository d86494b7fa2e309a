#!/usr/bin/env python
"""GZ10 at full size: time and peak memory of `hfgal data build`, of the uint8 cache and of a fine-tune over it.

    python benchmarks/gz10_fullsize.py --work-dir /tmp/gz10-fullsize          # 2 CPU cores: about 5 minutes
    python benchmarks/gz10_fullsize.py --work-dir /tmp/gz10-fullsize --finetune-epochs 1
    python benchmarks/gz10_fullsize.py --work-dir /tmp/gz10-fullsize --stages png,build --code OTHER_CHECKOUT

It first writes (once per work dir) a Galaxy10 DECaLS-schema h5 of the full size: 17,736 rows of `images` uint8
(N, 256, 256, 3), `ans`, `ra`, `dec`, `redshift`, `pxscale`. The coordinates are the real ones of all 17,736 GZ10
galaxies (`tests/data/galaxy10_coord.csv.gz`, with their duplicates and close pairs); labels follow the real class
counts; the pixels are hfgal's synthetic galaxies (sky noise included, so PNGs weigh what real cutouts do,
~125 KB). Then, each as its own process tree, watched for peak memory every 0.5 s:
  png         the PNG writer of the build (`hfgal.data.build.encode_png`) beside Pillow's level 1 and its default, on
              the real cutouts of tests/data/gz10-sample: CPU milliseconds per image (median of rounds, the writers
              interleaved so that other load hits them alike) and bytes;
  build       `hfgal data build --h5 H5 --out DIR` (the CLI command, as a subprocess);
  cache       the uint8 cache at 224 px of every split of DIR (`hfgal.data.cache.cached_splits`), from scratch;
  finetune    (with --finetune-epochs) `accelerate launch --num_processes 1 recipes/finetune.py` on DIR: the small
              ConvNeXt V2 at 224 px, batch 32, no checkpoints, then the final validation + test evaluation;
  model_only  (with --finetune-epochs) the same model trained on one batch through the same launcher and Trainer
              (benchmarks/example_pipeline.py): the memory the model itself needs, no data.
Peak RSS is the largest sum of resident memory over the process and all its children (file pages of the
memory-mapped Arrow files and uint8 cache included; pages that forked workers share with their parent count once per
process); PSS shares them out; the largest single process's peak RSS is given too. CPU seconds (user + system of
the whole tree) are far less sensitive than wall time to other programs on the machine.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from hfgal.io import atomic_file, available_cores

REPO = Path(__file__).resolve().parents[1]
COORDINATES = REPO / "tests" / "data" / "galaxy10_coord.csv.gz"
SMALL_CONVNEXTV2 = '{"depths": [1, 1, 2, 1], "hidden_sizes": [16, 32, 64, 128]}'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", required=True, help="h5, dataset folder and caches go here (~6 GB)")
    parser.add_argument("--rows", type=int, default=None, help="rows of the h5 (default: all 17,736)")
    parser.add_argument("--h5-compression", choices=["none", "gzip"], default="none")
    parser.add_argument("--image-size", type=int, default=224, help="uint8 cache resolution")
    parser.add_argument("--finetune-epochs", type=float, default=0, help="also fine-tune over the data (0: skip)")
    parser.add_argument("--stages", default="build,cache", help="comma-separated: png, build, cache")
    parser.add_argument("--png-rounds", type=int, default=7, help="rounds of the png stage (median)")
    parser.add_argument("--code", default=str(REPO), help="hfgal checkout whose data build and cache are timed")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- the h5


def _render(job: tuple[int, int, np.ndarray]) -> tuple[int, np.ndarray]:
    from hfgal.data.synthetic import synthetic_images

    start, stop, labels = job
    return start, synthetic_images(start, stop, labels, seed=0)


def write_h5(path: Path, rows: int | None, compression: str) -> Path:
    """A GZ10-schema h5 with the real coordinates, written once (a renamed temporary file)."""
    import h5py

    from hfgal.data.synthetic import synthetic_catalog

    if path.is_file():
        return path
    with gzip.open(COORDINATES, "rt") as f:
        coords = np.loadtxt(f, delimiter=",", skiprows=1)  # index, ra, dec
    n = rows or len(coords)
    catalog = synthetic_catalog(n, seed=0, proportions="gz10")
    tmp = path.with_name(path.name + ".tmp")
    start = time.perf_counter()
    import multiprocessing as mp

    with h5py.File(tmp, "w") as f, mp.get_context("fork").Pool(available_cores()) as pool:
        options = {"compression": "gzip", "compression_opts": 4} if compression == "gzip" else {}
        images = f.create_dataset("images", (n, 256, 256, 3), dtype=np.uint8, chunks=(1, 256, 256, 3), **options)
        f["ans"] = catalog["label"].astype(np.uint8)
        f["ra"], f["dec"] = coords[:n, 1], coords[:n, 2]
        f["redshift"], f["pxscale"] = catalog["redshift"], catalog["pxscale"]
        jobs = [(s, min(s + 256, n), catalog["label"]) for s in range(0, n, 256)]
        for first, block in pool.imap_unordered(_render, jobs):
            images[first : first + len(block)] = block
    os.replace(tmp, path)
    print(f"wrote {path} ({n} rows, {path.stat().st_size / 2**30:.2f} GB) in {time.perf_counter() - start:.0f}s")
    return path


# --------------------------------------------------------------------------- measuring a process tree


class TreeMemory:
    """Peak RSS and PSS summed over a process and its descendants, sampled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = self.peak_process = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            rss = pss = 0
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for process in processes:
                try:
                    one = process.memory_info().rss
                    rss, pss = rss + one, pss + _pss(process.pid)
                    self.peak_process = max(self.peak_process, one)
                except (psutil.Error, OSError):
                    continue
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def run_watched(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run `cmd`; its wall time and its process tree's peak RSS and PSS (MB)."""
    import resource

    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with atomic_file(log) as out:
        # Run from the log's folder: `python -m` would import hfgal from the current directory before PYTHONPATH.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
        watch = TreeMemory(proc.pid)
        code = proc.wait()
        seconds = time.perf_counter() - start
        watch.stop()
    if code != 0:
        raise SystemExit(f"gz10_fullsize.py: error: {' '.join(cmd[:4])} ... failed (exit {code}); see {log}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),  # user + system of the whole tree: less sensitive to other load than wall time
        "peak_rss_mb": _mb(watch.peak_rss),
        "peak_pss_mb": _mb(watch.peak_pss),
        "peak_rss_largest_process_mb": _mb(watch.peak_process),
    }


def _mb(value: float) -> float:
    return round(value / 2**20, 1)


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- stages

CACHE_SCRIPT = """
import json, sys
from hfgal.data.cache import cached_splits
from hfgal.data.geometry import Geometry
from hfgal.data.sources import load_gz10
gz10 = load_gz10(sys.argv[1])
splits, seconds = cached_splits(gz10.splits, Geometry(int(sys.argv[2])), sys.argv[3])
print(json.dumps({"seconds": seconds, "images": sum(len(s) for s in splits.values())}))
"""

PNG_SCRIPT = """
import io, json, statistics, sys, time
from pathlib import Path
import numpy as np
from PIL import Image
from hfgal.data.build import encode_png

def pillow(**options):
    def write(pixels):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", **options)
        return buffer.getvalue()
    return write

images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(Path(sys.argv[1]).glob("*.png"))]
writers = {
    "hfgal": lambda pixels: encode_png(pixels)["bytes"],
    "pillow_level1": pillow(compress_level=1),
    "pillow_default": pillow(),
}
for name, write in writers.items():
    for pixels in images:
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(write(pixels)))), pixels), name
ms = {name: [] for name in writers}
for _ in range(int(sys.argv[2])):
    for name, write in writers.items():
        start = time.thread_time()
        for pixels in images:
            write(pixels)
        ms[name].append(1000 * (time.thread_time() - start) / len(images))
kb = {name: sum(len(write(p)) for p in images) / len(images) / 1000 for name, write in writers.items()}
print(json.dumps({
    "images": len(images),
    "ms_per_image": {name: round(statistics.median(t), 2) for name, t in ms.items()},
    "kb_per_image": {name: round(size, 1) for name, size in kb.items()},
}))
"""


def main(argv: list[str] | None = None) -> int:
    from hfgal.train.hardware import hardware_info

    args = parse_args(argv)
    work = Path(args.work_dir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "datasets-cache"), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (args.code, os.environ.get("PYTHONPATH")) if p)
    suffix = "" if args.rows is None else f"-{args.rows}"
    h5 = write_h5(work / f"gz10-schema{suffix}-{args.h5_compression}.h5", args.rows, args.h5_compression)
    with __import__("h5py").File(h5, "r") as f:
        rows = len(f["ans"])
    out = work / ("gz10-built" if args.code == str(REPO) else "gz10-built-other")
    stages = [s for s in args.stages.split(",") if s]
    record: dict = {
        "benchmark": "gz10_fullsize",
        "h5": str(h5),
        "h5_gb": round(h5.stat().st_size / 2**30, 2),
        "rows": rows,
        "cpu": hardware_info().cpu,
        "cores": available_cores(),
    }

    if "png" in stages:
        cmd = [sys.executable, "-c", PNG_SCRIPT, str(REPO / "tests" / "data" / "gz10-sample"), str(args.png_rounds)]
        run_watched(cmd, env, work / "png.log")
        record["png"] = json.loads((work / "png.log").read_text().strip().splitlines()[-1])
        print(f"PNG writers: {record['png']}", flush=True)

    if "build" in stages:
        cmd = [sys.executable, "-m", "hfgal.cli", "data", "build", "--h5", str(h5), "--out", str(out), "--overwrite"]
        build = run_watched(cmd, env, work / "build.log")
        build.update(images_per_s=round(rows / build["seconds"], 1), out_gb=round(_folder_bytes(out) / 2**30, 2))
        record["build"] = build
        print(f"hfgal data build: {build}", flush=True)

    if "cache" in stages:
        cache_dir = work / "uint8-cache"
        shutil.rmtree(cache_dir, ignore_errors=True)
        cmd = [sys.executable, "-c", CACHE_SCRIPT, str(out), str(args.image_size), str(cache_dir)]
        cache = run_watched(cmd, env, work / "cache.log")
        inner = json.loads((work / "cache.log").read_text().strip().splitlines()[-1])
        cache_bytes = _folder_bytes(cache_dir)
        cache.update(
            build_seconds=round(inner["seconds"], 1),
            images_per_s=round(inner["images"] / inner["seconds"], 1),
            cache_mb=_mb(cache_bytes),
            image_size=args.image_size,
        )
        record["cache"] = cache
        print(f"uint8 cache: {cache}", flush=True)

    if args.finetune_epochs:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1"]
        finetune = launch + [str(REPO / "recipes" / "finetune.py"), "--model", "convnextv2-tiny", "--init", "scratch"]
        finetune += ["--model_config_overrides", SMALL_CONVNEXTV2, "--image_size", str(args.image_size)]
        finetune += ["--dataset", str(out), "--output_dir", str(work / "finetune"), "--overwrite_output_dir", "true"]
        finetune += ["--num_train_epochs", str(args.finetune_epochs), "--per_device_train_batch_size", "32"]
        finetune += ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]
        finetune += ["--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true"]
        cache_env = {**env, "HFGAL_CACHE": str(work / "uint8-cache")}  # the cache built above: reused
        tuned = run_watched(finetune, cache_env, work / "finetune.log")
        model_only = launch + [str(REPO / "benchmarks" / "example_pipeline.py"), "--pipeline", "model_only"]
        model_only += ["--dataset", str(out), "--model-config-overrides", SMALL_CONVNEXTV2, "--max-steps", "30"]
        model_only += ["--image-size", str(args.image_size), "--device", "cpu", "--result", str(work / "mo.json")]
        alone = run_watched(model_only, env, work / "model_only.log")
        cache_mb = _mb(_folder_bytes(work / "uint8-cache"))
        record["finetune"] = {
            **tuned,
            "epochs": args.finetune_epochs,
            "model_only_peak_rss_mb": alone["peak_rss_mb"],
            "cache_mb": cache_mb,
            # What the fine-tune holds beyond its memory-mapped cache and what the model alone needs.
            "excess_mb": round(tuned["peak_rss_mb"] - cache_mb - alone["peak_rss_mb"], 1),
        }
        print(f"fine-tune: {record['finetune']}", flush=True)

    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
