"""Sources that arrive already split (the published Hub copy, a saved dataset folder): their layout brought to
hfgal's, their split recorded as it is; and the one check of a split request, which refuses to split them
differently.

The published Hub copy `matthieulel/galaxy10_decals` has only `image` and `label` and a train/test split: no sky
coordinates, so no duplicate-aware split can be made from it. hfgal keeps its train/test (the poster's test images),
carves a stratified validation split from train, and says so (`hub-split (no coordinates)`) rather than calling it
hfgal's default split.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..constants import NUM_CLASSES
from ..errors import HfgalError
from .build import check_labels, gz10_features
from .split import (
    HUB_SPLIT,
    PUBLISHED_SPLIT,
    SCHEMES,
    SPLIT_INFO_FILE,
    SPLITS,
    GZ10Splits,
    SplitInfo,
    describe_splits,
    largest_remainder,
)

if TYPE_CHECKING:
    from datasets import DatasetDict


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


def conform_gz10(dsd: DatasetDict, *, seed: int = 42, source: str = "") -> GZ10Splits:
    """Bring any GZ10 layout to hfgal's: three splits, ClassLabel labels, every column present with its dtype.

    Accepts the published Hub copy (train/test only, `label` as plain integers): the label is cast to ClassLabel
    and a stratified validation split is carved from train. Its `info` records the split as it is: `hub-split`
    (published train/test, validation carved here) or `published` (all three splits as published), with the close
    pairs that cross it when the source has coordinates.
    """
    from datasets import DatasetDict

    renames = {"valid": "validation", "val": "validation", "dev": "validation"}
    dsd = DatasetDict({renames.get(k, k): v for k, v in dsd.items()})
    if "train" not in dsd or "test" not in dsd:
        raise HfgalError(f"{source}: needs 'train' and 'test' splits, found {sorted(dsd)}")
    dsd = DatasetDict({name: _conform_split(ds, name, source) for name, ds in dsd.items() if name in SPLITS})
    if "validation" in dsd:
        info = describe_splits(dsd, scheme=PUBLISHED_SPLIT, source=source)
    else:
        dsd = _carve_validation(dsd, seed)
        info = describe_splits(dsd, scheme=HUB_SPLIT, source=source, seed=int(seed))
    return GZ10Splits(DatasetDict({s: dsd[s] for s in SPLITS}), info)


def _conform_split(ds, name: str, source: str):
    """One split with GZ10's features: labels checked, missing columns added (NaN, or -1 for `gz10_index`)."""
    from datasets import ClassLabel

    if "image" not in ds.column_names or "label" not in ds.column_names:
        raise HfgalError(f"{source}: split '{name}' needs 'image' and 'label' columns, has {ds.column_names}")
    label_feature = ds.features["label"]
    if isinstance(label_feature, ClassLabel):
        if label_feature.num_classes != NUM_CLASSES:
            raise HfgalError(f"{source}: 'label' has {label_feature.num_classes} classes; GZ10 has 10")
    else:
        check_labels(np.asarray(ds["label"]), f"{source} ({name})")
    for col in ("ra", "dec", "redshift", "pxscale"):
        if col not in ds.column_names:
            ds = ds.add_column(col, np.full(len(ds), np.nan))
    if "gz10_index" not in ds.column_names:
        ds = ds.add_column("gz10_index", np.full(len(ds), -1, dtype=np.int64))
    features = gz10_features()
    ds = ds.select_columns(list(features))
    return ds if ds.features == features else ds.cast(features)


def saved_split_info(folder: Path) -> SplitInfo | None:
    """The split a dataset folder was built with (its split_info.json), or None when it has none."""
    try:
        info = json.loads((folder / SPLIT_INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not info.get("scheme"):
        return None
    return SplitInfo.from_dict(info)


def check_split_request(
    split_scheme: str | None,
    separation_arcsec: float | None,
    *,
    arrived: SplitInfo | None = None,
    location: str = "",
) -> None:
    """The one check of a split request, made where it enters hfgal (the recipe's arguments, `load_gz10`,
    `gz10_from_h5`, `hfgal data build | synthetic`), before anything is loaded.

    A request names one of hfgal's schemes, a linking radius >= 0, and a radius only with a scheme that keeps sky
    neighbours together. Sources that are split here (h5, Zenodo, image folders, synthetic) honour any such
    request. Sources that arrive split (the Hub, a saved folder) honour only one that matches the split they have:
    hfgal does not re-split published data, and the published Hub copy has no coordinates to group by.

    Args:
        split_scheme, separation_arcsec: what was asked for (None: the source's own honest default).
        arrived: the split a source arrives with (`hfgal.data.sources.Source.split`); None for a source split here.
        location: the source, as the message names it.

    Raises:
        HfgalError: the request is not valid, or the source cannot honour it (one line, saying what to do instead).
    """
    if split_scheme is not None and split_scheme not in SCHEMES:
        raise HfgalError(f"split scheme {split_scheme!r} is not valid; use {' or '.join(SCHEMES)}, or leave it unset")
    if separation_arcsec is not None and not separation_arcsec >= 0:
        raise HfgalError(f"linking radius {separation_arcsec} arcsec is not valid; pass a distance >= 0")
    scheme = split_scheme or "default"
    if separation_arcsec is not None and not SCHEMES[scheme][1]:
        raise HfgalError(
            f"a linking radius ({separation_arcsec:g} arcsec) cannot be honoured by the {scheme!r} split scheme, "
            "which does not keep sky neighbours together; drop the radius or use the default scheme"
        )
    if arrived is None or (split_scheme is None and separation_arcsec is None):
        return
    radius = arrived.separation_arcsec
    radius_ok = separation_arcsec is None or (
        arrived.grouped and radius is not None and math.isclose(float(radius), float(separation_arcsec))
    )
    if (split_scheme is None or split_scheme == arrived.scheme) and radius_ok:
        return
    asked = ", ".join(
        f"{name}={value!r}"
        for name, value in (("split_scheme", split_scheme), ("separation_arcsec", separation_arcsec))
        if value is not None
    )
    has = "the split it was published with" if arrived.scheme == PUBLISHED_SPLIT else f"its {arrived.scheme!r} split"
    raise HfgalError(
        f"{location} comes already split ({has}), so {asked} cannot be honoured; leave it unset to use that split, "
        "or load the original h5 (source 'zenodo', or `hfgal data download`) to split it here"
    )
