"""Honest GZ10 splits: stratified by class, with galaxies close on the sky kept together.

Galaxy10 DECaLS holds 59 pairs of identical coordinates (the same galaxy twice), 126 pairs closer than 10" and 236
closer than the 67" width of a cutout (images that share pixels). A random split puts some of them on both sides of
the train/test line, so the test set partly measures memory.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..constants import CROSS_SPLIT_RADII_ARCSEC, DEFAULT_SEPARATION_ARCSEC

if TYPE_CHECKING:
    from datasets import DatasetDict

SPLITS = ("train", "validation", "test")
SPLIT_INFO_FILE = "split_info.json"  # the split summary saved next to a built dataset
SCHEMES = {
    # name: (fractions of train/validation/test, keep sky neighbours together)
    "default": ({"train": 0.8, "validation": 0.1, "test": 0.1}, True),
    # 90/10 train/test like the published Hub copy; validation carved out of train (10 % of it).
    "poster": ({"train": 0.81, "validation": 0.09, "test": 0.1}, False),
}
# Splits a source arrives with (not made by hfgal): recorded as the `scheme` of its split info.
HUB_SPLIT = "hub-split"  # the published train/test, validation carved from train
PUBLISHED_SPLIT = "published"  # the source's own train/validation/test


@dataclass(frozen=True)
class SplitInfo:
    """How the train/validation/test split of a GZ10 dataset was made, and what it keeps apart.

    Written as `split_info.json` beside a built dataset, read into its card and into every run's record.

    Attributes:
        scheme: `default`, `poster` (hfgal's), `hub-split` (the published train/test, validation carved here) or
            `published` (the source's own three splits).
        source: where the data came from (a Hub id, a file, `synthetic:N`, ...).
        seed: the split seed (None when nothing was drawn).
        fractions: train/validation/test fractions of an hfgal split.
        grouped: whether galaxies closer than `separation_arcsec` were kept in one split.
        separation_arcsec: the linking radius the groups and close pairs are counted at (None without coordinates).
        num_rows: galaxies in all splits.
        counts: galaxies per class, per split.
        duplicate_groups, grouped_rows: sky groups of two or more galaxies, and the galaxies in them.
        cross_split_pairs: pairs closer than `separation_arcsec` that sit in different splits.
        close_pairs: per radius, `{"within_arcsec", "pairs", "cross_split"}`.
    """

    scheme: str
    source: str = ""
    seed: int | None = None
    fractions: dict[str, float] | None = None
    grouped: bool = False
    separation_arcsec: float | None = None
    num_rows: int = 0
    counts: dict[str, list[int]] = field(default_factory=dict)
    duplicate_groups: int | None = None
    grouped_rows: int | None = None
    cross_split_pairs: int | None = None
    close_pairs: list[dict[str, float]] | None = None

    @property
    def description(self) -> str:
        """One honest line saying how the split was made (`describe_split`)."""
        return describe_split(self)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping of `split_info.json`, with its one-line `split` description."""
        return {**dataclasses.asdict(self), "split": self.description}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitInfo:
        """Read a `split_info.json` mapping (its `split` description is derived, not read)."""
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        if data.get("grouped") is None:  # written before `grouped` was recorded: only `default` grouped
            data["grouped"] = data.get("scheme") == "default" and data.get("separation_arcsec") is not None
        return cls(**data)


@dataclass(frozen=True)
class GZ10Splits(Mapping):
    """GZ10 as every loader and builder returns it: the `DatasetDict` of `train`, `validation` and `test`, and how it
    was split.

    Read like the `DatasetDict` (`gz10["test"]`, `for split in gz10`); the split info travels beside the splits
    rather than on them, as `datasets` drops attributes it does not know at every `.map` / `.filter`.
    """

    splits: DatasetDict
    info: SplitInfo

    def __getitem__(self, split: str):
        return self.splits[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self.splits)

    def __len__(self) -> int:
        return len(self.splits)


def describe_split(info: SplitInfo) -> str:
    """One honest line saying how a split was made, for cards and run records.

    Example: `hub-split (no coordinates): the published train/test of matthieulel/galaxy10_decals, validation carved
    from train (10 %, stratified by class, seed 42); no sky coordinates, so overlapping cutouts could not be kept
    in one split`.
    """
    source = info.source or "the source"
    if os.path.isabs(source) or os.path.exists(source):
        source = Path(source).name  # a local file: its name, not the directory layout of whoever built it
    no_coords = info.separation_arcsec is None
    seeded = f", seed {info.seed}" if info.seed is not None else ""
    if info.scheme == HUB_SPLIT:
        text = (
            f"{HUB_SPLIT}{' (no coordinates)' if no_coords else ''}: the published train/test of {source}, "
            f"validation carved from train (10 %, stratified by class{seeded})"
        )
    elif info.scheme == PUBLISHED_SPLIT:
        text = f"the published train/validation/test of {source}"
    else:
        fractions = info.fractions or SCHEMES.get(info.scheme, ({},))[0]
        share = "/".join(f"{100 * float(fractions[s]):.0f}" for s in SPLITS) if fractions else "?"
        text = f"hfgal's `{info.scheme}` split of {source}: {share} train/validation/test, stratified by class{seeded}"
        if info.grouped:
            return f'{text}; galaxies closer than {float(info.separation_arcsec):g}" on the sky kept in one split'
        if not no_coords:
            return f"{text}; sky neighbours not kept together"
    if no_coords:
        text += "; no sky coordinates, so overlapping cutouts could not be kept in one split"
    return text


def sky_groups(ra: np.ndarray, dec: np.ndarray, separation_arcsec: float) -> np.ndarray:
    """Connected components of galaxies closer than `separation_arcsec` (great-circle distance).

    Args:
        ra, dec: coordinates in degrees; NaN coordinates form groups of their own.
        separation_arcsec: linking length.

    Returns:
        int64 group id per galaxy (ids are the smallest member index of each group).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(ra)
    pairs = close_pairs(ra, dec, separation_arcsec)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    # Relabel each component by its smallest member so ids are stable and meaningful.
    first = np.full(comp.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(first, comp, np.arange(n))
    return first[comp]


def close_pairs(ra: np.ndarray, dec: np.ndarray, separation_arcsec: float) -> np.ndarray:
    """Every pair of galaxies closer than `separation_arcsec` on the sky (great-circle distance).

    Args:
        ra, dec: coordinates in degrees; galaxies with NaN coordinates are in no pair.
        separation_arcsec: the distance.

    Returns:
        int64 `(P, 2)` row indices, `i < j` in each pair.
    """
    from scipy.spatial import cKDTree

    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec))
    if len(ok) < 2 or separation_arcsec <= 0:
        return np.empty((0, 2), dtype=np.int64)
    ra_r, dec_r = np.radians(ra[ok]), np.radians(dec[ok])
    xyz = np.stack([np.cos(dec_r) * np.cos(ra_r), np.cos(dec_r) * np.sin(ra_r), np.sin(dec_r)], axis=1)
    # Chord length of the angle: great-circle distance without trigonometry per pair.
    chord = 2 * np.sin(np.radians(separation_arcsec / 3600) / 2)
    pairs = cKDTree(xyz).query_pairs(chord, output_type="ndarray").astype(np.int64)
    return ok[pairs].reshape(-1, 2)


def largest_remainder(shares, total: int | None = None, tiebreak=None) -> np.ndarray:
    """Round non-negative real `shares` to integers that sum to `total` (default: the rounded sum of the shares).

    Every share gets its floor; the units left go to the largest fractional parts (ties: in order, or by `tiebreak`
    ascending). Used for exact per-class counts: split targets, synthetic class counts, a carved validation split.
    """
    shares = np.asarray(shares, dtype=np.float64)
    total = int(round(float(shares.sum()))) if total is None else int(total)
    counts = np.floor(shares).astype(np.int64)
    remainder = shares - counts
    order = np.argsort(-remainder, kind="stable") if tiebreak is None else np.lexsort((tiebreak, -remainder))
    counts[order[: max(total - int(counts.sum()), 0)]] += 1
    return counts


def _targets(counts: np.ndarray, fractions: dict[str, float]) -> np.ndarray:
    """(3, C) integer targets per split and class.

    Every class gets the floor or the ceiling of its exact share in each split and keeps its total, and every split
    gets its share of all the data, rounded. Rounding each class on its own would hand every leftover image of a
    small class to train (3 images at 80/10/10: 2.4/0.3/0.3 -> 3/0/0) and leave validation and test empty; here the
    units left over after the floors go to the largest fractional parts whose split is still short.
    """
    frac = np.array([fractions[s] for s in SPLITS])
    raw = frac[:, None] * counts[None, :]  # (3, C) exact shares
    out = np.floor(raw).astype(np.int64)
    owed = largest_remainder(frac * counts.sum(), total=int(counts.sum())) - out.sum(axis=1)  # (3,) per split
    left = counts - out.sum(axis=0)  # (C,) per class
    remainder = raw - out
    for cell in np.argsort(-remainder.ravel(), kind="stable"):
        split, c = divmod(int(cell), counts.shape[0])
        if remainder[split, c] > 0 and owed[split] > 0 and left[c] > 0:
            out[split, c] += 1
            owed[split] -= 1
            left[c] -= 1
    for c in np.flatnonzero(left > 0):  # only when the split totals could not all be met
        order = np.argsort(-(raw[:, c] - out[:, c]), kind="stable")
        out[order[: left[c]], c] += 1
    return out


def gz10_split(
    labels: np.ndarray,
    ra: np.ndarray | None = None,
    dec: np.ndarray | None = None,
    *,
    seed: int = 42,
    scheme: str = "default",
    separation_arcsec: float = DEFAULT_SEPARATION_ARCSEC,
    num_classes: int = 10,
) -> dict[str, np.ndarray]:
    """Assign every galaxy to train/validation/test.

    Stratified by class with exact per-class targets; in the `default` scheme, galaxies closer than
    `separation_arcsec` on the sky form a group that always lands in one split (groups are placed first, then
    single galaxies fill each class up to its target). Deterministic for a given seed.

    Args:
        labels: class index per galaxy.
        ra, dec: degrees (optional; without them every galaxy is its own group).
        seed: random seed of the assignment.
        scheme: `default` (80/10/10, duplicate-aware) or `poster` (90/10 train/test like the Hub copy, validation
            carved from train, no grouping).
        separation_arcsec: linking length of the groups (default: the width of a cutout, 67.072").

    Returns:
        Sorted row indices per split.
    """
    fractions, grouped = SCHEMES[scheme]  # a request is checked where it enters hfgal (`check_split_request`)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    groups = (
        sky_groups(np.asarray(ra, float), np.asarray(dec, float), separation_arcsec)
        if grouped and ra is not None and dec is not None
        else np.arange(n)
    )
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=num_classes)
    targets = _targets(counts, fractions)
    filled = np.zeros_like(targets)
    assign = np.full(n, -1, dtype=np.int64)

    _, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    members_of = np.split(order, np.cumsum(sizes)[:-1])
    pending = [members_of[g] for g in rng.permutation(np.flatnonzero(sizes > 1))]
    while pending:
        pick, split = _place_group(pending, labels, targets - filled, num_classes, rng)
        members = pending.pop(pick)
        assign[members] = split
        np.add.at(filled[split], labels[members], 1)
    # Single galaxies (or everything when not grouped): shuffle each class and fill the remaining targets.
    for c in range(num_classes):
        rows = np.flatnonzero((labels == c) & (assign < 0))
        rows = rng.permutation(rows)
        need = np.maximum(targets[:, c] - filled[:, c], 0)
        # Overshoot from groups makes `need` sum to less than the rows left: the remainder goes to train.
        bounds = np.cumsum(need)
        split_of = np.searchsorted(bounds, np.arange(len(rows)), side="right")
        split_of = np.where(split_of > 2, 0, split_of)
        assign[rows] = split_of
        np.add.at(filled, (split_of, np.full(len(rows), c)), 1)

    return {s: np.flatnonzero(assign == i) for i, s in enumerate(SPLITS)}


def _place_group(
    pending: list[np.ndarray], labels: np.ndarray, free: np.ndarray, num_classes: int, rng: np.random.Generator
) -> tuple[int, int]:
    """Which pending group of sky neighbours to place next, and in which split.

    The group with the fewest splits it fits in whole goes first (ties: in the shuffled order), so the hard cases are
    not left until nothing fits. It goes to a split it fits in, drawn in proportion to the free places there for its
    classes: groups land in each split about as often as single galaxies do, instead of piling up in the largest
    split. When it fits nowhere, it goes where it overshoots the targets least.
    """
    needs = [np.bincount(labels[members], minlength=num_classes) for members in pending]
    fits = [np.flatnonzero((free >= need).all(axis=1)) for need in needs]
    pick = min(range(len(pending)), key=lambda i: len(fits[i]))
    need, options = needs[pick], fits[pick]
    room = np.maximum(free[:, need > 0], 0).sum(axis=1).astype(np.float64)
    if len(options) and room[options].sum() > 0:
        return pick, int(rng.choice(options, p=room[options] / room[options].sum()))
    overshoot = np.maximum(need[None, :] - free, 0).sum(axis=1)
    return pick, int(np.lexsort((-room, overshoot))[0])


def split_summary(
    labels: np.ndarray,
    split_of: np.ndarray,
    ra: np.ndarray | None = None,
    dec: np.ndarray | None = None,
    *,
    separation_arcsec: float = DEFAULT_SEPARATION_ARCSEC,
    num_classes: int = 10,
) -> dict:
    """Counts per split and class, sky groups found, and close pairs that cross splits.

    Args:
        labels: class per galaxy; split_of: split index per galaxy (0 train, 1 validation, 2 test).
        ra, dec: degrees, or None when the source has no coordinates.
        separation_arcsec: the linking length the groups and `cross_split_pairs` are counted at.

    Returns:
        The counted fields of a `SplitInfo`, as keyword arguments: `num_rows`, `counts`, and with coordinates
        `separation_arcsec`, `duplicate_groups` / `grouped_rows` (groups of galaxies closer than `separation_arcsec`),
        `cross_split_pairs` (pairs closer than it in different splits) and `close_pairs`, one
        `{"within_arcsec", "pairs", "cross_split"}` per radius of `CROSS_SPLIT_RADII_ARCSEC` (and the linking length).
        Without coordinates these are None: nothing could be checked.
    """
    labels = np.asarray(labels, dtype=np.int64)
    split_of = np.asarray(split_of, dtype=np.int64)
    n = len(labels)
    info = {
        "num_rows": int(n),
        "separation_arcsec": None,
        "duplicate_groups": None,
        "grouped_rows": None,
        "cross_split_pairs": None,
        "close_pairs": None,
        "counts": {
            s: np.bincount(labels[split_of == i], minlength=num_classes).tolist() for i, s in enumerate(SPLITS)
        },
    }
    have_coords = ra is not None and dec is not None and np.isfinite(np.asarray(ra, float)).any()
    if have_coords:
        ra, dec = np.asarray(ra, float), np.asarray(dec, float)
        _, sizes = np.unique(sky_groups(ra, dec, separation_arcsec), return_counts=True)
        multi = sizes[sizes > 1]
        radii = sorted({*(round(float(r), 3) for r in CROSS_SPLIT_RADII_ARCSEC), round(float(separation_arcsec), 3)})
        rows = []
        for radius in radii:
            pairs = close_pairs(ra, dec, radius)
            cross = int((split_of[pairs[:, 0]] != split_of[pairs[:, 1]]).sum())
            rows.append({"within_arcsec": radius, "pairs": int(len(pairs)), "cross_split": cross})
        at_link = next(r for r in rows if r["within_arcsec"] == round(float(separation_arcsec), 3))
        info.update(
            separation_arcsec=float(separation_arcsec),
            duplicate_groups=int(len(multi)),
            grouped_rows=int(multi.sum()),
            cross_split_pairs=at_link["cross_split"],
            close_pairs=rows,
        )
    return info


def describe_splits(dsd: DatasetDict, *, scheme: str, source: str = "", seed: int | None = None) -> SplitInfo:
    """The `SplitInfo` of splits made elsewhere (nothing grouped here), counted from their own `label`, `ra` and
    `dec` columns, close pairs at the cutout width.

    Args:
        dsd: the `train`, `validation` and `test` splits.
        scheme: how they were made (`hub-split`, `published`).
        source, seed: recorded as they are (`seed`: the one a validation split was carved with, if any).
    """
    labels, ra, dec, split_of = [], [], [], []
    for i, s in enumerate(SPLITS):
        cols = dsd[s].select_columns(["label", "ra", "dec"]).with_format("numpy")[:]
        labels.append(cols["label"])
        ra.append(cols["ra"])
        dec.append(cols["dec"])
        split_of.append(np.full(len(cols["label"]), i))
    counted = split_summary(np.concatenate(labels), np.concatenate(split_of), np.concatenate(ra), np.concatenate(dec))
    return SplitInfo(scheme=scheme, source=source, seed=seed, **counted)
