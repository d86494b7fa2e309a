"""Light on a render grid: the canvas, analytic profiles (Sersic, exponential discs with arms and bars, tidal
streams), field stars and clumpy random fields, in three bands shown as (R, G, B) = (z, r, g).

The building blocks of `hfgal.data.synthetic.galaxies`; lengths are in pixels of a 256-pixel reference image
(0.262 arcsec/pixel) and scaled to the render grid.
"""

from __future__ import annotations

import functools
import math

import numpy as np

# Band weights (z, r, g) shown as (R, G, B): old stellar populations are red/yellow, star formation is blue.
OLD = np.array([1.0, 0.93, 0.79], dtype=np.float32)
DISC = np.array([0.78, 0.85, 1.0], dtype=np.float32)
YOUNG = np.array([0.50, 0.68, 1.0], dtype=np.float32)

# Lengths below are in pixels of a 256-pixel image (0.262 arcsec/pixel) and scaled to the render grid.
REF = 256.0
# Overall size and surface-brightness scale of the central galaxy (noise sigma = 1).
SIZE = 1.8
BRIGHT = 25.0


# --------------------------------------------------------------------------- render grid


@functools.lru_cache(maxsize=4)
def render_grid(work: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates centred on the image and the squared FFT frequencies of a `work`-pixel render grid."""
    c = (work - 1) / 2.0
    yy, xx = np.mgrid[0:work, 0:work].astype(np.float32) - np.float32(c)
    ky = np.fft.fftfreq(work).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(work).astype(np.float32)[None, :]
    # A Gaussian of sigma s has transfer function exp(-2 pi^2 s^2 k^2).
    k2 = (2.0 * math.pi**2 * (kx**2 + ky**2)).astype(np.float32)
    return xx, yy, k2


def upsample2(a: np.ndarray, axis: int) -> np.ndarray:
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


class Canvas:
    """Flux in three bands on the render grid, in units of the sky noise per render pixel."""

    def __init__(self, work: int, rng: np.random.Generator):
        self.work = work
        self.rng = rng
        self.scale = work / REF  # render pixels per reference pixel
        self.x, self.y, self.k2 = render_grid(work)
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


def sersic(u: np.ndarray, v: np.ndarray, re: float, n: float, q: float) -> np.ndarray:
    """Sersic profile normalised to 1 at the effective radius `re` (render pixels), axis ratio `q`."""
    b = 2.0 * n - 1.0 / 3.0 + 0.009876 / n
    r2 = (u * u + (v * v) / np.float32(q * q)) / np.float32(re * re)
    # r2**(0.5/n) is (r/re)**(1/n) without a square root.
    return np.exp(np.float32(b) * (1.0 - r2 ** np.float32(0.5 / n)))


def jitter(colour: np.ndarray, rng: np.random.Generator, amount: float = 0.06) -> np.ndarray:
    return (colour * np.exp(rng.normal(0.0, amount, 3))).astype(np.float32)


def mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return ((1 - t) * a + t * b).astype(np.float32)


def smooth_field(cv: Canvas, scale: float, contrast: float) -> np.ndarray:
    """A log-normal random field with clumps of ~`scale` render pixels: star-forming knots, irregular light.

    Gaussian-filtered white noise in Fourier space: isotropic, unlike an interpolated coarse grid, whose cells
    show up as grid-aligned lobes.
    """
    white = cv.rng.standard_normal((cv.work, cv.work), dtype=np.float32)
    field = np.fft.irfft2(np.fft.rfft2(white) * np.exp(-cv.k2 * np.float32(scale**2)), s=white.shape)
    return np.exp(field * np.float32(contrast / (field.std() + 1e-6)))


# --------------------------------------------------------------------------- components


def add_smooth(cv: Canvas, x0, y0, re, n, q, pa, amp, colour) -> None:
    u, v = cv.frame(x0, y0, pa)
    cv.add(sersic(u, v, re * cv.scale, n, q), colour, amp)


def add_disc(
    cv: Canvas,
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
    lopsided: float = 0.0,
) -> None:
    """Exponential disc of scale length `h` (ref pixels), with optional logarithmic spiral arms, a bar, and an
    m=1 lopsidedness of relative amplitude `lopsided` that grows outwards (a disturbed or interacting disc).

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
    if lopsided:
        phi = rng.uniform(0, 2 * math.pi)
        cos_m1 = (u * np.float32(math.cos(phi)) + vd * np.float32(math.sin(phi))) / rad
        disc *= 1.0 + np.float32(lopsided) * cos_m1 * rad / (rad + np.float32(hs))
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
        arm_light *= smooth_field(cv, 1.5 * cv.scale * 2, clumpy)
    inner = 1.0 - arm_strength
    cv.add(disc, colour, amp * inner)
    cv.add(arm_light, mix(colour, jitter(YOUNG, rng), 0.7), amp * arm_strength * 2.2)
    if bar_amp:
        ca, sa = np.float32(math.cos(bar_angle)), np.float32(math.sin(bar_angle))
        bu, bv = u * ca + vd * sa, vd * ca - u * sa
        bar = sersic(bu, bv, bar_length * cv.scale * 0.6, rng.uniform(0.3, 0.6), rng.uniform(0.18, 0.32))
        cv.add(bar, mix(OLD, colour, 0.35), amp * bar_amp)


def add_stream(cv: Canvas, x0, y0, angle, length, bend, width, amp, colour) -> None:
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


def add_field(cv: Canvas) -> None:
    """Foreground stars (points before the PSF) and faint, mostly red background galaxies."""
    rng, work = cv.rng, cv.work
    n_stars = rng.poisson(rng.uniform(10, 36))
    if n_stars:
        iy, ix = rng.integers(0, work, (2, n_stars))
        # Number counts N(>f) ~ f^-0.6: many faint dots, a few bright saturated stars.
        flux = 15.0 * (1.0 - rng.uniform(0.0, 0.985, n_stars)) ** (-1 / 0.6)
        t = rng.uniform(0, 1, n_stars) ** 3  # most faint sources are red: M dwarfs and distant galaxies
        colours = (1 - t)[:, None] * np.array([1.0, 0.4, 0.12]) + t[:, None] * np.array([0.45, 0.7, 1.0])
        for c in range(3):
            np.add.at(cv.flux[c], (iy, ix), (flux * colours[:, c]).astype(np.float32))
    for _ in range(rng.poisson(5.0)):
        sigma = rng.uniform(0.5, 1.6) * cv.scale * 2
        colour = jitter(mix(OLD, DISC, rng.uniform(0, 0.6)), rng, 0.1)
        cv.add_stamp(
            rng.uniform(0, work), rng.uniform(0, work), sigma, rng.uniform(0.4, 1.0), rng.uniform(0, math.pi),
            rng.uniform(3, 25), colour,
        )  # fmt: skip
