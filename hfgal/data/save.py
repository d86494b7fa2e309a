"""Split GZ10 as a folder: `save_to_disk` files, `split_info.json` and the dataset card, written whole (built aside,
renamed at the end) by one writer at a time. The library side of `hfgal data build | synthetic`.

A build writes each split's Arrow shards once, in the staging cache beside the output; saving renames them into
`save_to_disk`'s layout instead of copying every PNG a second time through memory (2+ GB for GZ10).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import HfgalError
from ..io import atomic_output_dir, atomic_write_json, atomic_write_text, output_lock
from .published import check_split_request
from .split import SPLIT_INFO_FILE, GZ10Splits

CARD_FILE = "README.md"  # the dataset card, where the Hub looks for it


def save_gz10(
    gz10: GZ10Splits,
    out: str | os.PathLike,
    *,
    repo_id: str | None = None,
    overwrite: bool = False,
    move_from: str | os.PathLike | None = None,
) -> Path:
    """Write the splits with `save_to_disk`, their `split_info.json` and the dataset card (README.md) into `out`.

    The folder is built in a temporary sibling and renamed at the end: a crash leaves no partial `out`.

    Args:
        gz10: the splits and their split info (as `load_gz10` and the builders return them).
        out: the folder to write.
        repo_id: the Hub dataset id the card will name, when it is going to be pushed.
        overwrite: replace `out` if it exists.
        move_from: a staging folder whose Arrow files may be moved: a split made of exactly such files (as
            `build_gz10` writes them) is saved by renaming them, not by copying its rows.
    """
    from datasets import config

    from .card import render_dataset_card

    out = Path(out)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        for name, ds in gz10.items():
            if not (move_from and _move_split(ds, tmp / name, Path(move_from))):
                ds.save_to_disk(str(tmp / name))
        atomic_write_text(tmp / config.DATASETDICT_JSON_FILENAME, json.dumps({"splits": list(gz10)}))
        atomic_write_json(tmp / SPLIT_INFO_FILE, gz10.info.to_dict())
        render_dataset_card(gz10.info, repo_id=repo_id).save(tmp / CARD_FILE)
    return out


def _move_split(ds, folder: Path, staging: Path) -> bool:
    """Save `ds` into `folder` as `Dataset.save_to_disk` lays it out, by renaming its Arrow files; True if done.

    Only a split that is exactly its Arrow files (no indices mapping, no change since they were written) lying in
    `staging` qualifies; anything else is left untouched (False) for `save_to_disk`. `state.json` holds what
    `save_to_disk` writes, `dataset_info.json` comes from `DatasetInfo.write_to_directory`; `tests/test_data.py`
    checks that `load_from_disk` reads the folder back as it reads `save_to_disk`'s.
    """
    from datasets import Dataset, config

    files = [Path(f["filename"]).resolve() for f in ds.cache_files]
    if ds._indices is not None or not files or not all(f.is_relative_to(staging.resolve()) for f in files):
        return False
    parts = [Dataset.from_file(str(f)) for f in files]
    if sum(len(p) for p in parts) != len(ds) or any(p.features != ds.features for p in parts):
        return False
    folder.mkdir(parents=True)
    names = [f"data-{k:05d}-of-{len(files):05d}.arrow" for k in range(len(files))]
    for file, name in zip(files, names, strict=True):
        os.replace(file, folder / name)
    state = {key: getattr(ds, key) for key in ("_fingerprint", "_format_columns", "_format_kwargs", "_format_type")}
    state.update(
        _output_all_columns=ds._output_all_columns,
        _split=str(ds.split) if ds.split is not None else None,
        _data_files=[{"filename": name} for name in names],
    )
    atomic_write_text(folder / config.DATASET_STATE_JSON_FILENAME, json.dumps(state, indent=2, sort_keys=True))
    ds.info.write_to_directory(str(folder), pretty_print=True)  # dataset_info.json
    return True


@contextlib.contextmanager
def _staging_cache(out: Path) -> Iterator[str]:
    """A datasets cache beside `out`, deleted afterwards: a conversion writes nowhere but next to its output.

    Named like `atomic_output_dir`'s staging folders, so the leftovers of a killed build are swept by the next one.
    """
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp-{os.getpid()}-cache-", dir=out.parent) as tmp:
        yield tmp


def build_dataset(
    out: str | os.PathLike,
    *,
    h5: str | os.PathLike | None = None,
    source: str | None = None,
    seed: int = 42,
    split_scheme: str | None = None,
    separation_arcsec: float | None = None,
    repo_id: str | None = None,
    overwrite: bool = False,
) -> GZ10Splits:
    """Convert a GZ10 source into a dataset folder `out` (`hfgal data build`), holding the folder's lock.

    Args:
        out: the folder to write (built aside and renamed at the end).
        h5: a Galaxy10_DECals.h5 file; or
        source: any `load_gz10` source (folder, Hub id, `synthetic:N`).
        seed, split_scheme, separation_arcsec: the split (see `hfgal.data.sources.load_gz10`; None: the source's
            honest default, a value the source cannot honour is refused).
        repo_id: the Hub dataset id the card will name, when it is going to be pushed.
        overwrite: replace `out` if it exists.

    Returns:
        The splits written, read back from `out`, and their split info.

    Raises:
        HfgalError: `out` exists, nothing to build from, the source is bad, or it cannot honour the split request
            (one line each, before anything is written).
    """
    from .sources import load_source, resolve_source

    out = Path(out)
    _refuse_existing(out, overwrite)
    if h5 is None and source is None:
        raise HfgalError("nothing to build from; pass --h5 PATH (or --source SOURCE)")
    found = resolve_source(h5 if h5 is not None else source)  # a bad source fails before anything is written
    if h5 is not None and found.kind != "h5":
        raise HfgalError(f"--h5 {h5} is not an h5 file; pass Galaxy10_DECals.h5, or use --source for folders")
    check_split_request(split_scheme, separation_arcsec, arrived=found.split, location=found.location)
    with output_lock(out, what="hfgal data build"), _staging_cache(out) as cache_dir:
        # A Hub dataset is downloaded into the usual datasets cache (reused by later builds); local sources and
        # synthetic galaxies are converted in the staging cache.
        gz10 = load_source(
            found,
            seed=seed,
            split_scheme=split_scheme,
            separation_arcsec=separation_arcsec,
            cache_dir=None if found.kind == "hub" else cache_dir,
        )
        save_gz10(gz10, out, repo_id=repo_id, overwrite=overwrite, move_from=cache_dir)
    return _reload(out, gz10)


def build_synthetic(
    out: str | os.PathLike,
    *,
    n: int = 2000,
    seed: int = 0,
    proportions: str = "gz10",
    split_scheme: str | None = None,
    overwrite: bool = False,
) -> GZ10Splits:
    """Generate `n` synthetic galaxies into a dataset folder `out` (`hfgal data synthetic`)."""
    from .synthetic import gz10_synthetic

    out = Path(out)
    _refuse_existing(out, overwrite)
    if n < 100:
        raise HfgalError(f"--n {n} is too small to split into train/validation/test; use at least 100")
    check_split_request(split_scheme, None)
    with output_lock(out, what="hfgal data synthetic"), _staging_cache(out) as cache_dir:
        gz10 = gz10_synthetic(n=n, seed=seed, proportions=proportions, split_scheme=split_scheme, cache_dir=cache_dir)
        save_gz10(gz10, out, overwrite=overwrite, move_from=cache_dir)
    return _reload(out, gz10)


def _reload(out: Path, built: GZ10Splits) -> GZ10Splits:
    """The folder just written, with the split info it was built with (the built splits may point at files moved
    there)."""
    from datasets import load_from_disk

    return GZ10Splits(load_from_disk(str(out)), built.info)


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise HfgalError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
