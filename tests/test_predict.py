"""`hfgal predict`: folders of mixed real images (JPEG, PNG, grey, RGBA, 16-bit, FITS) plus a corrupt file."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures.checkpoints import SAMPLE_DIR, sample_images, save_timm, save_vit
from hfgal.catalogue import probability_columns
from hfgal.cli import main
from hfgal.constants import GZ10_CLASSES
from hfgal.data.imageio import load_image
from hfgal.inference import load_classifier

pytestmark = pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="GZ10 sample images not available")
torch.set_num_threads(1)

COLUMNS = ["path", "ra", "dec", "label", "probability", *probability_columns(GZ10_CLASSES)]


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> Path:
    return save_vit(tmp_path_factory.mktemp("model") / "vit", seed=3)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> tuple[Path, list[Path], Path]:
    """Real sample galaxies written in every format `hfgal predict` meets, one corrupt file and a stray CSV."""
    root = tmp_path_factory.mktemp("mixed") / "galaxies"
    (root / "nested" / "deeper").mkdir(parents=True)
    src = [Image.open(p).convert("RGB") for p in sample_images(6)]
    good = []

    def keep(path: Path) -> None:
        good.append(path)

    src[0].save(root / "a.jpg", quality=90)
    keep(root / "a.jpg")
    src[1].save(root / "b.png")
    keep(root / "b.png")
    src[2].convert("L").save(root / "nested" / "grey.png")
    keep(root / "nested" / "grey.png")
    rgba = np.concatenate([np.asarray(src[3]), np.full((*src[3].size[::-1], 1), 200, np.uint8)], axis=2)
    Image.fromarray(rgba).save(root / "rgba.png")
    keep(root / "rgba.png")
    Image.fromarray(np.asarray(src[4].convert("L")).astype(np.uint16) * 257).save(root / "nested" / "deep16.png")
    keep(root / "nested" / "deep16.png")
    src[5].save(root / "nested" / "deeper" / "scan.TIFF")
    keep(root / "nested" / "deeper" / "scan.TIFF")
    try:
        from astropy.io import fits
    except ImportError:
        pass
    else:
        # A g, r, z cube in nanomaggy-like units, made from a real picture (rows south to north).
        rgb = np.asarray(src[0], dtype=np.float32) / 255.0
        cube = np.stack([rgb[::-1, :, 2] / 6.0, rgb[::-1, :, 1] / 3.4, rgb[::-1, :, 0] / 2.2])
        fits.PrimaryHDU(cube).writeto(root / "cutout.fits")
        keep(root / "cutout.fits")
    corrupt = root / "nested" / "broken.png"
    corrupt.write_bytes((root / "b.png").read_bytes()[:400])
    (root / "metadata.csv").write_text("file_name,label\n")
    (root / ".hidden.png").write_bytes(b"not even a png")
    return root, sorted(good), corrupt


def _read_csv(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == COLUMNS
    return list(reader)


def _check_rows(rows: list[dict[str, str]]) -> None:
    for row in rows:
        assert row["label"] in GZ10_CLASSES
        scores = [float(row[column]) for column in probability_columns(GZ10_CLASSES)]
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)  # one column per class, a distribution per galaxy
        assert GZ10_CLASSES[int(np.argmax(scores))] == row["label"] and float(row["probability"]) == max(scores)


def test_predict_folder_writes_csv_skips_corrupt_and_exits_1(vit_dir, mixed_folder, tmp_path, capsys):
    root, good, corrupt = mixed_folder
    out = tmp_path / "preds.csv"
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--model", str(vit_dir), str(root), "-o", str(out), "--batch-size", "2"])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # the CSV went to the file
    assert "could not be read" in captured.err and str(corrupt) in captured.err
    assert "Traceback" not in captured.err
    rows = _read_csv(out.read_text())
    assert [row["path"] for row in rows] == [str(p) for p in good]  # sorted, recursive, corrupt/CSV/hidden left out
    _check_rows(rows)
    # Same numbers as the library on the same files, at full precision.
    probs = load_classifier(vit_dir, device="cpu").predict_proba(good)
    for row, p in zip(rows, probs, strict=True):
        assert row["label"] == GZ10_CLASSES[int(p.argmax())]
        assert [float(row[c]) for c in probability_columns(GZ10_CLASSES)] == pytest.approx(p.tolist(), abs=1e-7)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".preds.csv")]  # no temp file left behind


def test_predict_files_to_stdout_with_tta(vit_dir, mixed_folder, capsys):
    root, good, _ = mixed_folder
    files = [str(p) for p in good[:3]]
    main(["predict", "--model", str(vit_dir), *files, "--tta"])  # returns: exit code 0
    captured = capsys.readouterr()
    rows = _read_csv(captured.out)
    assert [row["path"] for row in rows] == files
    _check_rows(rows)
    probs = load_classifier(vit_dir, device="cpu").predict_proba(files, tta=True)
    for row, p in zip(rows, probs, strict=True):
        assert float(row["probability"]) == pytest.approx(float(p.max()), abs=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--output", "preds.xlsx"], "unknown table format"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--device", "warp-drive"], "unknown device"),
    ],
)
def test_predict_bad_options_are_one_line_errors(vit_dir, mixed_folder, capsys, extra, message):
    root, good, _ = mixed_folder
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--model", str(vit_dir), str(good[0]), *extra])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("hfgal: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_predict_missing_inputs(vit_dir, tmp_path, capsys):
    cases = [
        (["--model", str(vit_dir), str(tmp_path / "nope.png")], "nope.png: no such file or folder"),
        (["--model", str(tmp_path / "no_model"), str(SAMPLE_DIR / "0_0.png")], "no such model folder"),
    ]
    (tmp_path / "empty").mkdir()
    cases.append((["--model", str(vit_dir), str(tmp_path / "empty")], "no images found"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", *argv])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("hfgal: error: ") and message in err


def test_predict_writes_a_parquet_catalogue_that_reads_back(vit_dir, tmp_path):
    import pyarrow.parquet as pq

    files = [str(p) for p in sample_images(4)]
    main(["predict", "--model", str(vit_dir), *files, "-o", str(tmp_path / "preds.parquet")])
    table = pq.read_table(tmp_path / "preds.parquet").to_pydict()
    assert list(table) == COLUMNS and table["path"] == files
    probs = np.array([table[c] for c in probability_columns(GZ10_CLASSES)]).T
    np.testing.assert_allclose(probs, load_classifier(vit_dir, device="cpu").predict_proba(files), atol=1e-7)


@pytest.mark.slow
def test_predict_console_script_exit_codes(vit_dir, mixed_folder, tmp_path):
    root, good, corrupt = mixed_folder
    out = tmp_path / "sub" / "preds.csv"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "hfgal.cli", "predict", "--model", str(vit_dir), "--device", "cpu"]
    proc = subprocess.run([*cmd, str(root), "-o", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert str(corrupt) in proc.stderr and "Traceback" not in proc.stderr
    assert len(_read_csv(out.read_text())) == len(good)


# --------------------------------------------------------------------------- catalogue-grade output


def _wcs_cutout(path: Path, picture: Image.Image, ctype: tuple[str, str], centre: tuple[float, float]) -> Path:
    """A g, r, z cube from a real picture with a TAN WCS whose reference pixel is the image centre."""
    from astropy.io import fits
    from astropy.wcs import WCS

    rgb = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    cube = np.stack([rgb[::-1, :, 2] / 6.0, rgb[::-1, :, 1] / 3.4, rgb[::-1, :, 0] / 2.2])
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = list(ctype)
    wcs.wcs.crval = list(centre)
    wcs.wcs.crpix = [(cube.shape[2] + 1) / 2, (cube.shape[1] + 1) / 2]  # 1-based: the centre of the image
    wcs.wcs.cdelt = [-0.262 / 3600, 0.262 / 3600]  # DECaLS pixels
    header = wcs.to_header()
    header["BANDS"] = "grz"
    fits.PrimaryHDU(cube, header=header).writeto(path)
    return path


@pytest.fixture(scope="module")
def sky_folder(tmp_path_factory) -> tuple[Path, dict[str, tuple[float, float] | None]]:
    """The whole real sample (30 PNGs) and FITS cutouts of three of its galaxies: equatorial and galactic WCS,
    and none. Maps each FITS file name to the ICRS centre it must get."""
    pytest.importorskip("astropy")
    from astropy.coordinates import SkyCoord

    root = tmp_path_factory.mktemp("sky") / "catalogue"
    shutil.copytree(SAMPLE_DIR, root, ignore=shutil.ignore_patterns("*.csv", "*.md"))
    pictures = [Image.open(p) for p in sample_images(3)]
    _wcs_cutout(root / "equatorial.fits", pictures[0], ("RA---TAN", "DEC--TAN"), (150.1172, 2.2054))
    _wcs_cutout(root / "galactic.fits", pictures[1], ("GLON-TAN", "GLAT-TAN"), (236.83, 42.12))
    from astropy.io import fits

    fits.PrimaryHDU(np.stack([np.asarray(pictures[2].convert("L"), np.float32) / 255] * 3)).writeto(
        root / "no-wcs.fits"
    )
    galactic = SkyCoord(l=236.83, b=42.12, unit="deg", frame="galactic").icrs
    return root, {
        "equatorial.fits": (150.1172, 2.2054),
        "galactic.fits": (galactic.ra.deg, galactic.dec.deg),
        "no-wcs.fits": None,
    }


def _check_sky(paths: list[str], ra: list, dec: list, expected: dict) -> None:
    for path, r, d in zip(paths, ra, dec, strict=True):
        centre = expected.get(Path(path).name)
        if centre is None:  # a PNG, or a FITS file without WCS
            assert r is None or np.isnan(r), path
            assert d is None or np.isnan(d), path
        else:
            assert (r, d) == pytest.approx(centre, abs=1e-9), path


def test_predict_the_real_sample_to_parquet_with_sky_positions(vit_dir, sky_folder, tmp_path):
    import pyarrow.parquet as pq

    root, expected = sky_folder
    out = tmp_path / "catalogue.parquet"
    main(["predict", "--model", str(vit_dir), str(root), "-o", str(out), "--batch-size", "8"])
    table = pq.read_table(out)
    assert table.column_names == COLUMNS and table.num_rows == 33
    assert str(table.schema.field("ra").type) == "double"
    data = table.to_pydict()
    probs = np.array([data[c] for c in probability_columns(GZ10_CLASSES)]).T  # 10 probability columns
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert data["label"] == [GZ10_CLASSES[i] for i in probs.argmax(1)]
    _check_sky(data["path"], data["ra"], data["dec"], expected)
    assert sum(v is not None for v in data["ra"]) == 2


def test_predict_writes_a_fits_table_with_embeddings(vit_dir, sky_folder, tmp_path):
    from astropy.table import Table

    root, expected = sky_folder
    files = sorted(str(p) for p in root.glob("*.fits")) + [str(p) for p in sample_images(3)]
    out = tmp_path / "catalogue.fits"
    main(["predict", "--model", str(vit_dir), *files, "-o", str(out), "--embeddings"])
    table = Table.read(out, character_as_bytes=False)
    assert table.colnames == [*COLUMNS, "embedding"] and len(table) == len(files)
    assert [str(p) for p in table["path"]] == files
    _check_sky(files, list(table["ra"].filled(np.nan)), list(table["dec"].filled(np.nan)), expected)
    classifier = load_classifier(vit_dir, device="cpu")
    embeddings = classifier.embed(files)
    assert table["embedding"].shape == (len(files), classifier.model.config.hidden_size)
    np.testing.assert_allclose(np.asarray(table["embedding"]), embeddings, rtol=1e-6, atol=1e-6)
    probs = np.array([table[c] for c in probability_columns(GZ10_CLASSES)]).T
    np.testing.assert_allclose(probs, classifier.predict_proba(files), atol=1e-7)


@pytest.mark.parametrize("maker", [save_vit, save_timm])
def test_embeddings_are_what_the_head_reads(maker, tmp_path):
    """softmax(head(embedding)) is the catalogue's probabilities: the pooled features are the classifier's own."""
    model_dir = maker(tmp_path / "model")
    files = [str(p) for p in sample_images(4)]
    out = tmp_path / "with-embeddings.csv"
    main(["predict", "--model", str(model_dir), *files, "-o", str(out), "--embeddings", "--batch-size", "4"])
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    classifier = load_classifier(model_dir, device="cpu")
    width = len([c for c in rows[0] if c.startswith("embedding_")])
    embeddings = np.array([[float(r[f"embedding_{i}"]) for i in range(width)] for r in rows], dtype=np.float32)
    with torch.no_grad():
        logits = classifier.head()(torch.from_numpy(embeddings))
    probs = np.array([[float(r[c]) for c in probability_columns(GZ10_CLASSES)] for r in rows])
    np.testing.assert_allclose(logits.softmax(-1).numpy(), probs, atol=1e-5)
    timm_model = getattr(classifier.model, "timm_model", None)
    if timm_model is not None:  # timm's own pre-logits features
        with torch.no_grad():
            x = classifier.preprocess(files)
            pre = timm_model.forward_head(timm_model.forward_features(x), pre_logits=True)
        np.testing.assert_allclose(pre.numpy(), embeddings, rtol=1e-5, atol=1e-4)


def test_predict_embeddings_with_tta_average_the_views(vit_dir):
    classifier = load_classifier(vit_dir, device="cpu")
    # Pictures at the model's input size, so that rotating them commutes with the processor's resize.
    pictures = [np.asarray(load_image(f).resize((32, 32))) for f in sample_images(2)]
    probs, embeddings = classifier.predict_and_embed(pictures, tta=True)
    np.testing.assert_allclose(probs, classifier.predict_proba(pictures, tta=True), atol=1e-7)
    # The 8 rotations and reflections of each picture, embedded one by one and averaged.
    views = [[np.rot90(p if k < 4 else p[:, ::-1], k % 4).copy() for p in pictures] for k in range(8)]
    mean = np.mean([classifier.embed(view) for view in views], axis=0)
    np.testing.assert_allclose(embeddings, mean, atol=1e-5)
    assert not np.allclose(embeddings, classifier.embed(pictures), atol=1e-3)  # ViT is not rotation invariant
