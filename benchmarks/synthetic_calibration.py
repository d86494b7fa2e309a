#!/usr/bin/env python
"""Statistics of real GZ10 cutouts that `hfgal.data.synthetic` is calibrated to, beside the same statistics of the
synthetic galaxies, per class.

    python benchmarks/synthetic_calibration.py --sample ../shared/data/gz10-sample      # calibration half only
    python benchmarks/synthetic_calibration.py --sample DIR --synthetic 40 --seed 0     # 40 synthetic per class

The real sample (`DIR` with `<label>_<n>.png` and `metadata.csv`) is split once, deterministically, into a
calibration half and a held-out scoring half (`sample_halves`): in every class the scoring half takes ceil(n/2)
images, first the ones the repository ships in `tests/data/gz10-sample` (so that a test can score on images never
used for calibration), then the others in the order of the SHA-256 of their file name. This script reads the
calibration half only; `benchmarks/synthetic_transfer.py` scores on the scoring half only.

Every image, real or synthetic, goes through the same measurement (`measure`), so the numbers are compared like
with like (the real cutouts' JPEG round trip and resampling included, not modelled away):
- sky: per-channel median of the 20-pixel border, its noise (MAD) in luminance and per channel, and the ratio of
  the noise of 2x2 block means to the pixel noise (0.5 for white noise, towards 1 when neighbours correlate);
- the central galaxy: the connected region above ~3 sigma (smoothed luminance) that holds the centre: its area,
  half-light and 90 %-light radii, concentration r90/r50, the median luminance between them (`sb_outer`: how
  bright the disc or envelope is), axis ratio from second moments, peak luminance above the sky, its share of
  near-saturated pixels, colour (R/G and B/G of the light above the sky, RGB = z, r, g; `blue`: the share of
  galaxies with B/G > 1), the colour of the core against the outskirts, rotational asymmetry, clumpiness (light
  in residuals from a smoothed copy) and the m=2 Fourier amplitude (bars, arms, elongation);
- the field: other sources above ~5 sigma outside the galaxy: compact (area < 40 px, `stars`) and extended
  (`neighbours`), those within 64 px of the centre, those brighter than 120 grey levels above the sky, the colour
  (R - B over R + G + B) of the compact ones, and the PSF FWHM from the area above half the peak of compact,
  unsaturated sources (the sharper quarter).

Per class, statistics are summarised by their median (`blue` by its mean).
Prints a table of per-class medians, real beside synthetic, then one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "tests" / "data" / "gz10-sample"
BORDER = 20
SATURATED = 250
NEAR = 64  # px from the centre: a source in the galaxy's neighbourhood
BRIGHT_SOURCE = 120  # grey levels above the sky: a bright star or galaxy a viewer cannot miss
SHARES = {"blue"}  # 0/1 statistics, summarised by their mean: the share of galaxies


# --------------------------------------------------------------------------- the partition


def sample_halves(sample_dir: Path) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """The calibration and scoring halves of a real GZ10 sample, as `(path, label)` lists.

    In each class the scoring half takes ceil(n/2) images: first those shipped in `tests/data/gz10-sample`, then
    the rest in order of the SHA-256 of their file name; the calibration half takes the others.
    """
    meta = Path(sample_dir) / "metadata.csv"
    if not meta.is_file():
        raise SystemExit(f"{meta} not found; pass --sample a folder of GZ10 PNGs with metadata.csv")
    shipped = {p.name for p in SHIPPED.glob("*.png")}
    by_class: dict[int, list[str]] = {}
    with meta.open(newline="") as f:
        for row in csv.DictReader(f):
            by_class.setdefault(int(row["label"]), []).append(row["file_name"])
    calibration, scoring = [], []
    for label, names in sorted(by_class.items()):
        ordered = sorted(names, key=lambda n: (n not in shipped, hashlib.sha256(n.encode()).hexdigest()))
        k = math.ceil(len(ordered) / 2)
        scoring += [(Path(sample_dir) / n, label) for n in sorted(ordered[:k])]
        calibration += [(Path(sample_dir) / n, label) for n in sorted(ordered[k:])]
    return calibration, scoring


# --------------------------------------------------------------------------- measurement


def _sky(img: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Per-channel sky level, luminance noise sigma, the 2x2-binned / pixel noise ratio and the mean per-channel
    noise sigma, from the border."""
    lum = img.mean(axis=2)
    mask = np.zeros(lum.shape, bool)
    mask[:BORDER], mask[-BORDER:], mask[:, :BORDER], mask[:, -BORDER:] = True, True, True, True
    sky = np.median(img[mask], axis=0)
    dev = lum - np.median(lum[mask])
    sigma = 1.4826 * np.median(np.abs(dev[mask]))
    # Noise of 2x2 block means from a strip along the top border (sources excluded by clipping at 4 sigma)
    strip = dev[:BORDER, :].copy()
    strip = strip[: strip.shape[0] // 2 * 2, : strip.shape[1] // 2 * 2]
    blocks = strip.reshape(strip.shape[0] // 2, 2, strip.shape[1] // 2, 2).mean(axis=(1, 3))
    bsig = 1.4826 * np.median(np.abs(blocks - np.median(blocks)))
    channel = 1.4826 * np.median(np.abs(img[mask] - sky), axis=0).mean()
    return sky, float(sigma), float(bsig / max(sigma, 1e-6)), float(channel)


def _central_region(lum: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Connected regions above 3 sigma of the smoothed luminance, and the mask of the one holding the centre."""
    smooth = ndimage.gaussian_filter(lum, 1.5)
    # Smoothing by sigma 1.5 px lowers white noise ~4x: 3 sigma of the smoothed map is ~0.75 of the pixel noise.
    labels, _ = ndimage.label(smooth > 0.75 * sigma)
    c = lum.shape[0] // 2
    centre = labels[c - 4 : c + 4, c - 4 : c + 4]
    ids = centre[centre > 0]
    if ids.size == 0:
        return labels, np.zeros_like(lum, bool)
    return labels, labels == np.bincount(ids).argmax()


def _radii(lum: np.ndarray, mask: np.ndarray, cx: float, cy: float) -> tuple[float, float, np.ndarray]:
    yy, xx = np.indices(lum.shape)
    r = np.hypot(xx - cx, yy - cy)
    order = np.argsort(r[mask])
    flux = np.clip(lum[mask], 0, None)[order]
    cum = np.cumsum(flux) / max(flux.sum(), 1e-9)
    rs = r[mask][order]
    return float(rs[np.searchsorted(cum, 0.5)]), float(rs[min(np.searchsorted(cum, 0.9), len(rs) - 1)]), r


def _shape(lum: np.ndarray, mask: np.ndarray) -> tuple[float, float, float, float]:
    """Centroid, axis ratio and position angle (radians) from flux-weighted second moments."""
    yy, xx = np.indices(lum.shape)
    w = np.where(mask, np.clip(lum, 0, None), 0.0)
    w = w / max(w.sum(), 1e-9)
    cx, cy = (w * xx).sum(), (w * yy).sum()
    cxx, cyy, cxy = (w * (xx - cx) ** 2).sum(), (w * (yy - cy) ** 2).sum(), (w * (xx - cx) * (yy - cy)).sum()
    small, large = np.linalg.eigvalsh(np.array([[cxx, cxy], [cxy, cyy]]))
    return (
        float(cx),
        float(cy),
        float(math.sqrt(max(small, 1e-9) / max(large, 1e-9))),
        0.5 * math.atan2(2 * cxy, cxx - cyy),
    )


def _morphology(lum: np.ndarray, mask: np.ndarray, cx: float, cy: float, r: np.ndarray, r50: float, r90: float):
    """Rotational asymmetry, clumpiness and the m=2 Fourier amplitude of the light inside r90."""
    shift = (lum.shape[0] / 2 - 0.5 - cy, lum.shape[1] / 2 - 0.5 - cx)
    centred = ndimage.shift(np.where(mask, lum, 0.0), shift, order=1)
    inside = centred * (np.hypot(*(np.indices(lum.shape) - (lum.shape[0] / 2 - 0.5))) < max(r90, 3))
    total = np.abs(inside).sum() + 1e-9
    asym = float(np.abs(inside - inside[::-1, ::-1]).sum() / (2 * total))
    resid = inside - ndimage.gaussian_filter(inside, max(r50 / 3, 1.0))
    clump = float(np.clip(resid, 0, None).sum() / total)
    yy, xx = np.indices(lum.shape)
    sel = mask & (r < max(r90, 3)) & (r > 1.5)
    theta = np.arctan2(yy[sel] - cy, xx[sel] - cx)
    f = np.clip(lum[sel], 0, None)
    m2 = float(np.abs((f * np.exp(2j * theta)).sum()) / max(f.sum(), 1e-9))
    return asym, clump, m2


def _field(img, lum, sigma, labels, galaxy) -> dict[str, float]:
    """Counts and colours of the other sources, and the PSF FWHM from the compact unsaturated ones."""
    strong, n = ndimage.label(ndimage.gaussian_filter(lum, 1.0) > 5 * 0.55 * sigma)
    slices = ndimage.find_objects(strong)
    compact, extended, near, bright, fwhm, red = 0, 0, 0, 0, [], []
    centre = lum.shape[0] / 2 - 0.5
    for k, sl in enumerate(slices, start=1):
        region = strong[sl] == k
        if (galaxy[sl] & region).any() or region.sum() < 3:
            continue
        area = int(region.sum())
        cy0, cx0 = ndimage.maximum_position(np.where(region, lum[sl], -1e9))
        cy0, cx0 = cy0 + sl[0].start, cx0 + sl[1].start
        near += math.hypot(cx0 - centre, cy0 - centre) < NEAR
        bright += lum[cy0, cx0] > BRIGHT_SOURCE
        if area >= 40:
            extended += 1
            continue
        compact += 1
        y0, y1, x0, x1 = cy0 - 5, cy0 + 6, cx0 - 5, cx0 + 6
        if y0 < 0 or x0 < 0 or y1 > lum.shape[0] or x1 > lum.shape[1]:
            continue
        stamp = lum[y0:y1, x0:x1]
        peak = stamp[4:7, 4:7].max()
        if img[y0:y1, x0:x1].max() >= SATURATED or peak < 6 * sigma:
            continue
        # FWHM from the area above half the peak: robust to the noise that inflates second moments of faint stars.
        fwhm.append(2 * math.sqrt((stamp > peak / 2).sum() / math.pi))
        red.append(
            float(img[y0:y1, x0:x1, 0].astype(float).sum() - img[y0:y1, x0:x1, 2].astype(float).sum())
            / max(float(np.clip(stamp, 0, None).sum() * 3), 1.0)
        )
    return {
        "stars": compact,
        "neighbours": extended,
        "near_sources": near,
        "bright_sources": bright,
        # Faint galaxies and blends widen the moments: the sharper half of the compact sources is the PSF.
        "psf_fwhm_px": float(np.percentile(fwhm, 25)) if fwhm else float("nan"),
        "star_r_minus_b": float(np.median(red)) if red else float("nan"),
    }


def measure(img: np.ndarray) -> dict[str, float]:
    """The calibration statistics of one `(H, W, 3)` uint8 cutout (see the module docstring)."""
    img = np.asarray(img)
    sky, sigma, binned, channel = _sky(img.astype(np.float64))
    above = img.astype(np.float64) - sky  # (H, W, 3) light above the sky
    lum = above.mean(axis=2)
    labels, galaxy = _central_region(lum, sigma)
    stats = {
        "sky_r": float(sky[0]),
        "sky_g": float(sky[1]),
        "sky_b": float(sky[2]),
        "sky_noise": sigma,
        "sky_noise_channel": channel,
        "noise_binned_ratio": binned,
    }
    if galaxy.sum() < 10:
        return stats | {"area": float(galaxy.sum())}
    cx, cy, q, _ = _shape(lum, galaxy)
    r50, r90, r = _radii(lum, galaxy, cx, cy)
    flux = above[galaxy].clip(0, None).sum(axis=0) + 1e-9
    core = galaxy & (r < r50)
    outer = galaxy & (r >= r50)
    core_flux = above[core].clip(0, None).sum(axis=0) + 1e-9
    outer_flux = above[outer].clip(0, None).sum(axis=0) + 1e-9
    asym, clump, m2 = _morphology(lum, galaxy, cx, cy, r, r50, r90)
    peak = float(ndimage.gaussian_filter(lum, 1.0)[galaxy].max())
    stats |= {
        "area": float(galaxy.sum()),
        "r50": r50,
        "r90": r90,
        "concentration": r90 / max(r50, 0.5),
        "sb_outer": float(np.median(lum[galaxy & (r >= r50) & (r < r90)])) if r90 > r50 else float("nan"),
        "axis_ratio": q,
        "peak": peak,
        "saturated_frac": float((img[galaxy].max(axis=1) >= SATURATED).mean()),
        "r_over_g": float(flux[0] / flux[1]),
        "b_over_g": float(flux[2] / flux[1]),
        "blue": float(flux[2] > flux[1]),
        "core_b_over_r": float(core_flux[2] / core_flux[0]),
        "outer_b_over_r": float(outer_flux[2] / outer_flux[0]),
        "asymmetry": asym,
        "clumpiness": clump,
        "m2": m2,
    }
    return stats | _field(img, lum, sigma, labels, galaxy)


# --------------------------------------------------------------------------- summary


def per_class(rows: list[tuple[int, dict[str, float]]]) -> dict[int, dict[str, float]]:
    """Median of every statistic per class, the mean of the 0/1 ones (NaN where no image gave a value)."""
    out: dict[int, dict[str, float]] = {}
    for label in sorted({lab for lab, _ in rows}):
        keys = sorted({k for lab, s in rows if lab == label for k in s})
        out[label] = {}
        for key in keys:
            values = np.array([s.get(key, np.nan) for lab, s in rows if lab == label], dtype=float)
            average = np.nanmean if key in SHARES else np.nanmedian
            out[label][key] = float(average(values)) if np.isfinite(values).any() else float("nan")
    return out


def size_spread(rows: list[tuple[int, dict[str, float]]]) -> float:
    """Robust spread of log r50 within each class (IQR / 1.35), the median over classes."""
    spreads = []
    for label in sorted({lab for lab, _ in rows}):
        logs = np.log([s["r50"] for lab, s in rows if lab == label and s.get("r50", 0) > 0])
        if len(logs) >= 4:
            q25, q75 = np.percentile(logs, [25, 75])
            spreads.append((q75 - q25) / 1.35)
    return float(np.median(spreads))


def synthetic_rows(per: int, seed: int) -> list[tuple[int, dict[str, float]]]:
    from hfgal.data.synthetic import render_galaxy

    return [(c, measure(render_galaxy(c, np.random.default_rng([seed, c, j])))) for c in range(10) for j in range(per)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", required=True, help="folder of real GZ10 PNGs with metadata.csv")
    parser.add_argument("--synthetic", type=int, default=30, help="synthetic galaxies per class (0: none)")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the synthetic galaxies")
    parser.add_argument("--keys", default=None, help="comma-separated statistics to print (default: all)")
    args = parser.parse_args(argv)

    from hfgal.constants import GZ10_CLASSES

    calibration, _ = sample_halves(Path(args.sample))
    real = [(label, measure(np.asarray(Image.open(p).convert("RGB")))) for p, label in calibration]
    real_summary = per_class(real)
    synthetic = synthetic_rows(args.synthetic, args.seed) if args.synthetic else []
    synth_summary = per_class(synthetic) if synthetic else {}
    keys = args.keys.split(",") if args.keys else sorted({k for s in real_summary.values() for k in s})
    print(
        f"calibration half: {len(calibration)} real images; synthetic: {args.synthetic} per class (seed {args.seed})"
    )
    print("medians per class: real (calibration half), then synthetic")
    print(f"{'statistic':<28}" + "".join(f"{c:>8}" for c in range(10)))
    for key in keys:
        for name, summary in (("real", real_summary), ("synthetic", synth_summary)):
            if summary:
                cells = "".join(f"{summary.get(c, {}).get(key, float('nan')):8.3g}" for c in range(10))
                print(f"{key + ' ' + name:<28}{cells}")
    for name, rows in (("real", real), ("synthetic", synthetic)):
        if rows:
            print(
                f"spread of log r50 within a class (IQR / 1.35, median over classes), {name}: {size_spread(rows):.2f}"
            )
    print("classes: " + ", ".join(f"{c} {name}" for c, name in enumerate(GZ10_CLASSES)))
    record = {
        "benchmark": "synthetic_calibration",
        "calibration_images": [p.name for p, _ in calibration],
        "real": real_summary,
        "synthetic": synth_summary,
        "synthetic_per_class": args.synthetic,
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
