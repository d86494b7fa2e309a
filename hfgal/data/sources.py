"""GZ10 from any source as Hugging Face datasets: the original h5 (a local file, or downloaded from Zenodo), a saved
folder, an imagefolder, the Hub, or synthetic galaxies.

Every source comes out with the same splits (`train`, `validation`, `test`) and the same features, so the rest of
hfgal never asks where the data came from; beside them, a `SplitInfo` says how the split was made (hfgal's own, or
the one the source was published with), and a split the source cannot honour is refused rather than faked.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import GZ10_H5_FILENAME, GZ10_ZENODO_RECORD
from ..errors import HfgalError
from ..hub.access import is_hub_id
from .build import build_gz10, check_labels
from .published import check_split_request, conform_gz10, saved_split_info
from .split import PUBLISHED_SPLIT, GZ10Splits, SplitInfo

logger = logging.getLogger(__name__)

H5_KEYS = ("images", "ans", "ra", "dec", "redshift", "pxscale")


class _H5Images:
    """Picklable chunk reader over the `images` dataset of a Galaxy10 h5 file (opened once per process: a split's
    rows are read a short run at a time)."""

    def __init__(self, path: str):
        self.path = path
        self._file = None

    def __getstate__(self):
        return {"path": self.path, "_file": None}  # an open file is neither picklable nor part of the content

    def __call__(self, start: int, stop: int) -> np.ndarray:
        import h5py

        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file["images"][start:stop]


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
    split_scheme: str | None = None,
    separation_arcsec: float | None = None,
    cache_dir: str | None = None,
    chunk_size: int = 64,
    source: str | None = None,
    num_proc: int | None = None,
) -> GZ10Splits:
    """Read a Galaxy10_DECals.h5 file into split GZ10, a chunk of images at a time.

    Args:
        path: the h5 file (`images` uint8 (N,256,256,3), `ans`, `ra`, `dec`, `redshift`, `pxscale`).
        seed, split_scheme, separation_arcsec: see `hfgal.data.split.gz10_split` (None: `default`, linking radius
            the cutout width).
        cache_dir: where datasets writes its Arrow files.
        chunk_size: images held in memory at once (peak memory does not grow with N).
        source: how the split summary names the data (default: the path).
        num_proc: processes reading and encoding each split (see `build_gz10`).

    Returns:
        `GZ10Splits`: `train`, `validation`, `test` and their `SplitInfo` (see `build_gz10`).

    Raises:
        HfgalError: missing or malformed file, or a split request that is not valid, with the problem in one line.
    """
    check_split_request(split_scheme, separation_arcsec)
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
        source=source or str(path),
        cache_dir=cache_dir,
        chunk_size=chunk_size,
        num_proc=num_proc,
        fingerprint=f"{path.absolute()}@{stat.st_size}:{stat.st_mtime_ns}",
    )


# --------------------------------------------------------------------------- other sources


def _imagefolder(
    folder: Path,
    *,
    seed: int,
    split_scheme: str | None,
    separation_arcsec: float | None = None,
    cache_dir: str | None = None,
) -> GZ10Splits:
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
        separation_arcsec=separation_arcsec,
        source=str(folder),
        cache_dir=cache_dir,
        fingerprint=f"{folder.absolute()}:" + ":".join(f"{p.name}@{p.stat().st_mtime_ns}" for p in files),
    )


@dataclass(frozen=True)
class Source:
    """What a `load_gz10` source string names: its kind and where it is."""

    kind: str  # "synthetic", "saved" (save_to_disk folder), "imagefolder", "h5", "zenodo" or "hub"
    location: str  # the path (for "zenodo": where the download lives), the Hub id, or the synthetic source itself
    size: int | None = None  # galaxies of a synthetic source
    # The split a source arrives with (a saved folder's split_info.json, else `published`); None: split here.
    split: SplitInfo | None = None


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
    if source == "zenodo":
        from .download import gz10_h5_path, offline

        path = gz10_h5_path()
        if path.is_file():
            _read_h5_columns(path)
        elif offline():
            raise HfgalError(
                f"source 'zenodo': {GZ10_H5_FILENAME} is not downloaded yet ({path}) and HF_HUB_OFFLINE is set; run "
                "`hfgal data download` online first, or pass the path of a local copy"
            )
        return Source("zenodo", str(path))
    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir() and (path / "dataset_dict.json").is_file():
            published = SplitInfo(scheme=PUBLISHED_SPLIT, source=str(path))
            return Source("saved", str(path), split=saved_split_info(path) or published)
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
            f"dataset source {source!r} does not exist; pass a Hub dataset id (user/name), a folder, an h5 file, "
            "'zenodo' or 'synthetic'"
        )
    return Source("hub", source, split=SplitInfo(scheme=PUBLISHED_SPLIT, source=source))


def load_gz10(
    source: str | os.PathLike = "synthetic",
    *,
    seed: int = 42,
    split_scheme: str | None = None,
    separation_arcsec: float | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> GZ10Splits:
    """Load GZ10 from any source, always as `train`/`validation`/`test` with the same features, and how it was split.

    Args:
        source: a Hub dataset id (e.g. `matthieulel/galaxy10_decals`), a `save_to_disk` folder, a Galaxy10 h5
            path, `"zenodo"` (Galaxy10_DECals.h5 from Zenodo record 10845026, downloaded once into hfgal's cache),
            an image folder with `metadata.csv`, or `"synthetic"` / `"synthetic:N"` (N generated galaxies, the
            offline default).
        seed: split seed (for sources that are split here, and the validation carved from a published train).
        split_scheme: `default` or `poster` for sources that are split here; None (the default) means the source's
            honest default: hfgal's duplicate-aware `default` split where the data has coordinates, the published
            split for the Hub and saved folders.
        separation_arcsec: linking radius of the `default` split (None: the cutout width, 67.072").
        revision: Hub dataset revision.
        cache_dir: datasets cache for sources that are converted.

    Returns:
        `GZ10Splits`: `.splits`, the `DatasetDict`, and `.info`, the `SplitInfo` of the split actually used:
        `scheme` (`default`, `poster`, `hub-split` or `published`), its one-line `description`, `seed`,
        `separation_arcsec`, `grouped`, and the close pairs that cross it (`close_pairs`, None without coordinates).

    Raises:
        HfgalError: the source does not exist, cannot be reached, does not look like GZ10, or cannot honour an
            explicit `split_scheme` / `separation_arcsec` (one line).
    """
    found = resolve_source(source)
    check_split_request(split_scheme, separation_arcsec, arrived=found.split, location=found.location)
    return load_source(
        found,
        seed=seed,
        split_scheme=split_scheme,
        separation_arcsec=separation_arcsec,
        revision=revision,
        cache_dir=cache_dir,
    )


def load_source(
    found: Source,
    *,
    seed: int = 42,
    split_scheme: str | None = None,
    separation_arcsec: float | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> GZ10Splits:
    """`load_gz10` of a source `resolve_source` found, for a split request already checked against it
    (`check_split_request`)."""
    split = {"seed": seed, "split_scheme": split_scheme, "separation_arcsec": separation_arcsec}
    if found.kind == "synthetic":
        from .synthetic import gz10_synthetic

        return gz10_synthetic(
            n=found.size, split_scheme=split_scheme, separation_arcsec=separation_arcsec, cache_dir=cache_dir
        )
    if found.kind == "saved":
        from datasets import load_from_disk

        gz10 = conform_gz10(load_from_disk(found.location), seed=seed, source=found.location)
        saved = saved_split_info(Path(found.location))  # the split it was built with, not merely "published"
        return gz10 if saved is None else GZ10Splits(gz10.splits, saved)
    if found.kind == "imagefolder":
        return _imagefolder(Path(found.location), **split, cache_dir=cache_dir)
    if found.kind == "h5":
        return gz10_from_h5(found.location, **split, cache_dir=cache_dir)
    if found.kind == "zenodo":
        from .download import download_gz10

        path = download_gz10()
        source_name = f"zenodo:{GZ10_ZENODO_RECORD}/{GZ10_H5_FILENAME}"
        return gz10_from_h5(path, **split, cache_dir=cache_dir, source=source_name)
    return _hub_gz10(found.location, seed, revision, cache_dir)


def _hub_gz10(repo_id: str, seed: int, revision: str | None, cache_dir: str | None) -> GZ10Splits:
    from datasets import load_dataset

    try:
        dsd = load_dataset(repo_id, revision=revision, cache_dir=cache_dir)
    except Exception as err:  # datasets raises many types for offline / missing repos
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise HfgalError(
            f"could not load dataset {repo_id!r} from the Hub ({reason}); pass a local folder, an h5 file or "
            "'synthetic' when offline"
        ) from None
    return conform_gz10(dsd, seed=seed, source=repo_id)
