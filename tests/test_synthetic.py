"""Synthetic GZ10 galaxies: determinism by (seed, i), catalogue shape, physics of the classes, DatasetDict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hfgal.constants import GZ10_CLASS_COUNTS, GZ10_CLASSES, NUM_CLASSES
from hfgal.data.synthetic import render_galaxy, synthetic_catalog, synthetic_images
from hfgal.errors import HfgalError


@pytest.fixture(scope="module")
def catalog() -> dict[str, np.ndarray]:
    return synthetic_catalog(40, seed=3)


@pytest.fixture(scope="module")
def first_ten(catalog) -> np.ndarray:
    return synthetic_images(0, 10, catalog["label"], seed=3)


def _class_images(label: int, count: int, size: int = 256) -> np.ndarray:
    return np.stack([render_galaxy(label, np.random.default_rng([11, label, k]), size=size) for k in range(count)])


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_pixels(catalog, first_ten):
    again = synthetic_images(0, 10, catalog["label"], seed=3)
    assert again.shape == (10, 256, 256, 3) and again.dtype == np.uint8
    np.testing.assert_array_equal(again, first_ten)


def test_different_seed_gives_different_images(catalog, first_ten):
    other = synthetic_images(0, 10, catalog["label"], seed=4)
    # Every single image changes, not just a few pixels of some.
    assert all((other[i] != first_ten[i]).mean() > 0.5 for i in range(10))


def test_any_slice_renders_alone_and_out_of_order(catalog, first_ten):
    np.testing.assert_array_equal(synthetic_images(5, 10, catalog["label"], seed=3), first_ten[5:10])
    np.testing.assert_array_equal(synthetic_images(7, 8, catalog["label"], seed=3)[0], first_ten[7])
    # Image i is render_galaxy with the generator [seed, i]: the documented contract other processes rely on.
    np.testing.assert_array_equal(render_galaxy(int(catalog["label"][2]), np.random.default_rng([3, 2])), first_ten[2])
    assert synthetic_images(4, 4, catalog["label"], seed=3).shape == (0, 256, 256, 3)


def test_images_look_like_sky_with_a_bright_centre(first_ten):
    border = np.concatenate([first_ten[:, :16].reshape(-1, 3), first_ten[:, -16:].reshape(-1, 3)])
    sky = np.median(border, axis=0)
    assert np.all((25 <= sky) & (sky <= 45)), sky  # DECaLS cutouts sit at ~33 grey levels
    centre = first_ten[:, 112:144, 112:144].astype(float).mean(axis=(1, 2, 3))
    assert np.all(centre > sky.mean() + 15), centre


def test_render_galaxy_other_sizes_and_bad_input():
    for size in (64, 101):
        img = render_galaxy(2, np.random.default_rng(0), size=size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
    with pytest.raises(HfgalError, match="not a GZ10 class"):
        render_galaxy(10, np.random.default_rng(0))
    with pytest.raises(HfgalError, match="too small"):
        render_galaxy(0, np.random.default_rng(0), size=8)
    with pytest.raises(HfgalError, match="outside the catalogue"):
        synthetic_images(5, 50, np.zeros(10, dtype=np.uint8))


# --------------------------------------------------------------------------- catalogue


def test_catalog_columns(catalog):
    assert set(catalog) == {"label", "ra", "dec", "redshift", "pxscale"}
    assert all(len(v) == 40 for v in catalog.values())
    assert catalog["label"].dtype == np.uint8
    assert set(catalog["label"].tolist()) == set(range(NUM_CLASSES))  # every class, even the rare cigars
    assert np.all((0 <= catalog["ra"]) & (catalog["ra"] < 360))
    assert np.all((-20 <= catalog["dec"]) & (catalog["dec"] <= 30))
    z = catalog["redshift"]
    assert catalog["redshift"].dtype == np.float64 and np.isnan(z).any() and np.all(z[~np.isnan(z)] > 0)
    np.testing.assert_array_equal(catalog["pxscale"], np.full(40, 0.262))
    again = synthetic_catalog(40, seed=3)
    for key in catalog:
        np.testing.assert_array_equal(again[key], catalog[key])
    assert not np.array_equal(synthetic_catalog(40, seed=4)["label"], catalog["label"])


def test_catalog_proportions():
    full = synthetic_catalog(sum(GZ10_CLASS_COUNTS), seed=0)
    np.testing.assert_array_equal(np.bincount(full["label"], minlength=10), GZ10_CLASS_COUNTS)
    assert np.all(np.bincount(synthetic_catalog(55, proportions="balanced")["label"], minlength=10) >= 5)
    np.testing.assert_array_equal(np.bincount(synthetic_catalog(50, proportions="balanced")["label"]), [5] * 10)
    assert np.bincount(synthetic_catalog(10)["label"], minlength=10).tolist() == [1] * 10
    with pytest.raises(HfgalError, match="unknown proportions"):
        synthetic_catalog(20, proportions="uniform")
    with pytest.raises(HfgalError, match="n >= 1"):
        synthetic_catalog(0)


def test_catalog_redshift_is_the_one_each_image_is_drawn_at():
    cat = synthetic_catalog(60, seed=5)
    near = np.nanargmin(cat["redshift"])
    far = np.nanargmax(cat["redshift"])
    assert cat["redshift"][far] > 2 * cat["redshift"][near]
    # Same galaxy class at both distances: the far one must cover fewer bright pixels (smaller, dimmer).
    label = 2
    imgs = synthetic_images(0, 60, np.full(60, label, dtype=np.uint8), seed=5)
    bright = (imgs[:, 64:192, 64:192].astype(float).mean(axis=3) > 80).sum(axis=(1, 2))
    z = cat["redshift"]
    finite = ~np.isnan(z)
    assert np.corrcoef(z[finite], bright[finite])[0, 1] < -0.2


# --------------------------------------------------------------------------- physics of the classes


def _elongation(img: np.ndarray) -> float:
    """Major/minor axis ratio from the second moments of the central galaxy's light above the sky."""
    lum = img[64:192, 64:192].astype(np.float64).mean(axis=2)
    lum = np.clip(lum - np.median(img.mean(axis=2)) - 20, 0, None)  # only light well above the sky
    yy, xx = np.mgrid[:128, :128]
    w = lum / lum.sum()
    mx, my = (w * xx).sum(), (w * yy).sum()
    cov = np.array(
        [
            [(w * (xx - mx) ** 2).sum(), (w * (xx - mx) * (yy - my)).sum()],
            [(w * (xx - mx) * (yy - my)).sum(), (w * (yy - my) ** 2).sum()],
        ]
    )
    small, large = np.linalg.eigvalsh(cov)
    return float(np.sqrt(large / small))


def test_smooth_classes_order_by_axis_ratio():
    elongation = {c: np.median([_elongation(img) for img in _class_images(c, 8)]) for c in (2, 3, 4)}
    assert elongation[2] < elongation[3] < elongation[4], elongation
    assert elongation[2] < 1.5 and elongation[4] > elongation[2] + 0.5, elongation


def test_edge_on_discs_are_the_most_elongated():
    edge_on = np.median([_elongation(img) for img in _class_images(8, 8)])
    assert edge_on > 2.5 and edge_on > np.median([_elongation(img) for img in _class_images(3, 8)]) + 0.5, edge_on


def _blue_share(images: np.ndarray) -> float:
    """Share of galaxies whose light above the sky (central 64 px) is bluer than green: B/G > 1, RGB = z, r, g."""
    above = images[:, 96:160, 96:160].astype(np.float64) - np.median(images[:, :20].reshape(-1, 3), axis=0)
    return float(np.mean([a[..., 2].clip(0).sum() > a[..., 1].clip(0).sum() for a in above]))


def test_colour_is_a_hint_not_a_give_away():
    # Fitted to the real calibration half: a third of the smooth galaxies are blue, most disturbed and loose spirals.
    smooth = _blue_share(np.concatenate([_class_images(c, 8) for c in (2, 3, 4)]))
    star_forming = _blue_share(np.concatenate([_class_images(c, 8) for c in (0, 7)]))
    assert 0.1 <= smooth <= 0.65, smooth
    assert star_forming > smooth + 0.1, (star_forming, smooth)


# --------------------------------------------------------------------------- fitted to real cutouts


def _mad_sigma(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def test_sky_noise_is_mostly_common_to_the_three_channels():
    # Real cutouts: 10 grey levels of luminance noise, 11 per channel (JPEG's chroma subsampling shares it).
    strips = _class_images(2, 8)[:, :20].astype(np.float64)
    luminance = np.median([_mad_sigma(s.mean(axis=-1)) for s in strips])
    channel = np.median([np.mean([_mad_sigma(s[..., k]) for k in range(3)]) for s in strips])
    assert 7.0 < luminance < 13.0, luminance
    assert luminance / channel > 0.8, (luminance, channel)  # independent channels would give 0.58


def test_galaxy_cores_saturate_like_the_real_cutouts():
    # Real cores peak 177-214 grey levels above the sky (class medians), 1-4 % of their pixels at 250 or more.
    images = np.concatenate([_class_images(c, 3) for c in range(NUM_CLASSES)])
    lum = images[:, 96:160, 96:160].astype(np.float64).mean(axis=-1)
    peaks = lum.max(axis=(1, 2)) - np.median(images.astype(np.float64).mean(axis=-1), axis=(1, 2))
    assert np.median(peaks) > 170, peaks


def _half_light_radius(img: np.ndarray) -> float:
    """Radius around the image centre holding half the light above 3 sigma of the sky (within 96 px)."""
    lum = img.astype(np.float64).mean(axis=-1)
    lum -= np.median(lum)
    yy, xx = np.indices(lum.shape)
    r = np.hypot(xx - 127.5, yy - 127.5)
    keep = (r < 96) & (lum > 3 * _mad_sigma(lum[:20]))
    order = np.argsort(r[keep])
    cumulative = np.cumsum(lum[keep][order])
    return float(r[keep][order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def test_smooth_galaxies_are_compact_and_discs_extended():
    # Real half-light radii (calibration half, 256 px): smooth classes 16 px, barred spirals 32, edge-on discs 33.
    smooth = np.median([_half_light_radius(img) for c in (2, 3, 4) for img in _class_images(c, 8)])
    discs = np.median([_half_light_radius(img) for c in (5, 8) for img in _class_images(c, 8)])
    assert smooth < 0.75 * discs, (smooth, discs)


# --------------------------------------------------------------------------- DatasetDict


def test_gz10_synthetic_dataset(tmp_path):
    from datasets import ClassLabel

    from hfgal.data.synthetic import gz10_synthetic

    dsd = gz10_synthetic(n=60, seed=3, cache_dir=str(tmp_path))
    assert set(dsd) == {"train", "validation", "test"}
    assert sum(len(dsd[s]) for s in dsd) == 60 and all(len(dsd[s]) > 0 for s in dsd)
    feature = dsd["train"].features["label"]
    assert isinstance(feature, ClassLabel) and feature.names == list(GZ10_CLASSES)
    # Every class equally often by default: a model trained on it learns no class prior.
    counts = np.bincount([label for s in dsd for label in dsd[s]["label"]], minlength=NUM_CLASSES)
    assert counts.tolist() == [6] * NUM_CLASSES
    cat = synthetic_catalog(60, seed=3, proportions="balanced")
    row = dsd["test"][0]
    i = row["gz10_index"]
    assert row["label"] == cat["label"][i] and row["ra"] == cat["ra"][i]
    np.testing.assert_array_equal(
        np.asarray(row["image"].convert("RGB")), synthetic_images(i, i + 1, cat["label"], 3)[0]
    )
    # Another seed is another dataset, not a cache hit of the first.
    other = gz10_synthetic(n=60, seed=4, cache_dir=str(tmp_path))
    row = other["train"][0]
    j = row["gz10_index"]
    seed4 = synthetic_images(j, j + 1, synthetic_catalog(60, seed=4, proportions="balanced")["label"], 4)[0]
    np.testing.assert_array_equal(np.asarray(row["image"].convert("RGB")), seed4)


@pytest.mark.slow
def test_an_edited_renderer_is_never_served_from_a_cache(tmp_path):
    """The synthetic cache key is the renderer's source: an edit makes a new dataset and a new uint8 cache."""
    import shutil
    import subprocess
    import sys

    import hfgal
    from hfgal.data.cache import cache_file_name
    from hfgal.data.geometry import Geometry
    from hfgal.data.synthetic import gz10_synthetic, renderer_digest

    # A copy of the package whose renderer differs by one comment, imported in a fresh interpreter.
    copy = tmp_path / "edited"
    shutil.copytree(Path(hfgal.__file__).parent, copy / "hfgal", ignore=shutil.ignore_patterns("__pycache__"))
    galaxies = copy / "hfgal" / "data" / "synthetic" / "galaxies.py"
    galaxies.write_text(galaxies.read_text() + "\n# a tweak of the renderer\n")
    cache = str(tmp_path / "datasets")
    script = (
        "from hfgal.data.synthetic import gz10_synthetic, renderer_digest; "
        f"print(renderer_digest(), gz10_synthetic(n=30, seed=1, cache_dir={cache!r})['train']._fingerprint)"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=copy, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    edited_digest, edited_fingerprint = proc.stdout.split()
    assert edited_digest != renderer_digest()

    before = gz10_synthetic(n=30, seed=1, cache_dir=cache)["train"]
    assert before._fingerprint != edited_fingerprint
    geometry = Geometry(64)
    assert cache_file_name(before._fingerprint, geometry) != cache_file_name(edited_fingerprint, geometry)


# --------------------------------------------------------------------------- transfer to real galaxies

SAMPLE = Path(__file__).parent / "data" / "gz10-sample"
# Measured 15 of the 30 (docs/synthetic.md: 2-core AMD EPYC, torch 2.14.1, 2026-12-05); chance is 3 of 30. The
# threshold, 30 %, leaves room for other machines, torch versions and thread counts, whose training takes other
# numerical paths to another model: one image is 3.3 points, and the binomial spread alone is ~2.7 images.
OFFLINE_MIN_CORRECT = 9


@pytest.mark.slow
def test_the_offline_default_classifies_real_galaxies_it_never_saw(tmp_path, image_cache):
    """The shipped offline recipe (synthetic galaxies only; ~75 s of training on 2 cores) on the repository's 30 real
    galaxies: all of them are in the held-out scoring half that the renderer's priors were never fitted to
    (benchmarks/synthetic_calibration.py)."""
    import csv

    from fixtures.finetune import REPO_ROOT, run_finetune_main
    from hfgal.inference import load_classifier

    out = tmp_path / "offline"
    argv = ["--config", str(REPO_ROOT / "recipes" / "offline.yaml"), "--output_dir", str(out)]
    assert run_finetune_main([*argv, "--disable_tqdm", "true", "--report_to", "none"]) == 0
    with (SAMPLE / "metadata.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    proba = load_classifier(str(out), device="cpu").predict_proba([str(SAMPLE / r["file_name"]) for r in rows])
    correct = sum(int(p.argmax() == int(r["label"])) for p, r in zip(proba, rows, strict=True))
    assert correct >= OFFLINE_MIN_CORRECT, f"{correct} of {len(rows)} real galaxies"
