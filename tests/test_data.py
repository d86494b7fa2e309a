"""GZ10 as a DatasetDict: h5 conversion, honest split, loaders, card, CLI and bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixtures.gz10 import real_coordinates, sample_rows, write_gz10_h5
from hfgal import GZ10_CLASSES, GZ10_DESCRIPTIONS
from hfgal.data.build import gz10_features
from hfgal.data.sources import gz10_from_h5, load_gz10
from hfgal.data.split import SPLITS, gz10_split
from hfgal.errors import HfgalError


def _split_of(dsd) -> dict[int, str]:
    return {int(i): s for s in SPLITS for i in dsd[s]["gz10_index"]}


def test_classes_exposed_once():
    assert GZ10_CLASSES[0] == "Disturbed" and GZ10_CLASSES[9] == "Edge-on with Bulge"
    assert len(GZ10_CLASSES) == 10 and set(GZ10_DESCRIPTIONS) == set(GZ10_CLASSES)


def test_h5_to_datasetdict(gz10_h5, gz10_h5_arrays, tmp_path):
    a = gz10_h5_arrays
    dsd = gz10_from_h5(gz10_h5, cache_dir=str(tmp_path / "cache"), chunk_size=16)
    assert list(dsd) == list(SPLITS)
    assert dsd["train"].features == gz10_features()
    assert dsd["train"].features["label"].names == list(GZ10_CLASSES)
    split_of = _split_of(dsd)
    # Disjoint and covering every row.
    assert sorted(split_of) == list(range(len(a["labels"])))
    assert sum(len(dsd[s]) for s in SPLITS) == len(a["labels"])
    # Per-class proportions within one image of the target.
    for s, frac in zip(SPLITS, (0.8, 0.1, 0.1), strict=True):
        counts = np.bincount(dsd[s]["label"], minlength=10)
        target = np.bincount(a["labels"], minlength=10) * frac
        assert np.all(np.abs(counts - target) <= 1.0 + 1e-9), (s, counts, target)
    # Every duplicate / near pair lands in one split.
    for i, j, _ in a["pairs"]:
        assert split_of[int(i)] == split_of[int(j)]
    assert dsd.info.duplicate_groups == len(a["pairs"])
    assert dsd.info.cross_split_pairs == 0
    # Pixels and columns identical to the h5.
    for s in SPLITS:
        for row in dsd[s].select(range(min(3, len(dsd[s])))):
            k = row["gz10_index"]
            assert np.array_equal(np.asarray(row["image"]), a["images"][k])
            assert row["label"] == a["labels"][k]
            assert row["ra"] == pytest.approx(a["ra"][k])
            assert (np.isnan(row["redshift"]) and np.isnan(a["redshift"][k])) or row["redshift"] == a["redshift"][k]


def test_split_deterministic_and_poster_scheme(gz10_h5_arrays):
    a = gz10_h5_arrays
    one = gz10_split(a["labels"], a["ra"], a["dec"], seed=3)
    two = gz10_split(a["labels"], a["ra"], a["dec"], seed=3)
    assert all(np.array_equal(one[s], two[s]) for s in SPLITS)
    # 30 galaxies in tight groups leave one way to split them; 300 leave room for the seed to matter.
    labels = np.repeat(np.arange(10), 30)
    assert not all(np.array_equal(gz10_split(labels, seed=3)[s], gz10_split(labels, seed=4)[s]) for s in SPLITS)
    poster = gz10_split(a["labels"], a["ra"], a["dec"], seed=3, scheme="poster")
    n = len(a["labels"])
    assert abs(len(poster["test"]) - 0.1 * n) <= 10 and len(poster["validation"]) > 0


def test_split_on_real_coordinates_keeps_the_59_duplicates_together():
    ra, dec = real_coordinates()
    labels = np.random.default_rng(0).integers(0, 10, len(ra))
    from hfgal.data.split import sky_groups, split_summary

    groups = sky_groups(ra, dec, 0.01)
    _, counts = np.unique(groups, return_counts=True)
    assert (counts > 1).sum() == 59  # the identical-coordinate pairs documented in the data README
    for scheme, expect_leak in (("default", False), ("poster", True)):
        idx = gz10_split(labels, ra, dec, scheme=scheme)
        split_of = np.empty(len(labels), dtype=int)
        for i, s in enumerate(SPLITS):
            split_of[idx[s]] = i
        info = split_summary(labels, split_of, ra, dec)
        assert (info["cross_split_pairs"] > 0) == expect_leak


def test_load_gz10_sources_share_features(sample_dir, gz10_h5, tmp_path):
    from_folder = load_gz10(str(sample_dir))
    from_h5 = load_gz10(str(gz10_h5))
    assert from_folder["train"].features == from_h5["train"].features == gz10_features()
    # The imagefolder sample loads with the labels of its metadata.csv.
    assert sum(len(from_folder[s]) for s in SPLITS) == len(sample_rows())
    assert set(from_folder["train"]["label"]) == set(range(10))
    # save_to_disk folder round trip: without a split_info.json, its three splits are taken as published.
    from_h5.splits.save_to_disk(str(tmp_path / "saved"))
    again = load_gz10(str(tmp_path / "saved"))
    assert [len(again[s]) for s in SPLITS] == [len(from_h5[s]) for s in SPLITS]
    assert again.info.scheme == "published" and again.info.counts == from_h5.info.counts


def test_imagefolder_labels_match_metadata(sample_dir):
    from PIL import Image

    dsd = load_gz10(str(sample_dir))
    truth = {}
    for r in sample_rows():
        pixels = np.asarray(Image.open(sample_dir / r["file_name"]).convert("RGB"))
        truth[pixels.tobytes()[:4096]] = int(r["label"])
    for s in SPLITS:
        for row in dsd[s].select(range(min(5, len(dsd[s])))):
            key = np.asarray(row["image"].convert("RGB")).tobytes()[:4096]
            assert truth[key] == row["label"]


def test_published_hub_layout_is_conformed():
    from datasets import Dataset, DatasetDict, Features, Image, Value

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(60)]
    labels = np.tile(np.arange(10), 6)
    feats = Features({"image": Image(), "label": Value("uint8")})
    hub_like = DatasetDict(
        {
            "train": Dataset.from_dict({"image": images[:50], "label": labels[:50]}, features=feats),
            "test": Dataset.from_dict({"image": images[50:], "label": labels[50:]}, features=feats),
        }
    )
    from hfgal.data.sources import conform_gz10

    dsd = conform_gz10(hub_like, seed=0, source="hub-like")
    assert list(dsd) == list(SPLITS)
    assert dsd["train"].features == gz10_features()
    assert len(dsd["validation"]) == 5 and len(dsd["train"]) == 45 and len(dsd["test"]) == 10
    # Stratified: no class loses more than one image to validation.
    assert np.bincount(dsd["validation"]["label"], minlength=10).max() == 1
    # The split is recorded as what it is: the published train/test, validation carved here, nothing grouped.
    info = dsd.info
    assert info.scheme == "hub-split" and info.seed == 0 and not info.grouped
    assert info.description.startswith("hub-split (no coordinates): the published train/test of hub-like")
    assert info.separation_arcsec is None and info.close_pairs is None
    assert info.counts["validation"] == np.bincount(dsd["validation"]["label"], minlength=10).tolist()


@pytest.mark.parametrize(
    "request_",
    [{"split_scheme": "default"}, {"split_scheme": "poster"}, {"separation_arcsec": 10.0}],
)
def test_hub_copy_refuses_a_split_it_cannot_honour(request_):
    # Refused before any download: the published copy has no coordinates and hfgal does not re-split it.
    with pytest.raises(HfgalError, match="comes already split .* cannot be honoured; leave it unset") as err:
        load_gz10("matthieulel/galaxy10_decals", **request_)
    assert "\n" not in str(err.value) and "zenodo" in str(err.value)


def test_saved_folder_keeps_the_split_it_was_built_with(gz10_h5, tmp_path):
    from hfgal.data.save import save_gz10

    built = gz10_from_h5(gz10_h5, cache_dir=str(tmp_path / "cache"))
    save_gz10(built, tmp_path / "gz10")
    written = json.loads((tmp_path / "gz10" / "split_info.json").read_text())
    assert written == json.loads(json.dumps(built.info.to_dict()))
    again = load_gz10(str(tmp_path / "gz10"), split_scheme="default", separation_arcsec=256 * 0.262)
    assert again.info == built.info  # as written to split_info.json
    assert again.info.scheme == "default" and again.info.description.startswith("hfgal's `default` split")
    assert written["split"] == again.info.description
    for request_ in ({"split_scheme": "poster"}, {"separation_arcsec": 10.0}):
        with pytest.raises(HfgalError, match="its 'default' split"):
            load_gz10(str(tmp_path / "gz10"), **request_)


def test_poster_scheme_refuses_a_linking_radius(gz10_h5):
    with pytest.raises(HfgalError, match="cannot be honoured by the 'poster' split scheme"):
        load_gz10(str(gz10_h5), split_scheme="poster", separation_arcsec=10.0)


@pytest.mark.parametrize(
    "request_, needle",
    [
        ({"split_scheme": "random"}, "split scheme 'random' is not valid; use default or poster, or leave it unset"),
        ({"separation_arcsec": -1.0}, "linking radius -1.0 arcsec is not valid; pass a distance >= 0"),
        ({"separation_arcsec": float("nan")}, "linking radius nan arcsec is not valid"),
    ],
)
def test_a_split_request_that_is_not_valid_is_refused_in_one_line(sample_dir, gz10_h5, request_, needle):
    # The same check wherever the request enters: load_gz10 (any source, before it is read) and gz10_from_h5.
    for load in (lambda: load_gz10(str(sample_dir), **request_), lambda: gz10_from_h5(gz10_h5, **request_)):
        with pytest.raises(HfgalError, match=re.escape(needle)) as err:
            load()
        assert "\n" not in str(err.value)


def test_split_info_travels_beside_the_splits(gz10_h5, tmp_path):
    """The split info is not an attribute of the splits, so `.map` / `.filter` on them cannot lose it."""
    import dataclasses

    gz10 = gz10_from_h5(gz10_h5, cache_dir=str(tmp_path / "cache"))
    assert not hasattr(gz10.splits, "split_info")
    with pytest.raises(dataclasses.FrozenInstanceError):
        gz10.info = None
    assert dict(gz10.items()) == dict(gz10.splits.items()) and len(gz10) == 3
    assert gz10.info.num_rows == sum(len(gz10[s]) for s in gz10)
    assert gz10.info.counts == {s: np.bincount(gz10[s]["label"], minlength=10).tolist() for s in SPLITS}


def test_real_sky_close_pairs_and_the_pairs_each_scheme_leaves_across_splits():
    """The numbers in the README's "GZ10 as a Hugging Face Dataset" section, on the real coordinates of all 17,736
    galaxies. The real labels are not in tests/data: the split uses the real class counts assigned to rows at random
    (seed 0); the pair counts themselves do not depend on labels."""
    from hfgal.constants import CROSS_SPLIT_RADII_ARCSEC, DEFAULT_SEPARATION_ARCSEC, GZ10_CLASS_COUNTS
    from hfgal.data.split import close_pairs, split_summary

    ra, dec = real_coordinates()
    assert DEFAULT_SEPARATION_ARCSEC == pytest.approx(67.072)  # the cutout width: 256 px x 0.262"
    assert [len(close_pairs(ra, dec, r)) for r in (0.01, 1.0, 10.0, DEFAULT_SEPARATION_ARCSEC)] == [59, 59, 126, 236]
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), GZ10_CLASS_COUNTS))
    crossing = {}
    for scheme, radius in (("default", DEFAULT_SEPARATION_ARCSEC), ("default", 10.0), ("poster", None)):
        kwargs = {} if radius is None else {"separation_arcsec": radius}
        idx = gz10_split(labels, ra, dec, seed=42, scheme=scheme, **kwargs)
        split_of = np.empty(len(labels), dtype=int)
        for i, s in enumerate(SPLITS):
            split_of[idx[s]] = i
        info = split_summary(labels, split_of, ra, dec)
        assert [r["within_arcsec"] for r in info["close_pairs"]] == [round(r, 3) for r in CROSS_SPLIT_RADII_ARCSEC]
        assert [r["pairs"] for r in info["close_pairs"]] == [59, 126, 236]
        crossing[scheme, radius] = [r["cross_split"] for r in info["close_pairs"]]
    assert crossing["default", DEFAULT_SEPARATION_ARCSEC] == [0, 0, 0]  # the default: nothing crosses
    assert crossing["default", 10.0] == [0, 0, 41]  # the old 10" radius: 41 overlapping pairs cross
    assert crossing["poster", None] == [23, 50, 86]  # random 81/9/10, like the published copy's split


@pytest.mark.slow
def test_cli_build_writes_dataset_and_card(gz10_h5, tmp_path):
    from datasets import load_from_disk
    from huggingface_hub import DatasetCard

    out = tmp_path / "gz10"
    proc = _hfgal("data", "build", "--h5", str(gz10_h5), "--out", str(out), "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    dsd = load_from_disk(str(out))
    assert list(dsd) == list(SPLITS)
    card = DatasetCard.load(out / "README.md")
    assert "Round Smooth" in card.text
    counts = np.bincount(dsd["test"]["label"], minlength=10)
    assert str(int(counts.sum())) in card.text
    assert (out / "split_info.json").is_file()
    # An existing --out is refused unless --overwrite.
    again = _hfgal("data", "build", "--h5", str(gz10_h5), "--out", str(out))
    assert again.returncode == 1 and "--overwrite" in again.stderr
    assert _hfgal("data", "build", "--h5", str(gz10_h5), "--out", str(out), "--overwrite").returncode == 0
    assert not list(tmp_path.glob(".gz10.tmp-*"))


def _hfgal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hfgal.cli", *args], capture_output=True, text=True, timeout=300)


def _bad_h5(tmp_path: Path, kind: str) -> Path:
    import h5py

    p = tmp_path / f"{kind}.h5"
    img = np.zeros((4, 32, 32, 3), np.uint8)
    lab = np.array([0, 1, 2, 3], np.uint8)
    coords = np.zeros(4)
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "not_hdf5":
        p.write_text("definitely not hdf5")
    elif kind == "missing_key":
        with h5py.File(p, "w") as f:
            f["images"] = img
            f["ans"] = lab
    elif kind == "bad_shape":
        write_gz10_h5(p, np.zeros((4, 32, 32), np.uint8)[..., None].repeat(4, -1), lab, coords, coords)
    elif kind == "bad_dtype":
        write_gz10_h5(p, img.astype(np.float32), lab, coords, coords)
    elif kind == "bad_label":
        write_gz10_h5(p, img, np.array([0, 1, 2, 12], np.uint8), coords, coords)
    elif kind == "lengths":
        write_gz10_h5(p, img, lab, np.zeros(3), coords)
    return p


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("missing", "no such file"),
        ("empty", "empty"),
        ("not_hdf5", "not an HDF5"),
        ("missing_key", "missing key"),
        ("bad_shape", "shape"),
        ("bad_dtype", "dtype"),
        ("bad_label", "outside the 10 GZ10 classes"),
        ("lengths", "align"),
    ],
)
@pytest.mark.slow
def test_bad_h5_input(tmp_path, kind, needle):
    path = tmp_path / "missing.h5" if kind == "missing" else _bad_h5(tmp_path, kind)
    with pytest.raises(HfgalError, match=needle):
        gz10_from_h5(path)
    out = tmp_path / "out"
    proc = _hfgal("data", "build", "--h5", str(path), "--out", str(out))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle.split()[0].lower() in lines[0].lower() and str(path.name) in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_bad_dataset_sources(tmp_path):
    with pytest.raises(HfgalError, match="does not exist"):
        load_gz10(str(tmp_path / "nowhere"))
    with pytest.raises(HfgalError, match="synthetic"):
        load_gz10("synthetic:abc")
