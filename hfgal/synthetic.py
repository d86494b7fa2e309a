"""Synthetic GZ10-like galaxies: the offline default dataset, drawn from simple physical light models.

Every image is a sum of analytic light components (Sersic bulges and ellipticals, exponential discs at a random
inclination, logarithmic spiral arms, bars, tidal streams) in three bands shown as (R, G, B) = (z, r, g) like the
DECaLS colour composites, plus field stars and faint background galaxies. It is blurred by a seeing PSF, gets sky
noise and an asinh stretch, and is rendered at half resolution then upsampled, which keeps one core above
~200 images/s. Classes follow the morphology of the Galaxy10 DECaLS decision tree and overlap a little on purpose
(smooth classes differ only by axis ratio, tight and loose spirals only by pitch angle), so they are learnable
but not a give-away.

Image `i` depends only on `(seed, i)`: any slice can be generated alone, in any order, by any process.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

from .constants import GZ10_CLASS_COUNTS, GZ10_IMAGE_SIZE, GZ10_PXSCALE, NUM_CLASSES
from .utils import HfgalError

if TYPE_CHECKING:
    from datasets import DatasetDict

PROPORTIONS = ("gz10", "balanced")

# Band weights (z, r, g) shown as (R, G, B): old stellar populations are red/yellow, star formation is blue.
_OLD = np.array([1.0, 0.86, 0.66], dtype=np.float32)
_DISC = np.array([0.78, 0.85, 1.0], dtype=np.float32)
_YOUNG = np.array([0.50, 0.68, 1.0], dtype=np.float32)

# Lengths below are in pixels of a 256-pixel image (0.262 arcsec/pixel) and scaled to the render grid.
_REF = 256.0
# Overall size and surface-brightness scale of the central galaxy (noise sigma = 1).
_SIZE = 1.8
_BRIGHT = 25.0
# Standard deviation (grey levels) of the full-resolution pixel noise.
_GRAIN = 6.0

# The sky patch of the synthetic catalogue (degrees): area-uniform, wide enough that no two galaxies are duplicates.
_DEC_RANGE = (-20.0, 30.0)
_NAN_REDSHIFT_FRACTION = 0.15


# --------------------------------------------------------------------------- render grid


@functools.lru_cache(maxsize=4)
def _grid(work: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates centred on the image and the squared FFT frequencies of a `work`-pixel render grid."""
    c = (work - 1) / 2.0
    yy, xx = np.mgrid[0:work, 0:work].astype(np.float32) - np.float32(c)
    ky = np.fft.fftfreq(work).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(work).astype(np.float32)[None, :]
    # A Gaussian of sigma s has transfer function exp(-2 pi^2 s^2 k^2).
    k2 = (2.0 * math.pi**2 * (kx**2 + ky**2)).astype(np.float32)
    return xx, yy, k2


def _upsample2(a: np.ndarray, axis: int) -> np.ndarray:
    """Bilinear 2x upsampling along `axis` (pixel centres aligned, edges clamped), by slicing only.

    Same result as `torch.nn.functional.interpolate(..., scale_factor=2, mode="bilinear")` per axis; written with
    slices because a BLAS matmul would be slower and multi-threaded BLAS crawls when other processes share cores.
    """
    a = np.moveaxis(a, axis, 0)
    out = np.empty((2 * a.shape[0],) + a.shape[1:], dtype=a.dtype)
    step = a[1:] - a[:-1]
    out[0], out[-1] = a[0], a[-1]
    # Output 2i sits 1/4 pixel before input i, output 2i+1 1/4 pixel after it.
    np.multiply(step, np.float32(0.75), out=out[2::2])
    out[2::2] += a[:-1]
    np.multiply(step, np.float32(0.25), out=out[1:-1:2])
    out[1:-1:2] += a[:-1]
    return np.moveaxis(out, 0, axis)


class _Canvas:
    """Flux in three bands on the render grid, in units of the sky noise per render pixel."""

    def __init__(self, work: int, rng: np.random.Generator):
        self.work = work
        self.rng = rng
        self.scale = work / _REF  # render pixels per reference pixel
        self.x, self.y, self.k2 = _grid(work)
        self.flux = np.zeros((3, work, work), dtype=np.float32)

    def frame(self, x0: float, y0: float, pa: float) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates (render pixels) along and across position angle `pa`, centred on (x0, y0) ref pixels."""
        c, s = np.float32(math.cos(pa)), np.float32(math.sin(pa))
        dx = self.x - np.float32(x0 * self.scale)
        dy = self.y - np.float32(y0 * self.scale)
        return dx * c + dy * s, dy * c - dx * s

    def add(self, light: np.ndarray, colour: np.ndarray, amp: float) -> None:
        self.flux += (np.float32(amp) * colour)[:, None, None] * light

    def add_stamp(self, cx: float, cy: float, sigma: float, q: float, pa: float, amp: float, colour: np.ndarray):
        """A small elliptical Gaussian (render pixels) added only where it matters: background galaxies."""
        half = int(math.ceil(3.5 * sigma)) + 1
        ix, iy = int(round(cx)), int(round(cy))
        x0, x1 = max(ix - half, 0), min(ix + half + 1, self.work)
        y0, y1 = max(iy - half, 0), min(iy + half + 1, self.work)
        if x0 >= x1 or y0 >= y1:
            return
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - cx, yy - cy
        c, s = math.cos(pa), math.sin(pa)
        u, v = dx * c + dy * s, (dy * c - dx * s) / q
        blob = np.exp(-(u * u + v * v) / np.float32(2 * sigma * sigma))
        self.flux[:, y0:y1, x0:x1] += (np.float32(amp) * colour)[:, None, None] * blob


def _sersic(u: np.ndarray, v: np.ndarray, re: float, n: float, q: float) -> np.ndarray:
    """Sersic profile normalised to 1 at the effective radius `re` (render pixels), axis ratio `q`."""
    b = 2.0 * n - 1.0 / 3.0 + 0.009876 / n
    r2 = (u * u + (v * v) / np.float32(q * q)) / np.float32(re * re)
    # r2**(0.5/n) is (r/re)**(1/n) without a square root.
    return np.exp(np.float32(b) * (1.0 - r2 ** np.float32(0.5 / n)))


def _jitter(colour: np.ndarray, rng: np.random.Generator, amount: float = 0.06) -> np.ndarray:
    return (colour * np.exp(rng.normal(0.0, amount, 3))).astype(np.float32)


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return ((1 - t) * a + t * b).astype(np.float32)


def _smooth_field(cv: _Canvas, scale: float, contrast: float) -> np.ndarray:
    """A log-normal random field with clumps of ~`scale` render pixels: star-forming knots, irregular light.

    Gaussian-filtered white noise in Fourier space: isotropic, unlike an interpolated coarse grid, whose cells
    show up as grid-aligned lobes.
    """
    white = cv.rng.standard_normal((cv.work, cv.work), dtype=np.float32)
    field = np.fft.irfft2(np.fft.rfft2(white) * np.exp(-cv.k2 * np.float32(scale**2)), s=white.shape)
    return np.exp(field * np.float32(contrast / (field.std() + 1e-6)))


# --------------------------------------------------------------------------- components


def _add_smooth(cv: _Canvas, x0, y0, re, n, q, pa, amp, colour) -> None:
    u, v = cv.frame(x0, y0, pa)
    cv.add(_sersic(u, v, re * cv.scale, n, q), colour, amp)


def _add_disc(
    cv: _Canvas,
    *,
    x0: float,
    y0: float,
    h: float,
    cosi: float,
    pa: float,
    amp: float,
    colour: np.ndarray,
    arms: int = 0,
    pitch_deg: float = 20.0,
    arm_strength: float = 0.0,
    bar_length: float = 0.0,
    bar_amp: float = 0.0,
    clumpy: float = 0.0,
) -> None:
    """Exponential disc of scale length `h` (ref pixels), with optional logarithmic spiral arms and a bar.

    Arms and bar are defined in the plane of the disc and projected with it, so inclination foreshortens them
    the way it does on the sky.
    """
    rng = cv.rng
    u, v = cv.frame(x0, y0, pa)
    q = max(cosi, 0.04)
    hs = h * cv.scale
    vd = v / np.float32(q)  # de-projected: coordinates in the plane of the disc
    r2 = u * u + vd * vd
    rad = np.sqrt(r2) + np.float32(1e-3)
    disc = np.exp(-rad / np.float32(hs))
    if not arms:
        cv.add(disc, colour, amp)
        return
    theta = np.arctan2(vd, u)
    bar_angle = rng.uniform(0, math.pi)
    r_start = max(bar_length * cv.scale, 0.6 * hs)
    wind = 1.0 / math.tan(math.radians(pitch_deg))
    # Arm m starts at angle bar_angle (the bar ends when there is a bar) at radius r_start.
    phase = arms * (theta - np.float32(bar_angle) - np.float32(wind) * np.log(rad / np.float32(r_start)))
    sharp = rng.uniform(2.0, 5.0)
    arm = ((1.0 + np.cos(phase)) * 0.5) ** np.float32(sharp)
    taper = 1.0 - np.exp(-((rad / np.float32(r_start)) ** 2))
    arm_light = disc * arm * taper
    if clumpy:
        arm_light *= _smooth_field(cv, 1.5 * cv.scale * 2, clumpy)
    inner = 1.0 - arm_strength
    cv.add(disc, colour, amp * inner)
    cv.add(arm_light, _mix(colour, _jitter(_YOUNG, rng), 0.7), amp * arm_strength * 2.2)
    if bar_amp:
        ca, sa = np.float32(math.cos(bar_angle)), np.float32(math.sin(bar_angle))
        bu, bv = u * ca + vd * sa, vd * ca - u * sa
        bar = _sersic(bu, bv, bar_length * cv.scale * 0.6, rng.uniform(0.3, 0.6), rng.uniform(0.18, 0.32))
        cv.add(bar, _mix(_OLD, colour, 0.35), amp * bar_amp)


def _add_stream(cv: _Canvas, x0, y0, angle, length, bend, width, amp, colour) -> None:
    """A curved, fanning band of light from (x0, y0): tidal tails, bridges and plumes.

    `length` and `width` are in ref pixels; `bend` is the sideways offset at the far end as a fraction of `length`.
    """
    u, v = cv.frame(x0, y0, angle)
    s = cv.scale
    ln, w0 = max(length * s, 2.0), width * s
    across = v - np.float32(bend / ln) * u * u
    w = np.float32(w0) * (1.0 + np.maximum(u, 0) / np.float32(ln))
    # Soft start at the source, exponential fading, soft end at `length` (arguments clipped: no overflow).
    end = np.exp(np.minimum((u - np.float32(ln)) / np.float32(0.1 * ln), 30.0))
    start = np.exp(np.minimum(-u / np.float32(1.5 * s + 1.0), 30.0))
    along = np.exp(-np.maximum(u, 0) / np.float32(ln)) / ((1.0 + end) * (1.0 + start))
    cv.add(along * np.exp(-(across * across) / (2.0 * w * w)), colour, amp)


def _add_field(cv: _Canvas) -> None:
    """Foreground stars (points before the PSF) and faint, mostly red background galaxies."""
    rng, work = cv.rng, cv.work
    n_stars = rng.poisson(rng.uniform(8, 30))
    if n_stars:
        iy, ix = rng.integers(0, work, (2, n_stars))
        # Number counts N(>f) ~ f^-0.6: many faint dots, a few bright saturated stars.
        flux = 15.0 * (1.0 - rng.uniform(0.0, 0.985, n_stars)) ** (-1 / 0.6)
        t = rng.uniform(0, 1, n_stars) ** 2  # most faint sources are red: M dwarfs and distant galaxies
        colours = (1 - t)[:, None] * np.array([1.0, 0.45, 0.2]) + t[:, None] * np.array([0.45, 0.7, 1.0])
        for c in range(3):
            np.add.at(cv.flux[c], (iy, ix), (flux * colours[:, c]).astype(np.float32))
    for _ in range(rng.poisson(3.0)):
        sigma = rng.uniform(0.5, 1.6) * cv.scale * 2
        colour = _jitter(_mix(_OLD, _DISC, rng.uniform(0, 0.6)), rng, 0.1)
        cv.add_stamp(
            rng.uniform(0, work), rng.uniform(0, work), sigma, rng.uniform(0.4, 1.0), rng.uniform(0, math.pi),
            rng.uniform(3, 25), colour,
        )  # fmt: skip


# --------------------------------------------------------------------------- classes


def _draw_redshift(rng: np.random.Generator) -> float:
    """The first draw of every galaxy: its redshift (GZ10 galaxies sit mostly at 0.02 < z < 0.15)."""
    return float(np.clip(math.exp(rng.normal(math.log(0.06), 0.45)), 0.005, 0.3))


def _smooth_galaxy(cv, label, g) -> None:
    rng = cv.rng
    # The three smooth classes differ only by axis ratio, and the ranges overlap at the edges like volunteer votes.
    q = {2: rng.uniform(0.76, 1.0), 3: rng.uniform(0.46, 0.82), 4: rng.uniform(0.24, 0.54)}[label]
    n = rng.uniform(1.0, 3.0) if label == 4 else rng.uniform(2.0, 5.0)
    re = rng.uniform(2.5, 7.0) * g["size"] / math.sqrt(q)
    colour = _jitter(_OLD, rng)
    _add_smooth(cv, g["x0"], g["y0"], re, n, q, g["pa"], g["amp"] * rng.uniform(2.0, 5.0), colour)
    if rng.random() < 0.6:  # faint extended envelope
        _add_smooth(
            cv, g["x0"], g["y0"], re * rng.uniform(2.0, 3.5), 1.0, min(1.0, q * rng.uniform(1.0, 1.2)), g["pa"],
            g["amp"] * rng.uniform(0.1, 0.3), _mix(colour, _DISC, 0.3),
        )  # fmt: skip


def _spiral_galaxy(cv, label, g) -> None:
    rng = cv.rng
    cosi = rng.uniform(0.4, 1.0)
    # Tight and loose spirals differ by pitch angle (overlapping at ~18 deg); the Hubble sequence adds a softer
    # trend: tighter arms come with bigger bulges and smoother, weaker arms.
    if label == 6:
        pitch, arms, bt = rng.uniform(7.0, 19.0), rng.choice([2, 2, 2, 3]), rng.uniform(0.15, 0.45)
        h, strength = rng.uniform(5.0, 11.0), rng.uniform(0.3, 0.7)
    elif label == 7:
        pitch, arms, bt = rng.uniform(17.0, 38.0), rng.choice([2, 2, 3, 4]), rng.uniform(0.03, 0.25)
        h, strength = rng.uniform(6.0, 13.0), rng.uniform(0.5, 0.9)
    else:
        pitch, arms, bt = rng.uniform(10.0, 30.0), 2, rng.uniform(0.1, 0.35)
        h, strength = rng.uniform(5.0, 11.0), rng.uniform(0.4, 0.85)
    h *= g["size"]
    disc_colour = _jitter(_DISC, rng)
    _add_disc(
        cv,
        x0=g["x0"],
        y0=g["y0"],
        h=h,
        cosi=cosi,
        pa=g["pa"],
        amp=g["amp"] * rng.uniform(3.0, 6.0),
        colour=disc_colour,
        arms=int(arms),
        pitch_deg=pitch,
        arm_strength=strength,
        bar_length=rng.uniform(0.9, 1.7) * h if label == 5 else 0.0,
        bar_amp=rng.uniform(1.5, 3.0) if label == 5 else 0.0,
        clumpy=rng.uniform(0.2, 0.7),
    )
    re_b = rng.uniform(0.15, 0.35) * h
    _add_smooth(
        cv, g["x0"], g["y0"], re_b, rng.uniform(1.5, 4.0), rng.uniform(0.75, 1.0), g["pa"],
        g["amp"] * bt * rng.uniform(40.0, 80.0), _jitter(_OLD, rng),
    )  # fmt: skip


def _edge_on_galaxy(cv, label, g) -> None:
    rng = cv.rng
    h = rng.uniform(9.0, 17.0) * g["size"]
    thin = rng.uniform(0.05, 0.13) if label == 8 else rng.uniform(0.1, 0.22)
    u, v = cv.frame(g["x0"], g["y0"], g["pa"])
    # Blue thin disc plus a shorter, thicker, redder inner disc: the colour gradient of real edge-on discs.
    disc = _sersic(u, v, 1.68 * h * cv.scale, rng.uniform(0.7, 1.1), thin)
    cv.add(disc, _jitter(_mix(_DISC, _YOUNG, 0.3), rng), g["amp"] * rng.uniform(4.0, 8.0))
    inner = _sersic(u, v, 0.9 * h * cv.scale, 1.0, thin * 1.4)
    cv.add(inner, _jitter(_mix(_DISC, _OLD, 0.6), rng), g["amp"] * rng.uniform(4.0, 8.0))
    if label == 9:
        re_b = rng.uniform(0.25, 0.5) * h
        bulge = _sersic(u, v, re_b * cv.scale, rng.uniform(1.5, 4.0), rng.uniform(0.55, 0.95))
        cv.add(bulge, _jitter(_OLD, rng), g["amp"] * rng.uniform(6.0, 15.0))
        if rng.random() < 0.4:  # a dust lane across the bulge
            lane = 1.0 - rng.uniform(0.3, 0.7) * np.exp(-(v * v) / np.float32((0.5 + thin * h * cv.scale * 0.3) ** 2))
            cv.flux *= lane
    elif rng.random() < 0.3:  # at most a faint nucleus
        nucleus = _sersic(u, v, 1.2 * cv.scale, 1.0, 0.8)
        cv.add(nucleus, _jitter(_OLD, rng), g["amp"] * rng.uniform(0.5, 1.5))


def _component(cv, rng, x0, y0, size, amp) -> float:
    """One galaxy of a merger: an elliptical or a disc. Returns its size (ref pixels)."""
    if rng.random() < 0.5:
        re = rng.uniform(2.5, 6.0) * size
        _add_smooth(cv, x0, y0, re, rng.uniform(1.5, 4.0), rng.uniform(0.5, 1.0), rng.uniform(0, math.pi),
                    amp * rng.uniform(2.0, 5.0), _jitter(_OLD, rng))  # fmt: skip
        return re
    h = rng.uniform(3.0, 7.0) * size
    _add_disc(cv, x0=x0, y0=y0, h=h, cosi=rng.uniform(0.3, 1.0), pa=rng.uniform(0, math.pi),
              amp=amp * rng.uniform(2.0, 4.0), colour=_jitter(_DISC, rng), clumpy=0.0)  # fmt: skip
    _add_smooth(cv, x0, y0, 0.3 * h, 2.5, 0.9, 0.0, amp * rng.uniform(8.0, 20.0), _jitter(_OLD, rng))
    return h * 1.6


def _merging_galaxy(cv, g) -> None:
    rng = cv.rng
    sep = rng.uniform(7.0, 22.0) * g["size"]
    angle = rng.uniform(0, 2 * math.pi)
    ratio = rng.uniform(0.3, 1.0)
    dx, dy = math.cos(angle) * sep, math.sin(angle) * sep
    f = ratio / (1 + ratio)  # light-weighted centre stays near the image centre
    ax, ay = g["x0"] - f * dx, g["y0"] - f * dy
    bx, by = ax + dx, ay + dy
    _component(cv, rng, ax, ay, g["size"], g["amp"])
    _component(cv, rng, bx, by, g["size"] * math.sqrt(ratio), g["amp"] * ratio)
    if rng.random() < 0.2:  # a third member
        a3 = rng.uniform(0, 2 * math.pi)
        d3 = rng.uniform(0.6, 1.2) * sep
        _component(cv, rng, ax + math.cos(a3) * d3, ay + math.sin(a3) * d3, g["size"] * 0.6, g["amp"] * 0.5)
    tidal = _mix(_DISC, _OLD, rng.uniform(0, 0.6))
    if rng.random() < 0.75:
        _add_stream(cv, ax, ay, angle, sep, rng.normal(0, 0.2), rng.uniform(3.0, 6.0) * g["size"],
                    g["amp"] * rng.uniform(0.4, 1.0), tidal)  # fmt: skip
    for _ in range(rng.integers(0, 3)):
        start = (ax, ay) if rng.random() < 0.5 else (bx, by)
        bend = rng.choice([-1, 1]) * rng.uniform(0.2, 0.8)
        _add_stream(
            cv, *start, rng.uniform(0, 2 * math.pi), rng.uniform(1.5, 3.0) * sep, bend,
            rng.uniform(2.0, 5.0) * g["size"], g["amp"] * rng.uniform(0.3, 0.9), tidal,
        )  # fmt: skip


def _disturbed_galaxy(cv, g) -> None:
    rng = cv.rng
    re = rng.uniform(4.0, 10.0) * g["size"]
    q = rng.uniform(0.35, 1.0)
    # Mostly blue (star formation triggered by the disturbance), but old, red disturbed systems exist too.
    colour = _jitter(_mix(_OLD, _YOUNG, rng.uniform(0.15, 1.0)), rng)
    u, v = cv.frame(g["x0"], g["y0"], g["pa"])
    body = _sersic(u, v, re * cv.scale, rng.uniform(0.6, 1.5), q)
    # Irregular, clumpy light: the galaxy's own structure, not a companion.
    body *= _smooth_field(cv, rng.uniform(2.0, 5.0) * cv.scale * 2, rng.uniform(0.2, 0.9))
    cv.add(body, colour, g["amp"] * rng.uniform(2.0, 4.0))
    # Lopsided outer light: a diffuse offset plume with no core of its own.
    off = rng.uniform(0.5, 1.3) * re
    a = rng.uniform(0, 2 * math.pi)
    _add_smooth(cv, g["x0"] + off * math.cos(a), g["y0"] + off * math.sin(a), re * rng.uniform(0.8, 1.6),
                rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.9), rng.uniform(0, math.pi),
                g["amp"] * rng.uniform(0.4, 1.2), _jitter(colour, rng))  # fmt: skip
    if rng.random() < 0.6:
        bend = rng.choice([-1, 1]) * rng.uniform(0.2, 0.8)
        _add_stream(cv, g["x0"], g["y0"], rng.uniform(0, 2 * math.pi), re * rng.uniform(2.0, 4.0), bend,
                    re * rng.uniform(0.3, 0.6), g["amp"] * rng.uniform(0.3, 1.0), _jitter(colour, rng))  # fmt: skip
    if rng.random() < 0.5:  # a compact, redder nucleus
        _add_smooth(cv, g["x0"], g["y0"], re * 0.15, 2.5, 0.9, 0.0, g["amp"] * rng.uniform(5.0, 15.0),
                    _jitter(_OLD, rng))  # fmt: skip


# --------------------------------------------------------------------------- public API


def render_galaxy(label: int, rng: np.random.Generator, size: int = GZ10_IMAGE_SIZE) -> np.ndarray:
    """Draw one GZ10-like galaxy of class `label` as a DECaLS-style colour cutout.

    The first draw from `rng` is the galaxy's redshift (see `synthetic_catalog`), which shrinks, dims and reddens
    it; morphology, orientation, brightness, seeing, sky and field stars follow from later draws.

    Args:
        label: GZ10 class index, 0-9.
        rng: the generator to draw from; `np.random.default_rng([seed, i])` makes image `i` reproducible.
        size: output side in pixels (the galaxy keeps its angular size: 256 matches 0.262 arcsec/pixel).

    Returns:
        `(size, size, 3)` uint8 RGB image.
    """
    if not 0 <= int(label) < NUM_CLASSES:
        raise HfgalError(f"label {label} is not a GZ10 class; use 0-{NUM_CLASSES - 1}")
    if size < 16:
        raise HfgalError(f"size {size} is too small to draw a galaxy; use at least 16 pixels")
    label = int(label)
    z = _draw_redshift(rng)
    work = (size + 1) // 2
    cv = _Canvas(work, rng)
    # Angular size ~ 1/distance (flattened: GZ10 selects galaxies big enough to classify); (1+z)^-4 dimming.
    g = {
        "size": _SIZE * float(np.clip((0.06 / z) ** 0.6, 0.55, 1.8)) * math.exp(rng.normal(0.0, 0.15)),
        "amp": _BRIGHT * math.exp(rng.normal(0.0, 0.35)) * (1.0 + z) ** -4,
        "x0": rng.normal(0.0, 1.5),
        "y0": rng.normal(0.0, 1.5),
        "pa": rng.uniform(0.0, math.pi),
    }
    if label == 0:
        _disturbed_galaxy(cv, g)
    elif label == 1:
        _merging_galaxy(cv, g)
    elif label in (2, 3, 4):
        _smooth_galaxy(cv, label, g)
    elif label in (5, 6, 7):
        _spiral_galaxy(cv, label, g)
    else:
        _edge_on_galaxy(cv, label, g)
    # Redshift moves blue light out of g: a mild k-correction reddening.
    cv.flux[2] *= np.float32(max(1.0 - 1.5 * z, 0.5))
    _add_field(cv)

    # Seeing: Gaussian core plus a faint wide halo, FWHM 1.0-1.6 arcsec, applied in Fourier space.
    sigma = rng.uniform(1.0, 1.6) / GZ10_PXSCALE / 2.355 * cv.scale
    halo = np.float32(rng.uniform(0.03, 0.1))
    transfer = (1 - halo) * np.exp(-cv.k2 * np.float32(sigma**2)) + halo * np.exp(-cv.k2 * np.float32(9 * sigma**2))
    flux = np.fft.irfft2(np.fft.rfft2(cv.flux) * transfer, s=(work, work)).astype(np.float32)

    # Sky noise in units of its own sigma, drawn on the render grid (upsampling correlates it over ~2 pixels, as
    # the survey's resampling does); fine grain is added at full resolution below.
    flux += (
        rng.standard_normal((3, work, work), dtype=np.float32)
        * rng.uniform(0.9, 1.2, 3).astype(np.float32)[:, None, None]
    )
    # Colour-preserving asinh stretch (Lupton et al. 2004): linear near the sky, logarithmic in bright cores, and
    # the band ratios survive, so old populations stay yellow and young ones blue until they saturate.
    beta = rng.uniform(2.0, 4.0)
    slope = np.float32(rng.uniform(8.0, 10.5))  # grey levels per noise sigma at the sky
    x = flux.mean(axis=0) / np.float32(beta)
    gain = np.arcsinh(x) / np.where(np.abs(x) < 1e-4, np.float32(1.0), x)
    gain[np.abs(x) < 1e-4] = 1.0
    sky = (rng.uniform(30.0, 36.0) + rng.normal(0.0, 0.8, 3)).astype(np.float32)
    img = _upsample2(_upsample2(flux * (gain * slope), 1), 2)[:, :size, :size]  # (3, size, size)
    # Fine-grained pixel noise: uniform bytes are the cheapest random numbers numpy makes (std 73.9 per byte).
    grain = np.frombuffer(rng.bytes(3 * size * size), dtype=np.uint8).reshape(3, size, size)
    offset = sky - np.float32(_GRAIN * 127.5 / 73.9) + np.float32(0.5)  # +0.5: round, not truncate
    img = img + grain * np.float32(_GRAIN / 73.9) + offset[:, None, None]
    return np.ascontiguousarray(np.clip(img, 0, 255, out=img).astype(np.uint8).transpose(1, 2, 0))


def _class_counts(n: int, proportions: str) -> np.ndarray:
    if proportions == "balanced":
        weights = np.ones(NUM_CLASSES)
    elif proportions == "gz10":
        weights = np.asarray(GZ10_CLASS_COUNTS, dtype=np.float64)
    else:
        raise HfgalError(f"unknown proportions {proportions!r}; use one of {', '.join(PROPORTIONS)}")
    exact = weights / weights.sum() * n
    counts = np.floor(exact).astype(np.int64)
    # Largest remainders get the leftover images, so counts sum to n exactly.
    counts[np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]] += 1
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
    redshift = np.array([_draw_redshift(np.random.default_rng([seed, i])) for i in range(n)])
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
    """Short SHA-256 of this module's source: the synthetic images are a function of it, the seed and `n`."""
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def gz10_synthetic(
    n: int = 2000,
    seed: int = 0,
    proportions: str = "gz10",
    split_scheme: str = "default",
    cache_dir: str | None = None,
) -> DatasetDict:
    """Synthetic Galaxy10 DECaLS as a `DatasetDict` with the real dataset's features and split logic.

    Args:
        n: number of galaxies.
        seed: seeds the catalogue, every image and the train/validation/test split.
        proportions: `"gz10"` (real class frequencies) or `"balanced"`.
        split_scheme: see `hfgal.split.gz10_split`.
        cache_dir: where datasets writes its Arrow files (default: the datasets cache).

    Returns:
        `DatasetDict` with `train`, `validation` and `test` (features image, label, ra, dec, redshift, pxscale,
        gz10_index).
    """
    from .data import build_gz10

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
        source=f"synthetic:{n}",
        cache_dir=cache_dir,
        # The datasets cache must tell apart seeds, proportions and renderers of the same size: the renderer is
        # identified by this module's source, so no edit can leave a stale cache behind a forgotten version bump.
        fingerprint=f"synthetic:{n}:seed={seed}:{proportions}:{renderer_digest()}",
    )
