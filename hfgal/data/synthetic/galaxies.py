"""The ten GZ10 morphologies drawn from the light profiles of `hfgal.data.synthetic.light`, and the final image:
seeing, sky noise, asinh stretch and 8-bit quantisation, like a DECaLS colour cutout.

Classes follow the morphology of the Galaxy10 DECaLS decision tree and overlap a little on purpose (smooth classes
differ only by axis ratio, tight and loose spirals only by pitch angle), so they are learnable but not a give-away.
"""

from __future__ import annotations

import math

import numpy as np

from ...constants import GZ10_IMAGE_SIZE, GZ10_PXSCALE, NUM_CLASSES
from ...errors import HfgalError
from .light import (
    BRIGHT,
    DISC,
    GRAIN,
    OLD,
    SIZE,
    YOUNG,
    Canvas,
    add_disc,
    add_field,
    add_smooth,
    add_stream,
    jitter,
    mix,
    sersic,
    smooth_field,
    upsample2,
)

# --------------------------------------------------------------------------- classes


def draw_redshift(rng: np.random.Generator) -> float:
    """The first draw of every galaxy: its redshift (GZ10 galaxies sit mostly at 0.02 < z < 0.15)."""
    return float(np.clip(math.exp(rng.normal(math.log(0.06), 0.45)), 0.005, 0.3))


def _smooth_galaxy(cv, label, g) -> None:
    rng = cv.rng
    # The three smooth classes differ only by axis ratio, and the ranges overlap at the edges like volunteer votes.
    q = {2: rng.uniform(0.76, 1.0), 3: rng.uniform(0.46, 0.82), 4: rng.uniform(0.24, 0.54)}[label]
    n = rng.uniform(1.0, 3.0) if label == 4 else rng.uniform(2.0, 5.0)
    re = rng.uniform(2.5, 7.0) * g["size"] / math.sqrt(q)
    colour = jitter(OLD, rng)
    add_smooth(cv, g["x0"], g["y0"], re, n, q, g["pa"], g["amp"] * rng.uniform(2.0, 5.0), colour)
    if rng.random() < 0.6:  # faint extended envelope
        add_smooth(
            cv, g["x0"], g["y0"], re * rng.uniform(2.0, 3.5), 1.0, min(1.0, q * rng.uniform(1.0, 1.2)), g["pa"],
            g["amp"] * rng.uniform(0.1, 0.3), mix(colour, DISC, 0.3),
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
    disc_colour = jitter(DISC, rng)
    add_disc(
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
    add_smooth(
        cv, g["x0"], g["y0"], re_b, rng.uniform(1.5, 4.0), rng.uniform(0.75, 1.0), g["pa"],
        g["amp"] * bt * rng.uniform(40.0, 80.0), jitter(OLD, rng),
    )  # fmt: skip


def _edge_on_galaxy(cv, label, g) -> None:
    rng = cv.rng
    h = rng.uniform(9.0, 17.0) * g["size"]
    thin = rng.uniform(0.05, 0.13) if label == 8 else rng.uniform(0.1, 0.22)
    u, v = cv.frame(g["x0"], g["y0"], g["pa"])
    # Blue thin disc plus a shorter, thicker, redder inner disc: the colour gradient of real edge-on discs.
    disc = sersic(u, v, 1.68 * h * cv.scale, rng.uniform(0.7, 1.1), thin)
    cv.add(disc, jitter(mix(DISC, YOUNG, 0.3), rng), g["amp"] * rng.uniform(4.0, 8.0))
    inner = sersic(u, v, 0.9 * h * cv.scale, 1.0, thin * 1.4)
    cv.add(inner, jitter(mix(DISC, OLD, 0.6), rng), g["amp"] * rng.uniform(4.0, 8.0))
    if label == 9:
        re_b = rng.uniform(0.25, 0.5) * h
        bulge = sersic(u, v, re_b * cv.scale, rng.uniform(1.5, 4.0), rng.uniform(0.55, 0.95))
        cv.add(bulge, jitter(OLD, rng), g["amp"] * rng.uniform(6.0, 15.0))
        if rng.random() < 0.4:  # a dust lane across the bulge
            lane = 1.0 - rng.uniform(0.3, 0.7) * np.exp(-(v * v) / np.float32((0.5 + thin * h * cv.scale * 0.3) ** 2))
            cv.flux *= lane
    elif rng.random() < 0.3:  # at most a faint nucleus
        nucleus = sersic(u, v, 1.2 * cv.scale, 1.0, 0.8)
        cv.add(nucleus, jitter(OLD, rng), g["amp"] * rng.uniform(0.5, 1.5))


def _component(cv, rng, x0, y0, size, amp) -> float:
    """One galaxy of a merger: an elliptical or a disc. Returns its size (ref pixels)."""
    if rng.random() < 0.5:
        re = rng.uniform(2.5, 6.0) * size
        add_smooth(cv, x0, y0, re, rng.uniform(1.5, 4.0), rng.uniform(0.5, 1.0), rng.uniform(0, math.pi),
                    amp * rng.uniform(2.0, 5.0), jitter(OLD, rng))  # fmt: skip
        return re
    h = rng.uniform(3.0, 7.0) * size
    add_disc(cv, x0=x0, y0=y0, h=h, cosi=rng.uniform(0.3, 1.0), pa=rng.uniform(0, math.pi),
              amp=amp * rng.uniform(2.0, 4.0), colour=jitter(DISC, rng), clumpy=0.0)  # fmt: skip
    add_smooth(cv, x0, y0, 0.3 * h, 2.5, 0.9, 0.0, amp * rng.uniform(8.0, 20.0), jitter(OLD, rng))
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
    tidal = mix(DISC, OLD, rng.uniform(0, 0.6))
    if rng.random() < 0.75:
        add_stream(cv, ax, ay, angle, sep, rng.normal(0, 0.2), rng.uniform(3.0, 6.0) * g["size"],
                    g["amp"] * rng.uniform(0.4, 1.0), tidal)  # fmt: skip
    for _ in range(rng.integers(0, 3)):
        start = (ax, ay) if rng.random() < 0.5 else (bx, by)
        bend = rng.choice([-1, 1]) * rng.uniform(0.2, 0.8)
        add_stream(
            cv, *start, rng.uniform(0, 2 * math.pi), rng.uniform(1.5, 3.0) * sep, bend,
            rng.uniform(2.0, 5.0) * g["size"], g["amp"] * rng.uniform(0.3, 0.9), tidal,
        )  # fmt: skip


def _disturbed_galaxy(cv, g) -> None:
    rng = cv.rng
    re = rng.uniform(4.0, 10.0) * g["size"]
    q = rng.uniform(0.35, 1.0)
    # Mostly blue (star formation triggered by the disturbance), but old, red disturbed systems exist too.
    colour = jitter(mix(OLD, YOUNG, rng.uniform(0.15, 1.0)), rng)
    u, v = cv.frame(g["x0"], g["y0"], g["pa"])
    body = sersic(u, v, re * cv.scale, rng.uniform(0.6, 1.5), q)
    # Irregular, clumpy light: the galaxy's own structure, not a companion.
    body *= smooth_field(cv, rng.uniform(2.0, 5.0) * cv.scale * 2, rng.uniform(0.2, 0.9))
    cv.add(body, colour, g["amp"] * rng.uniform(2.0, 4.0))
    # Lopsided outer light: a diffuse offset plume with no core of its own.
    off = rng.uniform(0.5, 1.3) * re
    a = rng.uniform(0, 2 * math.pi)
    add_smooth(cv, g["x0"] + off * math.cos(a), g["y0"] + off * math.sin(a), re * rng.uniform(0.8, 1.6),
                rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.9), rng.uniform(0, math.pi),
                g["amp"] * rng.uniform(0.4, 1.2), jitter(colour, rng))  # fmt: skip
    if rng.random() < 0.6:
        bend = rng.choice([-1, 1]) * rng.uniform(0.2, 0.8)
        add_stream(cv, g["x0"], g["y0"], rng.uniform(0, 2 * math.pi), re * rng.uniform(2.0, 4.0), bend,
                    re * rng.uniform(0.3, 0.6), g["amp"] * rng.uniform(0.3, 1.0), jitter(colour, rng))  # fmt: skip
    if rng.random() < 0.5:  # a compact, redder nucleus
        add_smooth(cv, g["x0"], g["y0"], re * 0.15, 2.5, 0.9, 0.0, g["amp"] * rng.uniform(5.0, 15.0),
                    jitter(OLD, rng))  # fmt: skip


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
    z = draw_redshift(rng)
    work = (size + 1) // 2
    cv = Canvas(work, rng)
    # Angular size ~ 1/distance (flattened: GZ10 selects galaxies big enough to classify); (1+z)^-4 dimming.
    g = {
        "size": SIZE * float(np.clip((0.06 / z) ** 0.6, 0.55, 1.8)) * math.exp(rng.normal(0.0, 0.15)),
        "amp": BRIGHT * math.exp(rng.normal(0.0, 0.35)) * (1.0 + z) ** -4,
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
    add_field(cv)

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
    img = upsample2(upsample2(flux * (gain * slope), 1), 2)[:, :size, :size]  # (3, size, size)
    # Fine-grained pixel noise: uniform bytes are the cheapest random numbers numpy makes (std 73.9 per byte).
    grain = np.frombuffer(rng.bytes(3 * size * size), dtype=np.uint8).reshape(3, size, size)
    offset = sky - np.float32(GRAIN * 127.5 / 73.9) + np.float32(0.5)  # +0.5: round, not truncate
    img = img + grain * np.float32(GRAIN / 73.9) + offset[:, None, None]
    return np.ascontiguousarray(np.clip(img, 0, 255, out=img).astype(np.uint8).transpose(1, 2, 0))
