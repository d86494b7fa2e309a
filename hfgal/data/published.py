"""Sources that arrive already split (the published Hub copy, a saved dataset folder): their layout brought to
hfgal's, their split recorded as it is, and any request to split them differently refused.

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
    SPLIT_INFO_FILE,
    SPLITS,
    describe_split,
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


def conform_gz10(dsd: DatasetDict, *, seed: int = 42, source: str = "") -> DatasetDict:
    """Bring any GZ10 layout to hfgal's: three splits, ClassLabel labels, every column present with its dtype.

    Accepts the published Hub copy (train/test only, `label` as plain integers): the label is cast to ClassLabel
    and a stratified validation split is carved from train. The result's `split_info` records the split as it is:
    `hub-split` (published train/test, validation carved here) or `published` (all three splits as published),
    with the close pairs that cross it when the source has coordinates.
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
    carved = "validation" not in dsd
    if carved:
        dsd = _carve_validation(dsd, seed)
    dsd = DatasetDict({s: dsd[s] for s in SPLITS})
    info = describe_splits(dsd)
    info.update(source=source, scheme=HUB_SPLIT if carved else PUBLISHED_SPLIT, seed=int(seed) if carved else None)
    info.update(fractions=None, grouped=False)
    info["split"] = describe_split(info)
    dsd.split_info = info
    return dsd


def saved_split_info(folder: Path) -> dict | None:
    """The split info a dataset folder was built with (its split_info.json), or None when it has none."""
    try:
        info = json.loads((folder / SPLIT_INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not info.get("scheme"):
        return None
    info.setdefault("grouped", info["scheme"] == "default" and info.get("separation_arcsec") is not None)
    info.setdefault("split", describe_split(info))
    return info


def check_split_request(
    kind: str, location: str, split_scheme: str | None, separation_arcsec: float | None, info: dict | None = None
) -> None:
    """Refuse a split the source cannot honour, before anything is loaded.

    Sources that are split here (h5, Zenodo, image folders, synthetic) honour any scheme. Sources that arrive split
    (the Hub, a saved folder) honour only a request that matches the split they have: hfgal does not re-split
    published data, and the published Hub copy has no coordinates to group by.

    Args:
        kind, location: the resolved source (`hfgal.data.sources.Source`).
        split_scheme, separation_arcsec: what was asked for (None: the source's own honest default).
        info: the split info of a saved folder, when it has one.

    Raises:
        HfgalError: the request cannot be honoured (one line, saying what to do instead).
    """
    if kind not in ("hub", "saved") or (split_scheme is None and separation_arcsec is None):
        return
    info = info or {}
    scheme_ok = split_scheme is None or split_scheme == info.get("scheme")
    radius = info.get("separation_arcsec")
    radius_ok = separation_arcsec is None or (
        bool(info.get("grouped")) and radius is not None and math.isclose(float(radius), float(separation_arcsec))
    )
    if scheme_ok and radius_ok:
        return
    asked = ", ".join(
        f"{name}={value!r}"
        for name, value in (("split_scheme", split_scheme), ("separation_arcsec", separation_arcsec))
        if value is not None
    )
    has = f"its {info['scheme']!r} split" if info.get("scheme") else "the split it was published with"
    raise HfgalError(
        f"{location} comes already split ({has}), so {asked} cannot be honoured; leave it unset to use that split, "
        "or load the original h5 (source 'zenodo', or `hfgal data download`) to split it here"
    )
