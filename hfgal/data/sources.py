"""GZ10 from any source as a Hugging Face `DatasetDict`: the original h5, a saved folder, an imagefolder, the Hub,
or synthetic galaxies.

Every source comes out with the same splits (`train`, `validation`, `test`) and the same features, so the rest of
hfgal never asks where the data came from.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..constants import DEFAULT_SEPARATION_ARCSEC, NUM_CLASSES
from ..errors import HfgalError
from ..hub_access import is_hub_id
from .build import build_gz10, check_labels, gz10_features
from .split import SPLITS, largest_remainder

if TYPE_CHECKING:
    from datasets import DatasetDict

logger = logging.getLogger(__name__)

H5_KEYS = ("images", "ans", "ra", "dec", "redshift", "pxscale")


class _H5Images:
    """Picklable chunk reader over the `images` dataset of a Galaxy10 h5 file."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, start: int, stop: int) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as f:
            return f["images"][start:stop]


def _read_h5_columns(path: Path) -> dict[str, np.ndarray]:
    import h5py

    if not path.exists():
        raise HfgalError(f"{path}: no such file; pass the path of Galaxy10_DECals.h5")
    if path.is_dir():
        raise HfgalError(f"{path}: is a folder, not an HDF5 file; pass the path of Galaxy10_DECals.h5")
    if path.stat().st_size == 0:
        raise HfgalError(f"{path}: the file is empty; download Galaxy10_DECals.h5 again")
    if not h5py.is_hdf5(path):
        raise HfgalError(f"{path}: not an HDF5 file; pass the Galaxy10_DECals.h5 file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise HfgalError(f"{path}: cannot open as HDF5 ({err}); the file may be truncated") from None
    with f:
        missing = [k for k in H5_KEYS if k not in f]
        if missing:
            raise HfgalError(
                f"{path}: missing key(s) {', '.join(missing)}; a Galaxy10 DECaLS h5 has {', '.join(H5_KEYS)}"
            )
        images = f["images"]
        if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] < 8 or images.shape[2] < 8:
            raise HfgalError(f"{path}: 'images' has shape {images.shape}; expected (N, 256, 256, 3) RGB images")
        if images.dtype != np.uint8:
            raise HfgalError(f"{path}: 'images' has dtype {images.dtype}; expected uint8")
        n = images.shape[0]
        if n == 0:
            raise HfgalError(f"{path}: 'images' holds no rows")
        columns = {}
        for key in H5_KEYS[1:]:
            data = f[key]
            if data.ndim != 1 or data.shape[0] != n:
                raise HfgalError(f"{path}: '{key}' has shape {data.shape} but 'images' has {n} rows; keys must align")
            columns[key] = data[()]
    if not np.issubdtype(columns["ans"].dtype, np.integer):
        raise HfgalError(f"{path}: 'ans' has dtype {columns['ans'].dtype}; expected integer class indices 0-9")
    check_labels(columns["ans"], str(path))
    return columns


def gz10_from_h5(
    path: str | os.PathLike,
    *,
    seed: int = 42,
    split_scheme: str = "default",
    separation_arcsec: float = DEFAULT_SEPARATION_ARCSEC,
    cache_dir: str | None = None,
    chunk_size: int = 256,
) -> DatasetDict:
    """Read a Galaxy10_DECals.h5 file into a split `DatasetDict`, a chunk of images at a time.

    Args:
        path: the h5 file (`images` uint8 (N,256,256,3), `ans`, `ra`, `dec`, `redshift`, `pxscale`).
        seed, split_scheme, separation_arcsec: see `hfgal.data.split.gz10_split`.
        cache_dir: where datasets writes its Arrow files.
        chunk_size: images held in memory at once (peak memory does not grow with N).

    Returns:
        `DatasetDict` with `train`, `validation`, `test` (see `build_gz10`).

    Raises:
        HfgalError: missing or malformed file, with the file and the problem in one line.
    """
    path = Path(path)
    columns = _read_h5_columns(path)
    stat = path.stat()
    return build_gz10(
        _H5Images(str(path.absolute())),
        columns["ans"],
        columns["ra"],
        columns["dec"],
        columns["redshift"],
        columns["pxscale"],
        seed=seed,
        split_scheme=split_scheme,
        separation_arcsec=separation_arcsec,
        source=str(path),
        cache_dir=cache_dir,
        chunk_size=chunk_size,
        fingerprint=f"{path.absolute()}@{stat.st_size}:{stat.st_mtime_ns}",
    )


# --------------------------------------------------------------------------- other sources


def _imagefolder(folder: Path, *, seed: int, split_scheme: str, cache_dir: str | None = None) -> DatasetDict:
    """An image folder with `metadata.csv` (file_name,label[,class_name][,ra,dec,...]) like gz10-sample."""
    import csv

    with open(folder / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "file_name" not in rows[0] or "label" not in rows[0]:
        raise HfgalError(f"{folder}/metadata.csv: needs the columns file_name,label; add them or pass another source")
    try:
        labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    except ValueError:
        raise HfgalError(f"{folder}/metadata.csv: 'label' must hold class indices 0-9") from None
    check_labels(labels, f"{folder}/metadata.csv")

    def column(name: str) -> np.ndarray:
        return np.array([float(r.get(name) or "nan") for r in rows], dtype=np.float64)

    files = [folder / r["file_name"] for r in rows]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise HfgalError(f"{folder}/metadata.csv names {missing[0]}, which does not exist ({len(missing)} missing)")

    def images(start: int, stop: int) -> list:
        # Original encoded bytes: no decode/re-encode, pixels stay exactly as stored.
        return [{"bytes": files[i].read_bytes(), "path": files[i].name} for i in range(start, stop)]

    return build_gz10(
        images,
        labels,
        column("ra"),
        column("dec"),
        column("redshift"),
        column("pxscale"),
        seed=seed,
        split_scheme=split_scheme,
        source=str(folder),
        cache_dir=cache_dir,
        fingerprint=f"{folder.absolute()}:" + ":".join(f"{p.name}@{p.stat().st_mtime_ns}" for p in files),
    )


def _carve_validation(dsd: DatasetDict, seed: int, fraction: float = 0.1) -> DatasetDict:
    """Stratified validation split carved from `train` (for sources published with train/test only)."""
    from datasets import DatasetDict

    labels = np.asarray(dsd["train"]["label"], dtype=np.int64)
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    rng = np.random.default_rng(seed)
    # Per class floor(fraction * count), then the rest of round(fraction * N) to the largest remainders, so the
    # split holds the right total even when every class is small.
    take = largest_remainder(counts * fraction, total=round(fraction * len(labels)), tiebreak=rng.random(NUM_CLASSES))
    held = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: take[c]] for c in range(NUM_CLASSES)])
    keep = np.setdiff1d(np.arange(len(labels)), held)
    return DatasetDict(
        {"train": dsd["train"].select(keep), "validation": dsd["train"].select(np.sort(held)), "test": dsd["test"]}
    )


def conform_gz10(dsd: DatasetDict, *, seed: int = 42, source: str = "") -> DatasetDict:
    """Bring any GZ10 layout to hfgal's: three splits, ClassLabel labels, every column present with its dtype.

    Accepts the published Hub copy (train/test only, `label` as plain integers): the label is cast to ClassLabel
    and a stratified validation split is carved from train.
    """
    from datasets import ClassLabel, DatasetDict

    renames = {"valid": "validation", "val": "validation", "dev": "validation"}
    dsd = DatasetDict({renames.get(k, k): v for k, v in dsd.items()})
    if "train" not in dsd or "test" not in dsd:
        raise HfgalError(f"{source}: needs 'train' and 'test' splits, found {sorted(dsd)}")
    features = gz10_features()
    out = {}
    for name, ds in dsd.items():
        if name not in SPLITS:
            continue
        if "image" not in ds.column_names or "label" not in ds.column_names:
            raise HfgalError(f"{source}: split '{name}' needs 'image' and 'label' columns, has {ds.column_names}")
        label_feature = ds.features["label"]
        if isinstance(label_feature, ClassLabel):
            if label_feature.num_classes != NUM_CLASSES:
                raise HfgalError(f"{source}: 'label' has {label_feature.num_classes} classes; GZ10 has 10")
        else:
            check_labels(np.asarray(ds["label"]), f"{source} ({name})")
        for col, dtype in (("ra", np.nan), ("dec", np.nan), ("redshift", np.nan), ("pxscale", np.nan)):
            if col not in ds.column_names:
                ds = ds.add_column(col, np.full(len(ds), dtype))
        if "gz10_index" not in ds.column_names:
            ds = ds.add_column("gz10_index", np.full(len(ds), -1, dtype=np.int64))
        ds = ds.select_columns(list(features))
        if ds.features != features:
            ds = ds.cast(features)
        out[name] = ds
    dsd = DatasetDict(out)
    if "validation" not in dsd:
        dsd = _carve_validation(dsd, seed)
    return DatasetDict({s: dsd[s] for s in SPLITS})


@dataclass(frozen=True)
class Source:
    """What a `load_gz10` source string names: its kind and where it is."""

    kind: str  # "synthetic", "saved" (save_to_disk folder), "imagefolder", "h5" or "hub"
    location: str  # the path, the Hub id, or the synthetic source itself
    size: int | None = None  # galaxies of a synthetic source


def resolve_source(source: str | os.PathLike) -> Source:
    """Decide what a source string names and check it can be read, without converting anything.

    A missing file, a folder that is not GZ10, a malformed h5 or a bad `synthetic:N` fail here, before any output
    folder or cache is touched.

    Raises:
        HfgalError: the source does not exist or does not look like GZ10 (one line).
    """
    source = os.fspath(source)
    if source == "synthetic" or source.startswith("synthetic:"):
        try:
            n = int(source.split(":", 1)[1]) if ":" in source else 2000
        except ValueError:
            raise HfgalError(f"bad synthetic source {source!r}; use 'synthetic' or 'synthetic:N'") from None
        if n < 100:
            raise HfgalError(f"synthetic:{n} is too small to split; use at least synthetic:100")
        return Source("synthetic", source, n)
    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir() and (path / "dataset_dict.json").is_file():
            return Source("saved", str(path))
        if path.is_dir() and (path / "metadata.csv").is_file():
            return Source("imagefolder", str(path))
        if path.is_file():
            _read_h5_columns(path)
            return Source("h5", str(path))
        raise HfgalError(
            f"{source}: not a GZ10 source (expected a save_to_disk folder, a folder with metadata.csv, or an h5 file)"
        )
    if source.lower().endswith((".h5", ".hdf5")):
        _read_h5_columns(path)  # says "no such file" with the h5 in mind
    if not is_hub_id(source):
        raise HfgalError(
            f"dataset source {source!r} does not exist; pass a Hub dataset id (user/name), a folder, an h5 file "
            "or 'synthetic'"
        )
    return Source("hub", source)


def load_gz10(
    source: str | os.PathLike = "synthetic",
    *,
    seed: int = 42,
    split_scheme: str = "default",
    revision: str | None = None,
    cache_dir: str | None = None,
) -> DatasetDict:
    """Load GZ10 from any source, always as `train`/`validation`/`test` with the same features.

    Args:
        source: a Hub dataset id (e.g. `matthieulel/galaxy10_decals`), a `save_to_disk` folder, a Galaxy10 h5
            path, an image folder with `metadata.csv`, or `"synthetic"` / `"synthetic:N"` (N generated galaxies,
            the offline default).
        seed: split seed (for sources that are split here).
        split_scheme: `default` or `poster` (for sources that are split here).
        revision: Hub dataset revision.
        cache_dir: datasets cache for sources that are converted.

    Returns:
        The `DatasetDict`.

    Raises:
        HfgalError: the source does not exist, cannot be reached, or does not look like GZ10.
    """
    found = resolve_source(source)
    if found.kind == "synthetic":
        from .synthetic import gz10_synthetic

        return gz10_synthetic(n=found.size, split_scheme=split_scheme, cache_dir=cache_dir)
    if found.kind == "saved":
        from datasets import load_from_disk

        return conform_gz10(load_from_disk(found.location), seed=seed, source=found.location)
    if found.kind == "imagefolder":
        return _imagefolder(Path(found.location), seed=seed, split_scheme=split_scheme, cache_dir=cache_dir)
    if found.kind == "h5":
        return gz10_from_h5(found.location, seed=seed, split_scheme=split_scheme, cache_dir=cache_dir)
    from datasets import load_dataset

    try:
        dsd = load_dataset(found.location, revision=revision, cache_dir=cache_dir)
    except Exception as err:  # datasets raises many types for offline / missing repos
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise HfgalError(
            f"could not load dataset {found.location!r} from the Hub ({reason}); pass a local folder, an h5 file or "
            "'synthetic' when offline"
        ) from None
    return conform_gz10(dsd, seed=seed, source=found.location)
