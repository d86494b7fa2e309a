"""The ten GZ10 morphologies drawn from the light profiles of `hfgal.data.synthetic.light`, with priors fitted to real
cutouts, then exposed like a DECaLS colour cutout by `hfgal.data.synthetic.camera`.

Classes follow the morphology of the Galaxy10 DECaLS decision tree and overlap a little on purpose (smooth classes
differ only by axis ratio, tight and loose spirals only by pitch angle), so they are learnable but not a give-away.
"""

from __future__ import annotations

import math

import numpy as np

from ...constants import GZ10_IMAGE_SIZE, NUM_CLASSES
from ...errors import HfgalError
from .camera import expose
from .light import (
    BRIGHT,
    DISC,
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
)

# --------------------------------------------------------------------------- priors
# Fitted to the calibration half of the real sample with `benchmarks/synthetic_calibration.py`: each range below
# moves the renderer's per-class median of the statistic named beside it (same measurement on real and synthetic
# cutouts, 256 px) to the real one. Lengths in pixels of the 256-pixel image, before the redshift size factor.

# Angular size ~ distance^-slope, flattened from 1 because GZ10 selects galaxies big enough to classify: the spread
# of log r50 within a class is ~0.3 in the real sample (IQR / 1.35, median over classes).
SIZE_REDSHIFT_SLOPE = 0.25

# Smooth classes (2, 3, 4) differ by axis ratio and overlap at the edges like volunteer votes (axis_ratio: real
# 0.94 / 0.59 / 0.46), all small and compact (r50: real 16 px; peak luminance ~205 above the sky).
SMOOTH_Q = {2: (0.76, 1.0), 3: (0.38, 0.74), 4: (0.22, 0.5)}
SMOOTH_RE = (2.3, 3.85)
SMOOTH_AMP = (7.0, 16.0)
SMOOTH_SERSIC_N = (1.0, 3.0)  # concentration r90/r50: real 1.74 / 2.09 / 2.0; sb_outer 50 / 33 / 32
# Spirals: disc inclination (cos i; axis_ratio: real 0.77 / 0.86 / 0.60), disc scale length (r50: real 32 / 24 /
# 25 px) and arm contrast (clumpiness 0.12 / 0.11 / 0.13); tight and loose spirals differ by pitch angle.
SPIRAL_COSI = {5: (0.5, 1.0), 6: (0.6, 1.0), 7: (0.35, 0.95)}
SPIRAL_H = {5: (6.7, 11.4), 6: (4.7, 7.9), 7: (5.3, 9.1)}
SPIRAL_ARMS = {5: (0.25, 0.6), 6: (0.2, 0.5), 7: (0.35, 0.75)}
SPIRAL_DISC_AMP = (6.5, 13.0)  # sb_outer (median luminance between r50 and r90): real 48 / 41 / 35
# Edge-on discs: scale length (r50: real 33 / 23 px) and thickness (axis_ratio: real 0.24 / 0.35).
EDGE_H = {8: (8.8, 15.0), 9: (5.4, 9.2)}
EDGE_THICKNESS = {8: (0.09, 0.2), 9: (0.14, 0.28)}
EDGE_DISC_AMP = (1.8, 3.6)  # sb_outer: real 37 / 27
# Disturbed: lopsided, clumpy, mostly blue discs (r50: real 27 px, axis_ratio 0.54, asymmetry 0.16, B/G 1.07).
DISTURBED_H = (6.4, 10.9)
DISTURBED_COSI = (0.3, 0.9)
# Bars: amplitude against the disc (m2: real 0.09 in barred spirals, 0.05 in unbarred tight ones).
BAR_AMP = (0.6, 1.5)
# Mergers: pair separation (r50: real 32 px, r90 71 px; asymmetry 0.35).
MERGER_SEPARATION = (14.0, 40.0)
# Share of blue galaxies (B/G of the light above the sky > 1) per class; real, 5-6 galaxies each: 0.83, 0.4, 0.33,
# 0.2, 0.33, 0.5, 0.33, 0.83, 0.6, 0.17, pooled over alike classes. A third of the smooth galaxies are blue: colour
# is a hint, never a give-away.
BLUE_FRACTION = (0.9, 0.5, 0.35, 0.35, 0.35, 0.6, 0.55, 0.9, 0.7, 0.3)


# --------------------------------------------------------------------------- classes


def draw_redshift(rng: np.random.Generator) -> float:
    """The first draw of every galaxy: its redshift (GZ10 galaxies sit mostly at 0.02 < z < 0.15)."""
    return float(np.clip(math.exp(rng.normal(math.log(0.06), 0.45)), 0.005, 0.3))


def _population(rng: np.random.Generator, label: int) -> np.ndarray:
    """Colour of a galaxy's dominant stars: young and blue with the class' `BLUE_FRACTION`, else old and red."""
    if rng.random() < BLUE_FRACTION[label]:
        return jitter(mix(DISC, YOUNG, rng.uniform(0.0, 0.7)), rng)
    return jitter(mix(OLD, DISC, rng.uniform(0.0, 0.3)), rng)


def _smooth_galaxy(cv, label, g) -> None:
    rng = cv.rng
    q = rng.uniform(*SMOOTH_Q[label])
    n = rng.uniform(1.0, 3.0) if label == 4 else rng.uniform(*SMOOTH_SERSIC_N)
    re = rng.uniform(*SMOOTH_RE) * g["size"] / math.sqrt(q)
    colour = _population(rng, label)
    add_smooth(cv, g["x0"], g["y0"], re, n, q, g["pa"], g["amp"] * rng.uniform(*SMOOTH_AMP), colour)
    if rng.random() < 0.6:  # faint extended envelope
        add_smooth(
            cv, g["x0"], g["y0"], re * rng.uniform(2.0, 3.5), 1.0, min(1.0, q * rng.uniform(1.0, 1.2)), g["pa"],
            g["amp"] * rng.uniform(0.05, 0.2), mix(colour, DISC, 0.3),
        )  # fmt: skip


def _spiral_galaxy(cv, label, g) -> None:
    rng = cv.rng
    # The Hubble sequence: tighter arms come with bigger bulges and smoother, weaker arms.
    if label == 6:
        pitch, arms, bt = rng.uniform(9.0, 20.0), rng.choice([2, 2, 2, 3]), rng.uniform(0.2, 0.5)
    elif label == 7:
        pitch, arms, bt = rng.uniform(17.0, 38.0), rng.choice([2, 2, 3, 4]), rng.uniform(0.05, 0.3)
    else:
        pitch, arms, bt = rng.uniform(10.0, 30.0), 2, rng.uniform(0.1, 0.4)
    h = rng.uniform(*SPIRAL_H[label]) * g["size"]
    add_disc(
        cv,
        x0=g["x0"],
        y0=g["y0"],
        h=h,
        cosi=rng.uniform(*SPIRAL_COSI[label]),
        pa=g["pa"],
        amp=g["amp"] * rng.uniform(*SPIRAL_DISC_AMP),
        colour=_population(rng, label),
        arms=int(arms),
        pitch_deg=pitch,
        arm_strength=rng.uniform(*SPIRAL_ARMS[label]),
        bar_length=rng.uniform(0.9, 1.7) * h if label == 5 else 0.0,
        bar_amp=rng.uniform(*BAR_AMP) if label == 5 else 0.0,
        clumpy=rng.uniform(0.2, 0.7),
        lopsided=rng.uniform(0.0, 0.25),
    )
    add_smooth(
        cv, g["x0"], g["y0"], rng.uniform(0.15, 0.35) * h, rng.uniform(1.5, 4.0), rng.uniform(0.75, 1.0), g["pa"],
        g["amp"] * bt * rng.uniform(40.0, 80.0), jitter(OLD, rng),
    )  # fmt: skip


def _edge_on_galaxy(cv, label, g) -> None:
    rng = cv.rng
    h = rng.uniform(*EDGE_H[label]) * g["size"]
    thin = rng.uniform(*EDGE_THICKNESS[label])
    u, v = cv.frame(g["x0"], g["y0"], g["pa"])
    # An integral-sign warp bends the outer disc: real edge-on discs are rarely straight (asymmetry: real 0.14).
    warp = rng.normal(0.0, 0.015) / (h * cv.scale)
    v = v - np.float32(warp) * np.sign(u) * np.maximum(np.abs(u) - np.float32(h * cv.scale), 0) ** 2
    # A thin disc plus a shorter, thicker, redder inner disc: the colour gradient of real edge-on discs.
    # One side brighter than the other: dust, star formation and warps are never symmetric.
    lopsided = 1.0 + np.float32(rng.uniform(-0.4, 0.4)) * u / (np.abs(u) + np.float32(h * cv.scale))
    disc = sersic(u, v, 1.68 * h * cv.scale, rng.uniform(0.7, 1.1), thin) * lopsided
    colour = _population(rng, label)
    cv.add(disc, colour, g["amp"] * rng.uniform(*EDGE_DISC_AMP))
    inner = sersic(u, v, 0.9 * h * cv.scale, 1.0, thin * 1.4)
    cv.add(inner, mix(colour, OLD, 0.6), g["amp"] * rng.uniform(*EDGE_DISC_AMP))
    if label == 9:
        re_b = rng.uniform(0.25, 0.5) * h
        bulge = sersic(u, v, re_b * cv.scale, rng.uniform(1.5, 4.0), rng.uniform(0.55, 0.95))
        cv.add(bulge, jitter(OLD, rng), g["amp"] * rng.uniform(6.0, 15.0))
    elif rng.random() < 0.3:  # at most a faint nucleus
        nucleus = sersic(u, v, 1.2 * cv.scale, 1.0, 0.8)
        cv.add(nucleus, jitter(OLD, rng), g["amp"] * rng.uniform(0.5, 1.5))
    if rng.random() < (0.5 if label == 9 else 0.25):  # a dust lane, off the midplane when not exactly edge-on
        offset = np.float32(rng.normal(0.0, 0.3) * thin * h * cv.scale)
        width = np.float32((0.5 + thin * h * cv.scale * 0.3) ** 2)
        cv.flux *= 1.0 - rng.uniform(0.3, 0.7) * np.exp(-((v - offset) ** 2) / width)


def _component(cv, rng, x0, y0, size, amp) -> float:
    """One galaxy of a merger: an elliptical or a disc. Returns its size (ref pixels)."""
    colour = _population(rng, 1)
    if rng.random() < 0.5:
        re = rng.uniform(2.5, 6.0) * size
        add_smooth(cv, x0, y0, re, rng.uniform(1.5, 4.0), rng.uniform(0.5, 1.0), rng.uniform(0, math.pi),
                    amp * rng.uniform(2.0, 5.0), colour)  # fmt: skip
        return re
    h = rng.uniform(3.0, 7.0) * size
    add_disc(cv, x0=x0, y0=y0, h=h, cosi=rng.uniform(0.3, 1.0), pa=rng.uniform(0, math.pi),
              amp=amp * rng.uniform(2.0, 4.0), colour=colour, lopsided=rng.uniform(0.2, 0.8))  # fmt: skip
    add_smooth(cv, x0, y0, 0.3 * h, 2.5, 0.9, 0.0, amp * rng.uniform(8.0, 20.0), jitter(OLD, rng))
    return h * 1.6


def _merging_galaxy(cv, g) -> None:
    rng = cv.rng
    sep = rng.uniform(*MERGER_SEPARATION) * g["size"]
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
    # Tidal light: a diffuse bridge and curved, fanning tails, faint next to the two bodies.
    tidal = mix(DISC, OLD, rng.uniform(0, 0.6))
    if rng.random() < 0.6:
        add_stream(cv, ax, ay, angle, sep, rng.normal(0, 0.2), rng.uniform(4.0, 9.0) * g["size"],
                    g["amp"] * rng.uniform(0.2, 0.6), tidal)  # fmt: skip
    for _ in range(rng.integers(0, 3)):
        start = (ax, ay) if rng.random() < 0.5 else (bx, by)
        bend = rng.choice([-1, 1]) * rng.uniform(0.3, 1.0)
        add_stream(
            cv, *start, rng.uniform(0, 2 * math.pi), rng.uniform(1.2, 2.5) * sep, bend,
            rng.uniform(4.0, 9.0) * g["size"], g["amp"] * rng.uniform(0.15, 0.5), tidal,
        )  # fmt: skip


def _disturbed_galaxy(cv, g) -> None:
    rng = cv.rng
    h = rng.uniform(*DISTURBED_H) * g["size"]
    # Mostly blue (star formation triggered by the disturbance), but old, red disturbed systems exist too.
    colour = _population(rng, 0)
    add_disc(
        cv,
        x0=g["x0"],
        y0=g["y0"],
        h=h,
        cosi=rng.uniform(*DISTURBED_COSI),
        pa=g["pa"],
        amp=g["amp"] * rng.uniform(3.0, 6.0),
        colour=colour,
        arms=int(rng.choice([0, 0, 1, 2])),
        pitch_deg=rng.uniform(15.0, 40.0),
        arm_strength=rng.uniform(0.2, 0.6),
        clumpy=rng.uniform(0.3, 0.9),
        lopsided=rng.uniform(0.3, 0.9),
    )
    if rng.random() < 0.25:  # irregular, clumpy light: the galaxy's own structure, not a companion
        u, v = cv.frame(g["x0"], g["y0"], g["pa"])
        body = sersic(u, v, 1.68 * h * cv.scale, rng.uniform(0.6, 1.2), rng.uniform(0.3, 0.9))
        body *= smooth_field(cv, rng.uniform(2.0, 5.0) * cv.scale * 2, rng.uniform(0.3, 0.9))
        cv.add(body, colour, g["amp"] * rng.uniform(1.0, 3.0))
    if rng.random() < 0.5:  # a faint tail or plume
        bend = rng.choice([-1, 1]) * rng.uniform(0.2, 0.8)
        add_stream(cv, g["x0"], g["y0"], rng.uniform(0, 2 * math.pi), h * rng.uniform(3.0, 6.0), bend,
                    h * rng.uniform(0.5, 1.0), g["amp"] * rng.uniform(0.2, 0.6), jitter(colour, rng))  # fmt: skip
    if rng.random() < 0.8:  # a compact, redder nucleus
        add_smooth(cv, g["x0"], g["y0"], h * 0.25, 2.5, 0.9, 0.0, g["amp"] * rng.uniform(5.0, 15.0),
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
        "size": SIZE * float(np.clip((0.06 / z) ** SIZE_REDSHIFT_SLOPE, 0.7, 1.45)) * math.exp(rng.normal(0.0, 0.1)),
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

    return expose(cv, rng, size)
