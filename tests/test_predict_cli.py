"""`hfgal predict`: folders of mixed real images (JPEG, PNG, grey, RGBA, 16-bit, FITS) plus a corrupt file."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures.checkpoints import SAMPLE_DIR, sample_images, save_vit
from hfgal.catalogue import probability_columns
from hfgal.cli import main
from hfgal.constants import GZ10_CLASSES
from hfgal.inference import load_classifier

pytestmark = pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="GZ10 sample images not available")
torch.set_num_threads(1)

COLUMNS = ["path", "label", "probability", *probability_columns(GZ10_CLASSES)]


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
