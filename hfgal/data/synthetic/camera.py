"""The survey's side of a synthetic cutout: seeing, sky noise, the colour stretch and 8-bit quantisation.

Turns the three-band flux of a `Canvas` (units of the sky noise per render pixel) into a `(size, size, 3)` uint8
image like a Galaxy10 DECaLS cutout. The constants are fitted to the calibration half of the real sample by
`benchmarks/synthetic_calibration.py` (medians over its 57 cutouts; the held-out scoring half was never measured).
"""

from __future__ import annotations

import numpy as np

from ...constants import GZ10_PXSCALE
from .light import Canvas, upsample2

# Seeing FWHM (arcsec): DECaLS' median is ~1.2"; the calibration half measures 4.1-5.2 px (1.1-1.4") on its
# compact sources, the renderer 4.8-5.6 px through the same measurement.
SEEING_ARCSEC = (0.8, 1.25)
# Sky level (grey levels) per channel: real 32-35 in all three.
SKY = 33.0
# Stretch (grey levels per sky-noise sigma at the sky) and asinh softening (sigma): the real cores saturate
# (median peak luminance ~200 grey levels above the sky, 1-4 % of the galaxy's pixels at 250 or more).
SLOPE = (10.0, 13.0)
SOFTENING = (2.5, 5.0)
# Pixel noise: real cutouts show 10 grey levels of luminance noise but only 11 per channel, so most of it is
# common to the three channels (JPEG's chroma subsampling); 2x2 block means keep 0.72 of it (correlated pixels).
GRAIN_COMMON = 6.0
GRAIN_CHANNEL = 3.5
# Share of the render-grid sky noise common to the three bands.
NOISE_COMMON = 0.8
# Uniform bytes are the cheapest random numbers numpy makes: std 73.9 grey levels per byte.
_BYTE_STD = 73.9


def seeing(cv: Canvas, rng: np.random.Generator) -> np.ndarray:
    """The canvas' flux blurred by a Gaussian core plus a faint wide halo, in Fourier space: `(3, work, work)`."""
    work = cv.work
    sigma = rng.uniform(*SEEING_ARCSEC) / GZ10_PXSCALE / 2.355 * cv.scale
    halo = np.float32(rng.uniform(0.03, 0.1))
    transfer = (1 - halo) * np.exp(-cv.k2 * np.float32(sigma**2)) + halo * np.exp(-cv.k2 * np.float32(9 * sigma**2))
    return np.fft.irfft2(np.fft.rfft2(cv.flux) * transfer, s=(work, work)).astype(np.float32)


def expose(cv: Canvas, rng: np.random.Generator, size: int) -> np.ndarray:
    """Seeing, sky noise, stretch and quantisation of the canvas: the `(size, size, 3)` uint8 cutout."""
    work = cv.work
    flux = seeing(cv, rng)
    # Sky noise in units of its own sigma, drawn on the render grid (upsampling correlates it over ~2 pixels, as
    # the survey's resampling does); mostly common to the bands, as the real composites show it.
    common = rng.standard_normal((work, work), dtype=np.float32) * np.float32(NOISE_COMMON)
    flux += rng.standard_normal((3, work, work), dtype=np.float32) * np.float32(np.sqrt(1 - NOISE_COMMON**2))
    flux += common
    # Colour-preserving asinh stretch (Lupton et al. 2004): linear near the sky, logarithmic in bright cores, and
    # the band ratios survive, so old populations stay yellow and young ones blue until they saturate.
    beta = rng.uniform(*SOFTENING)
    slope = np.float32(rng.uniform(*SLOPE))
    x = flux.mean(axis=0) / np.float32(beta)
    tiny = np.abs(x) < 1e-4
    gain = np.arcsinh(x) / np.where(tiny, np.float32(1.0), x)
    gain[tiny] = 1.0
    sky = (SKY + rng.normal(0.0, 0.8, 3)).astype(np.float32)
    img = upsample2(upsample2(flux * (gain * slope), 1), 2)[:, :size, :size]  # (3, size, size)
    # Fine-grained pixel noise at full resolution, common to the channels and per channel.
    grain = np.frombuffer(rng.bytes(4 * size * size), dtype=np.uint8).reshape(4, size, size)
    img += grain[:3] * np.float32(GRAIN_CHANNEL / _BYTE_STD)
    img += grain[3] * np.float32(GRAIN_COMMON / _BYTE_STD)
    offset = sky - np.float32((GRAIN_CHANNEL + GRAIN_COMMON) * 127.5 / _BYTE_STD) + np.float32(0.5)  # round
    img += offset[:, None, None]
    return np.ascontiguousarray(np.clip(img, 0, 255, out=img).astype(np.uint8).transpose(1, 2, 0))
