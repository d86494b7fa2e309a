"""Synthetic GZ10-like galaxies: the offline default dataset, drawn from simple physical light models.

Every image is a sum of analytic light components in three bands shown as (R, G, B) = (z, r, g) like the DECaLS
colour composites (`light`: Sersic bulges and ellipticals, exponential discs at a random inclination with spiral
arms, bars and lopsidedness, tidal streams, field stars and background galaxies), composed into the ten classes by
`galaxies`. The `camera` module then does the survey's part: a seeing PSF with a faint halo, sky noise mostly common
to the bands, a colour-preserving asinh stretch that saturates bright cores, and 8-bit quantisation; the light is
rendered at half resolution and upsampled, which keeps one core above ~200 images/s.

The priors are calibrated on real cutouts: `benchmarks/synthetic_calibration.py` measures sky, noise, seeing,
sizes, light profiles, axis ratios, colours, asymmetry and field counts on the calibration half of a real GZ10
sample, and the ranges in `galaxies` (per class) and `camera` (for all classes) are set so that the renderer's
per-class medians, measured the same way, come near the real ones; the held-out scoring half is never measured
(docs/synthetic.md). Classes follow the morphology of the Galaxy10 DECaLS decision tree and overlap a little on
purpose (smooth classes differ only by axis ratio, tight and loose spirals only by pitch angle), so they are
learnable but not a give-away.

Image `i` depends only on `(seed, i)`: any slice can be generated alone, in any order, by any process.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from ...constants import GZ10_CLASS_COUNTS, GZ10_IMAGE_SIZE, GZ10_PXSCALE, NUM_CLASSES
from ...errors import HfgalError
from ..split import largest_remainder
from .galaxies import draw_redshift, render_galaxy

if TYPE_CHECKING:
    from ..split import GZ10Splits

__all__ = [
    "PROPORTIONS",
    "gz10_synthetic",
    "render_galaxy",
    "renderer_digest",
    "synthetic_catalog",
    "synthetic_images",
]

PROPORTIONS = ("gz10", "balanced")

# The sky patch of the synthetic catalogue (degrees): area-uniform, wide enough that no two galaxies are duplicates.
_DEC_RANGE = (-20.0, 30.0)
_NAN_REDSHIFT_FRACTION = 0.15


def _class_counts(n: int, proportions: str) -> np.ndarray:
    if proportions == "balanced":
        weights = np.ones(NUM_CLASSES)
    elif proportions == "gz10":
        weights = np.asarray(GZ10_CLASS_COUNTS, dtype=np.float64)
    else:
        raise HfgalError(f"unknown proportions {proportions!r}; use one of {', '.join(PROPORTIONS)}")
    counts = largest_remainder(weights / weights.sum() * n, total=n)
    if n >= NUM_CLASSES:
        while (counts == 0).any():  # every class present: take from the largest
            counts[np.argmax(counts)] -= 1
            counts[np.argmin(counts)] += 1
    return counts


def synthetic_catalog(n: int, seed: int = 0, proportions: str = "gz10") -> dict[str, np.ndarray]:
    """Labels and sky positions of `n` synthetic galaxies, shaped like the GZ10 catalogue.

    Args:
        n: number of galaxies.
        seed: catalogue seed (the same seed must be given to `synthetic_images`).
        proportions: `"gz10"` for the class frequencies of the real release (every class present when
            `n >= 10`) or `"balanced"` for equal counts.

    Returns:
        Dict of `n`-long arrays: `label` (uint8, shuffled by seed), `ra`, `dec` (degrees, area-uniform on a sky
        patch), `redshift` (the redshift each image is drawn at; NaN for ~15 %, as the real data lacks some),
        `pxscale` (0.262 arcsec/pixel).
    """
    if int(n) < 1:
        raise HfgalError(f"n={n} synthetic galaxies is not a dataset; use n >= 1")
    n = int(n)
    counts = _class_counts(n, proportions)
    rng = np.random.default_rng([seed, 2**31])  # catalogue stream, disjoint from the per-image streams [seed, i]
    labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), counts))
    ra = rng.uniform(0.0, 360.0, n)
    lo, hi = np.sin(np.radians(_DEC_RANGE))
    dec = np.degrees(np.arcsin(rng.uniform(lo, hi, n)))
    redshift = np.array([draw_redshift(np.random.default_rng([seed, i])) for i in range(n)])
    redshift[rng.random(n) < _NAN_REDSHIFT_FRACTION] = np.nan
    return {"label": labels, "ra": ra, "dec": dec, "redshift": redshift, "pxscale": np.full(n, GZ10_PXSCALE)}


def synthetic_images(start: int, stop: int, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Render images `start..stop-1` of a synthetic catalogue; each depends only on `(seed, i)` and its label.

    Args:
        start, stop: half-open row range, `0 <= start <= stop <= len(labels)`.
        labels: the catalogue's `label` column (all rows; only `labels[start:stop]` are used).
        seed: the catalogue seed.

    Returns:
        uint8 array `(stop - start, 256, 256, 3)`.
    """
    if not 0 <= start <= stop <= len(labels):
        raise HfgalError(
            f"rows {start}:{stop} are outside the catalogue of {len(labels)}; use 0 <= start <= stop <= n"
        )
    out = np.empty((stop - start, GZ10_IMAGE_SIZE, GZ10_IMAGE_SIZE, 3), dtype=np.uint8)
    for i in range(start, stop):
        out[i - start] = render_galaxy(int(labels[i]), np.random.default_rng([seed, i]))
    return out


@functools.lru_cache(maxsize=1)
def renderer_digest() -> str:
    """Short SHA-256 of this package's source: the synthetic images are a function of it, the seed and `n`."""
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:12]


def gz10_synthetic(
    n: int = 2000,
    seed: int = 0,
    proportions: str = "balanced",
    split_scheme: str | None = None,
    cache_dir: str | None = None,
    separation_arcsec: float | None = None,
) -> GZ10Splits:
    """Synthetic Galaxy10 DECaLS with the real dataset's features and split logic.

    Args:
        n: number of galaxies.
        seed: seeds the catalogue, every image and the train/validation/test split.
        proportions: `"balanced"` (every class equally often: a model trained on it learns no class prior, and
            the rare cigar-shaped galaxies get as many examples as the rest) or `"gz10"` (the release's class
            frequencies).
        split_scheme: see `hfgal.data.split.gz10_split` (None: `default`).
        cache_dir: where datasets writes its Arrow files (default: the datasets cache).
        separation_arcsec: linking radius of the split (None: the cutout width).

    Returns:
        `GZ10Splits`: the `train`, `validation` and `test` splits (features image, label, ra, dec, redshift,
        pxscale, gz10_index) and their `SplitInfo`, as every GZ10 loader returns them.
    """
    from ..build import build_gz10

    cat = synthetic_catalog(n, seed=seed, proportions=proportions)
    return build_gz10(
        images=lambda a, b: synthetic_images(a, b, cat["label"], seed),
        labels=cat["label"],
        ra=cat["ra"],
        dec=cat["dec"],
        redshift=cat["redshift"],
        pxscale=cat["pxscale"],
        seed=seed,
        split_scheme=split_scheme,
        separation_arcsec=separation_arcsec,
        source=f"synthetic:{n}",
        cache_dir=cache_dir,
        # The datasets cache must tell apart seeds, proportions and renderers of the same size: the renderer is
        # identified by this module's source, so no edit can leave a stale cache behind a forgotten version bump.
        fingerprint=f"synthetic:{n}:seed={seed}:{proportions}:{renderer_digest()}",
    )
