"""GZ10 as a Hugging Face `DatasetDict`: from the original h5, a saved folder, an imagefolder, the Hub or synthetic.

Every source comes out with the same splits (`train`, `validation`, `test`) and the same features, so the rest of
hfgal never asks where the data came from.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .constants import DEFAULT_SEPARATION_ARCSEC, GZ10_CLASSES, NUM_CLASSES
from .split import SCHEMES, SPLITS, gz10_split, split_summary
from .utils import HfgalError, atomic_output_dir, atomic_write_json, output_lock, require_writable_dir

if TYPE_CHECKING:
    from datasets import DatasetDict, Features

logger = logging.getLogger(__name__)

H5_KEYS = ("images", "ans", "ra", "dec", "redshift", "pxscale")
SPLIT_INFO_FILE = "split_info.json"


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


def _check_labels(labels: np.ndarray, where: str) -> None:
    labels = np.asarray(labels)
    bad = (labels < 0) | (labels >= NUM_CLASSES)
    if bad.any():
        raise HfgalError(
            f"{where}: label {int(labels[bad][0])} at row {int(np.flatnonzero(bad)[0])} is outside the 10 GZ10 "
            f"classes (0-9); fix the labels or use a GZ10 source"
        )


def _rows(images: Callable[[int, int], np.ndarray], columns: dict[str, np.ndarray], chunk_size: int, stamp: str):
    """Yield GZ10 rows, reading `chunk_size` images at a time so memory does not grow with the dataset."""
    n = len(columns["label"])
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        block = images(start, stop)  # (b, 256, 256, 3) uint8
        for i in range(stop - start):
            row = {k: v[start + i].item() for k, v in columns.items()}
            row["image"] = block[i]
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
    split_scheme: str = "default",
    separation_arcsec: float = DEFAULT_SEPARATION_ARCSEC,
    source: str = "",
    cache_dir: str | None = None,
    chunk_size: int = 256,
    fingerprint: str | None = None,
) -> DatasetDict:
    """Build the GZ10 `DatasetDict` from column arrays and a chunked image reader.

    Args:
        images: `images(start, stop)` returns uint8 `(stop - start, H, W, 3)` rows of the source, in order.
        labels, ra, dec, redshift, pxscale: one value per row (degrees, arcsec/pixel; NaN redshift allowed).
        seed, split_scheme, separation_arcsec: see `hfgal.split.gz10_split`.
        source: where the rows came from (recorded in the split summary and the card).
        cache_dir: where datasets writes its Arrow files (default: the datasets cache).
        chunk_size: images read at once.
        fingerprint: identifies the source's content for the datasets cache (default: `source`).

    Returns:
        `DatasetDict` with `train`, `validation`, `test`; its `split_info` attribute summarises the split.
    """
    from datasets import Dataset, DatasetDict

    labels = np.asarray(labels, dtype=np.int64)
    _check_labels(labels, source or "dataset")
    if cache_dir is None:
        from datasets import config

        require_writable_dir(
            config.HF_DATASETS_CACHE, "datasets cache", "set HF_DATASETS_CACHE (or HF_HOME) to a writable folder"
        )
    n = len(labels)
    columns = {
        "label": labels,
        "ra": np.asarray(ra, dtype=np.float64),
        "dec": np.asarray(dec, dtype=np.float64),
        "redshift": np.asarray(redshift, dtype=np.float64),
        "pxscale": np.asarray(pxscale, dtype=np.float64),
        "gz10_index": np.arange(n, dtype=np.int64),
    }
    indices = gz10_split(
        labels, columns["ra"], columns["dec"], seed=seed, scheme=split_scheme, separation_arcsec=separation_arcsec
    )
    full = Dataset.from_generator(
        _rows,
        features=gz10_features(),
        cache_dir=cache_dir,
        # `stamp` only feeds the cache fingerprint: a rewritten source at the same path is read again.
        gen_kwargs={"images": images, "columns": columns, "chunk_size": chunk_size, "stamp": fingerprint or source},
    )
    dsd = DatasetDict({s: full.select(indices[s]) for s in SPLITS})
    split_of = np.empty(n, dtype=np.int64)
    for i, s in enumerate(SPLITS):
        split_of[indices[s]] = i
    info = split_summary(labels, split_of, columns["ra"], columns["dec"], separation_arcsec=separation_arcsec)
    info.update(source=source, scheme=split_scheme, seed=int(seed), fractions=SCHEMES[split_scheme][0])
    dsd.split_info = info
    return dsd


# --------------------------------------------------------------------------- h5


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
    _check_labels(columns["ans"], str(path))
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
        seed, split_scheme, separation_arcsec: see `hfgal.split.gz10_split`.
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
    _check_labels(labels, f"{folder}/metadata.csv")

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
    raw = counts * fraction
    take = np.floor(raw).astype(np.int64)
    extra = int(round(fraction * len(labels))) - int(take.sum())
    order = np.lexsort((rng.random(NUM_CLASSES), -(raw - take)))
    take[order[: max(extra, 0)]] += 1
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
            _check_labels(np.asarray(ds["label"]), f"{source} ({name})")
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
    source = os.fspath(source)
    if source == "synthetic" or source.startswith("synthetic:"):
        from .synthetic import gz10_synthetic

        try:
            n = int(source.split(":", 1)[1]) if ":" in source else 2000
        except ValueError:
            raise HfgalError(f"bad synthetic source {source!r}; use 'synthetic' or 'synthetic:N'") from None
        if n < 100:
            raise HfgalError(f"synthetic:{n} is too small to split; use at least synthetic:100")
        return gz10_synthetic(n=n, split_scheme=split_scheme, cache_dir=cache_dir)
    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir() and (path / "dataset_dict.json").is_file():
            from datasets import load_from_disk

            return conform_gz10(load_from_disk(str(path)), seed=seed, source=source)
        if path.is_dir() and (path / "metadata.csv").is_file():
            return _imagefolder(path, seed=seed, split_scheme=split_scheme, cache_dir=cache_dir)
        if path.is_file():
            return gz10_from_h5(path, seed=seed, split_scheme=split_scheme, cache_dir=cache_dir)
        raise HfgalError(
            f"{source}: not a GZ10 source (expected a save_to_disk folder, a folder with metadata.csv, or an h5 file)"
        )
    # A Hub id is exactly `namespace/name`; anything else that does not exist is a missing local path.
    if source.startswith((".", "/", "~")) or source.lower().endswith((".h5", ".hdf5")) or source.count("/") != 1:
        raise HfgalError(
            f"dataset source {source!r} does not exist; pass a Hub dataset id (user/name), a folder, an h5 file "
            "or 'synthetic'"
        )
    from datasets import load_dataset

    try:
        dsd = load_dataset(source, revision=revision, cache_dir=cache_dir)
    except Exception as err:  # datasets raises many types for offline / missing repos
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise HfgalError(
            f"could not load dataset {source!r} from the Hub ({reason}); pass a local folder, an h5 file or "
            "'synthetic' when offline"
        ) from None
    return conform_gz10(dsd, seed=seed, source=source)


# --------------------------------------------------------------------------- saving, pushing, CLI


def save_gz10(
    dsd: DatasetDict,
    out: str | os.PathLike,
    *,
    split_info: dict | None = None,
    repo_id: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `dsd` with `save_to_disk`, its `split_info.json` and its dataset card (README.md) into `out`.

    The folder is built in a temporary sibling and renamed at the end: a crash leaves no partial `out`.
    """
    from .dataset_card import render_dataset_card

    info = split_info or getattr(dsd, "split_info", None) or describe_splits(dsd)
    out = Path(out)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        dsd.save_to_disk(str(tmp))
        atomic_write_json(tmp / SPLIT_INFO_FILE, info)
        render_dataset_card(info, repo_id=repo_id).save(tmp / "README.md")
    return out


def describe_splits(dsd: DatasetDict, *, separation_arcsec: float = DEFAULT_SEPARATION_ARCSEC) -> dict:
    """Split summary (counts, sky groups, cross-split pairs) computed from a DatasetDict's own columns."""
    labels, ra, dec, split_of = [], [], [], []
    for i, s in enumerate(SPLITS):
        cols = dsd[s].select_columns(["label", "ra", "dec"]).with_format("numpy")[:]
        labels.append(cols["label"])
        ra.append(cols["ra"])
        dec.append(cols["dec"])
        split_of.append(np.full(len(cols["label"]), i))
    return split_summary(
        np.concatenate(labels),
        np.concatenate(split_of),
        np.concatenate(ra),
        np.concatenate(dec),
        separation_arcsec=separation_arcsec,
    )


def push_gz10(folder: str | os.PathLike, repo_id: str, *, private: bool | None = None) -> str:
    """Push a saved GZ10 folder (dataset + card) to the Hub as a dataset repo."""
    from datasets import load_from_disk
    from huggingface_hub import DatasetCard, HfApi

    from .hub import require_token, validate_repo_id

    validate_repo_id(repo_id)
    token = require_token()
    folder = Path(folder)
    dsd = load_from_disk(str(folder))
    try:
        # Card first: datasets' own push then merges its configs/dataset_info metadata into it.
        HfApi(token=token).create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        DatasetCard.load(folder / "README.md").push_to_hub(repo_id, repo_type="dataset", token=token)
        dsd.push_to_hub(repo_id, private=private, token=token)
    except Exception as err:
        raise HfgalError(
            f"push of {folder} to {repo_id} failed: {type(err).__name__}; check the id and access"
        ) from None
    return f"https://huggingface.co/datasets/{repo_id}"


def _build_cmd(args) -> int:
    if args.push_to:
        from .hub import require_token, validate_repo_id

        validate_repo_id(args.push_to)
        require_token()  # fail before hours of work, not after
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise HfgalError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    if args.h5 is None and args.source is None:
        raise HfgalError("nothing to build from; pass --h5 PATH (or --source SOURCE)")
    with output_lock(out, what="hfgal data build"), _staging_cache(out) as cache_dir:
        return _build(args, out, cache_dir)


@contextlib.contextmanager
def _staging_cache(out: Path) -> Iterator[str]:
    """A datasets cache beside `out`, deleted afterwards: a conversion writes nowhere but next to its output.

    Named like `atomic_output_dir`'s staging folders, so the leftovers of a killed build are swept by the next one.
    """
    import tempfile

    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp-{os.getpid()}-cache-", dir=out.parent) as tmp:
        yield tmp


def _build(args, out: Path, cache_dir: str) -> int:
    if args.h5 is not None:
        dsd = gz10_from_h5(
            args.h5,
            seed=args.seed,
            split_scheme=args.split_scheme,
            separation_arcsec=args.separation_arcsec,
            cache_dir=cache_dir,
        )
    else:
        # A Hub dataset is downloaded into the usual datasets cache (reused by later builds); local sources and
        # synthetic galaxies are converted in the staging cache.
        is_hub = not (args.source.startswith("synthetic") or Path(args.source).expanduser().exists())
        dsd = load_gz10(
            args.source, seed=args.seed, split_scheme=args.split_scheme, cache_dir=None if is_hub else cache_dir
        )
    save_gz10(dsd, out, repo_id=args.push_to, overwrite=args.overwrite)
    counts = {s: len(dsd[s]) for s in SPLITS}
    print(f"wrote {out} ({', '.join(f'{s}: {n}' for s, n in counts.items())})")
    if args.push_to:
        print(f"pushed to {push_gz10(out, args.push_to, private=args.private or None)}")
    return 0


def _synthetic_cmd(args) -> int:
    from .synthetic import gz10_synthetic

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise HfgalError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    if args.n < 100:
        raise HfgalError(f"--n {args.n} is too small to split into train/validation/test; use at least 100")
    with output_lock(out, what="hfgal data synthetic"), _staging_cache(out) as cache_dir:
        dsd = gz10_synthetic(
            n=args.n,
            seed=args.seed,
            proportions=args.proportions,
            split_scheme=args.split_scheme,
            cache_dir=cache_dir,
        )
        save_gz10(dsd, out, overwrite=args.overwrite)
    print(f"wrote {out} ({', '.join(f'{s}: {len(dsd[s])}' for s in SPLITS)})")
    return 0


def register_cli(subparsers) -> None:
    data = subparsers.add_parser("data", help="build GZ10 datasets (h5 -> Hugging Face Dataset, synthetic)")
    sub = data.add_subparsers(dest="data_command", metavar="{build,synthetic}", required=True)

    build = sub.add_parser("build", help="Galaxy10_DECals.h5 -> DatasetDict folder + card (optionally pushed)")
    build.add_argument("--h5", help="path of Galaxy10_DECals.h5")
    build.add_argument("--source", help="any load_gz10 source instead of --h5 (folder, Hub id, synthetic:N)")
    build.add_argument("--out", required=True, help="output folder (written atomically)")
    build.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    build.add_argument("--split-scheme", choices=sorted(SCHEMES), default="default")
    build.add_argument("--separation-arcsec", type=float, default=DEFAULT_SEPARATION_ARCSEC)
    build.add_argument("--push-to", metavar="REPO_ID", help="also push dataset + card to this Hub dataset repo")
    build.add_argument("--private", action="store_true", help="create the Hub repo private")
    build.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    build.set_defaults(func=_build_cmd)

    synth = sub.add_parser("synthetic", help="generate GZ10-like synthetic galaxies (the offline default)")
    synth.add_argument("--n", type=int, default=2000, help="number of galaxies (default 2000)")
    synth.add_argument("--out", required=True, help="output folder (written atomically)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--proportions", choices=["gz10", "balanced"], default="gz10")
    synth.add_argument("--split-scheme", choices=sorted(SCHEMES), default="default")
    synth.add_argument("--overwrite", action="store_true")
    synth.set_defaults(func=_synthetic_cmd)
