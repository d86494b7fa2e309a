"""Decode-once uint8 cache: GZ10 images resized to the model's resolution, stored as a memory-mapped .npy, and the
torch `Dataset` that slices whole `(B, 3, H, W)` uint8 batches from it.

PNG decoding and resizing are the expensive, per-image steps of the data path. They run once per
(dataset, resolution) and later runs, seeds and models at the same resolution reuse the file; training then only
slices a memory map, with no per-sample Python work.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..io import default_cache_root
from .geometry import Geometry, processor_pixels

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)


def cache_file_name(fingerprint: str, geometry: Geometry) -> str:
    """File name of a split's cache: its content (the dataset fingerprint), the geometry, and what computes the
    pixels (the image processor's class and the versions of transformers, torchvision and Pillow): a cache written by
    other code is rebuilt rather than mixed with the pixels that code would serve."""
    import hashlib
    import importlib.metadata as metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "none"

    processor = type(geometry.image_processor()).__name__
    code = [processor, *(version(p) for p in ("transformers", "torchvision", "pillow"))]
    digest = hashlib.sha256(json.dumps([geometry.processor_config((0,) * 3, (1,) * 3), code]).encode()).hexdigest()
    crop = f"-crop-of-{geometry.resize}" if geometry.crops else ""
    return f"gz10-{fingerprint}-{geometry.height}x{geometry.width}{crop}-{geometry.resample}-{digest[:12]}.npy"


def _stream_files(ds: Dataset) -> list[str] | None:
    """The Arrow files `ds` is exactly made of, in order (no indices mapping, no slice), or None."""
    from datasets import Dataset

    files = [f["filename"] for f in ds.cache_files]
    if ds._indices is not None or not files:
        return None
    return files if sum(len(Dataset.from_file(f)) for f in files) == len(ds) else None


def _images(ds: Dataset, files: list[str] | None, start: int, stop: int, batch: int = 64):
    """Yield `(row, PIL images)` over rows [start, stop) of `ds`, `batch` at a time.

    When `ds` is exactly its Arrow files they are read as a stream of record batches (plain reads, freed batch by
    batch): through the memory map, every PNG byte a worker decoded would stay resident in it until it exits
    (2+ GB for GZ10). Otherwise `ds` is read through `datasets`.
    """
    if files is None:
        images = ds.select_columns(["image"])
        for first in range(start, stop, batch):
            yield first, images[first : min(first + batch, stop)]["image"]
        return
    import pyarrow as pa

    feature, row = ds.features["image"], 0
    for path in files:
        with pa.OSFile(path) as source:
            for record_batch in pa.ipc.open_stream(source):
                lo, hi = max(start - row, 0), min(stop - row, record_batch.num_rows)
                if lo < hi:
                    cells = record_batch.column("image").slice(lo, hi - lo).to_pylist()
                    for k in range(0, len(cells), batch):
                        yield row + lo + k, [feature.decode_example(c) for c in cells[k : k + batch]]
                row += record_batch.num_rows
                if row >= stop:
                    return


def _fill(args: tuple) -> None:
    """Worker: decode rows [start, stop) of a dataset into the .npy file `path` (data from byte `offset`).

    Rows are written with plain positional writes, not through a memory map, so the cache's pages stay in the page
    cache instead of this process's resident memory.
    """
    ds, files, path, offset, start, stop, geometry = args
    processor = geometry.image_processor()  # the processor the run folder saves: the pixels inference serves
    fd = os.open(path, os.O_WRONLY)
    try:
        for first, batch in _images(ds, files, start, stop):
            block = np.ascontiguousarray(processor_pixels(processor, batch))  # (b, 3, H, W) uint8
            data, at = memoryview(block).cast("B"), offset + first * block[0].nbytes
            while data:  # a positional write may be short
                done = os.pwrite(fd, data, at)
                data, at = data[done:], at + done
        os.fsync(fd)  # on disk before the file is renamed into place
    finally:
        os.close(fd)


def uint8_cache(
    ds: Dataset,
    geometry: Geometry,
    cache_root: str | os.PathLike | None = None,
    num_proc: int | None = None,
) -> tuple[np.ndarray, float]:
    """Return a read-only memmap `(N, 3, H, W)` uint8 of `ds`'s images prepared as `geometry` says, building it on
    first use with the image processor a run folder saves (`Geometry.image_processor`).

    Args:
        ds: a GZ10 split (its `_fingerprint` identifies its content).
        geometry: the input size, crop and filter.
        cache_root: folder of cache files (default `default_cache_root()`).
        num_proc: decoding processes (default: up to 8, bounded by the CPUs).

    Returns:
        `(memmap, seconds spent building)`; 0 seconds when the cache was reused.
    """
    import time

    from ..io import available_cores, require_writable_dir

    root = Path(cache_root) if cache_root else default_cache_root()
    path = root / cache_file_name(ds._fingerprint, geometry)
    if path.exists():  # a read-only shared cache is fine once it holds the file
        return np.load(path, mmap_mode="r"), 0.0
    require_writable_dir(
        root,
        "decoded image cache",
        "set HFGAL_CACHE (or HF_HOME) to a writable folder, or pass --image_cache_dir",
    )
    start = time.perf_counter()
    n = len(ds)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        shape = (n, 3, geometry.height, geometry.width)
        header = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        offset = header.offset
        del header  # only the header and the file's size were wanted: rows are written by the workers
        num_proc = num_proc or max(1, min(8, available_cores(), n // 256))
        bounds = np.linspace(0, n, num_proc + 1, dtype=int)
        files = _stream_files(ds)
        jobs = [
            (ds, files, str(tmp), offset, int(a), int(b), geometry)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
            if b > a
        ]
        if num_proc > 1:
            import multiprocessing as mp

            # A forked worker must not enter the parent's intra-op thread pool (it would wait forever on threads
            # that were not forked): one thread each, as PyTorch's DataLoader workers do.
            context = mp.get_context("spawn" if _torch_cuda_initialised() else "fork")
            with context.Pool(num_proc, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                pool.map(_fill, jobs)
        else:
            for job in jobs:
                _fill(job)
        os.replace(tmp, path)  # atomic: a killed build never leaves a half-filled cache behind
    finally:
        if tmp.exists():
            tmp.unlink()
    seconds = time.perf_counter() - start
    logger.info("built uint8 cache %s (%d images, %.1fs)", path, n, seconds)
    return np.load(path, mmap_mode="r"), seconds


def _torch_cuda_initialised() -> bool:
    import sys

    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


# --------------------------------------------------------------------------- batches


class UInt8Images(torch.utils.data.Dataset):
    """A GZ10 split as a memory-mapped uint8 array: whole batches are sliced at once (`__getitems__`).

    The memmap is opened lazily in each process, so DataLoader workers never copy the array through pickling.
    """

    def __init__(self, cache_path: str, labels: np.ndarray, rows: np.ndarray | None = None):
        self.cache_path = cache_path
        self.labels = np.asarray(labels, dtype=np.int64)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels) if self.rows is None else len(self.rows)

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.cache_path, mmap_mode="r")
        return self._images

    def __getstate__(self):
        return {**self.__dict__, "_images": None}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        if self.rows is not None:
            idx = self.rows[idx]
        # One sorted fancy-index read of the memmap, then back to the sampler's order.
        order = np.argsort(idx, kind="stable")
        pixels = np.empty((len(idx), *self.images.shape[1:]), dtype=np.uint8)
        pixels[order] = self.images[idx[order]]
        return {"pixel_values": torch.from_numpy(pixels), "labels": torch.from_numpy(self.labels[idx])}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([index])
        return {k: v[0] for k, v in batch.items()}


def collate_uint8(batch: Any) -> dict[str, torch.Tensor]:
    """Collator for `UInt8Images`: batches arrive whole from `__getitems__`; single items are stacked."""
    if isinstance(batch, dict):
        return batch  # (B, 3, H, W) uint8 and (B,) int64
    return {k: torch.stack([item[k] for item in batch]) for k in batch[0]}


def cached_splits(
    dsd, geometry: Geometry, cache_dir: str | None = None, max_train_samples: int | None = None
) -> tuple[dict[str, UInt8Images], float]:
    """Every split of a GZ10 `DatasetDict` as `UInt8Images` over its uint8 cache.

    Args:
        dsd: the `DatasetDict` (train, validation, test).
        geometry: how images become the model's input.
        cache_dir: folder of the cache files (default `default_cache_root()`).
        max_train_samples: use only the first N training images.

    Returns:
        `({split: UInt8Images}, seconds spent building caches in this call)`.
    """
    splits, seconds = {}, 0.0
    for name, ds in dsd.items():
        images, built = uint8_cache(ds, geometry, cache_dir)
        labels = np.asarray(ds.select_columns(["label"]).with_format("numpy")["label"], dtype=np.int64)
        limit = max_train_samples if name == "train" else None
        rows = np.arange(limit) if limit is not None and limit < len(labels) else None
        splits[name], seconds = UInt8Images(images.filename, labels, rows), seconds + built
    return splits, seconds
