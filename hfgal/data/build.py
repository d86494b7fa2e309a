"""Rows -> split GZ10: the features every source shares, label checks, and the builder that assigns the split, then
writes each split straight in its own order, a chunk of images at a time, PNG-encoded by as many processes as there
are cores (`datasets`' own `num_proc`), and returns the splits with their `SplitInfo`."""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..constants import DEFAULT_SEPARATION_ARCSEC, GZ10_CLASSES, NUM_CLASSES
from ..errors import HfgalError
from ..io import available_cores, require_writable_dir
from .split import SCHEMES, SPLITS, GZ10Splits, SplitInfo, gz10_split, split_summary

if TYPE_CHECKING:
    from datasets import DatasetDict, Features

logger = logging.getLogger(__name__)


def gz10_features() -> Features:
    """The features every GZ10 split carries."""
    from datasets import ClassLabel, Features, Image, Value

    return Features(
        {
            "image": Image(),
            "label": ClassLabel(names=list(GZ10_CLASSES)),
            "ra": Value("float64"),
            "dec": Value("float64"),
            "redshift": Value("float64"),
            "pxscale": Value("float64"),
            "gz10_index": Value("int64"),
        }
    )


def check_labels(labels: np.ndarray, where: str) -> None:
    labels = np.asarray(labels)
    bad = (labels < 0) | (labels >= NUM_CLASSES)
    if bad.any():
        raise HfgalError(
            f"{where}: label {int(labels[bad][0])} at row {int(np.flatnonzero(bad)[0])} is outside the 10 GZ10 "
            f"classes (0-9); fix the labels or use a GZ10 source"
        )


def encode_png(pixels: np.ndarray) -> dict:
    """An image array -> the `{"bytes", "path"}` an `Image` feature stores: a lossless PNG, written fast.

    zlib level 1 with its run-length strategy (Pillow's PNG writer hands `compress_type` to zlib as the strategy):
    sky noise leaves deflate little to find beyond runs, so the files stay close to Pillow's default size in a
    fraction of its time, and encoding is most of `hfgal data build` (docs/speed.md, "GZ10 at full size").
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels)).save(buffer, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return {"bytes": buffer.getvalue(), "path": None}


def _runs(rows: np.ndarray) -> list[np.ndarray]:
    """Sorted rows -> the runs of consecutive rows they are made of."""
    return np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1)


def _split_rows(chunks: list[np.ndarray], images: Callable, columns: dict[str, np.ndarray], stamp: str):
    """Yield the GZ10 rows of one split, chunk by chunk (sorted source rows), so memory does not grow with N.

    `images(start, stop)` is called once per run of consecutive rows; arrays are encoded as PNG here (in the
    worker processes), already encoded images (`{"bytes", "path"}`) pass through.
    """
    for chunk in chunks:
        for run in _runs(chunk):
            block = images(int(run[0]), int(run[-1]) + 1)  # (len(run), H, W, 3) uint8, or encoded images
            for k, i in enumerate(run):
                row = {name: values[i].item() for name, values in columns.items()}
                image = block[k]
                row["image"] = encode_png(image) if isinstance(image, np.ndarray) else image
                yield row


def build_gz10(
    images: Callable[[int, int], np.ndarray],
    labels: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    redshift: np.ndarray,
    pxscale: np.ndarray,
    *,
    seed: int = 42,
    split_scheme: str | None = None,
    separation_arcsec: float | None = None,
    source: str = "",
    cache_dir: str | None = None,
    chunk_size: int = 64,
    fingerprint: str | None = None,
    num_proc: int | None = None,
) -> GZ10Splits:
    """Split GZ10 rows given as column arrays and a chunked image reader, and write each split.

    Args:
        images: `images(start, stop)` returns uint8 `(stop - start, H, W, 3)` rows of the source, in order (or
            already encoded `{"bytes", "path"}` images); picklable, as the writing processes call it.
        labels, ra, dec, redshift, pxscale: one value per row (degrees, arcsec/pixel; NaN redshift allowed).
        seed, split_scheme, separation_arcsec: see `hfgal.data.split.gz10_split`; None means `default` and the
            cutout width (`DEFAULT_SEPARATION_ARCSEC`). The request is checked where it entered hfgal
            (`hfgal.data.published.check_split_request`).
        source: where the rows came from (recorded in the split info and the card).
        cache_dir: where datasets writes its Arrow files (default: the datasets cache).
        chunk_size: images read and encoded at once by a writing process.
        fingerprint: identifies the source's content for the datasets cache (default: `source`).
        num_proc: processes that read, encode and write each split (default: the available cores, at most 8);
            each writes its own Arrow shard of the split.

    Returns:
        `GZ10Splits`: the `train`, `validation` and `test` splits, and their `SplitInfo` (counts, sky groups, close
        pairs crossing; `source`, `scheme`, `seed`, `fractions`, `grouped`).

    Raises:
        HfgalError: a label outside the 10 classes, or no writable datasets cache (one line).
    """
    scheme = split_scheme or "default"
    separation = DEFAULT_SEPARATION_ARCSEC if separation_arcsec is None else float(separation_arcsec)
    labels = np.asarray(labels, dtype=np.int64)
    check_labels(labels, source or "dataset")
    if cache_dir is None:
        from datasets import config

        require_writable_dir(
            config.HF_DATASETS_CACHE, "datasets cache", "set HF_DATASETS_CACHE (or HF_HOME) to a writable folder"
        )
    columns = {
        "label": labels,
        "ra": np.asarray(ra, dtype=np.float64),
        "dec": np.asarray(dec, dtype=np.float64),
        "redshift": np.asarray(redshift, dtype=np.float64),
        "pxscale": np.asarray(pxscale, dtype=np.float64),
        "gz10_index": np.arange(len(labels), dtype=np.int64),
    }
    indices = gz10_split(labels, columns["ra"], columns["dec"], seed=seed, scheme=scheme, separation_arcsec=separation)
    splits = _write_splits(
        indices, images, columns, cache_dir, chunk_size, fingerprint or source, num_proc or min(8, available_cores())
    )
    split_of = np.empty(len(labels), dtype=np.int64)
    for i, s in enumerate(SPLITS):
        split_of[indices[s]] = i
    counted = split_summary(labels, split_of, columns["ra"], columns["dec"], separation_arcsec=separation)
    fractions, grouping = SCHEMES[scheme]
    grouped = grouping and counted["separation_arcsec"] is not None
    info = SplitInfo(scheme=scheme, source=source, seed=int(seed), fractions=fractions, grouped=grouped, **counted)
    return GZ10Splits(splits, info)


def _write_splits(
    indices: dict[str, np.ndarray],
    images: Callable,
    columns: dict[str, np.ndarray],
    cache_dir: str | None,
    chunk_size: int,
    stamp: str,
    num_proc: int,
) -> DatasetDict:
    """Each split written once, in its final order (so saving it is a rename, not a copy of every PNG: `save_gz10`),
    by up to `num_proc` processes, each handed a contiguous run of chunks and writing its own Arrow shard."""
    from datasets import Dataset, DatasetDict

    dsd = DatasetDict()
    for s in SPLITS:
        chunks = [indices[s][i : i + chunk_size] for i in range(0, len(indices[s]), chunk_size)]
        procs = min(num_proc, len(chunks))
        dsd[s] = Dataset.from_generator(
            _split_rows,
            features=gz10_features(),
            cache_dir=cache_dir,
            split=s,
            # `stamp` only feeds the cache fingerprint: a rewritten source at the same path is read again.
            gen_kwargs={"chunks": chunks, "images": images, "columns": columns, "stamp": stamp},
            num_proc=procs if procs > 1 else None,
        )
    return dsd
