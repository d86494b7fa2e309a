"""`hfgal evaluate`: a saved model scored the way a training run scores it, its calibration (ECE, reliability
diagram), and a temperature fitted on validation that load_classifier, hfgal predict, the Space and the card use."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures.checkpoints import SAMPLE_DIR, save_vit
from fixtures.runs import make_run_dir
from hfgal.catalogue import probability_columns
from hfgal.cli import main
from hfgal.constants import GZ10_CLASSES
from hfgal.errors import HfgalError
from hfgal.runs import Calibration, CalibrationScores, read_calibration, read_evaluation, read_results
from hfgal.train.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    temper,
)

pytestmark = pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="GZ10 sample images not available")
torch.set_num_threads(1)
ATOL = 2e-5  # float32 logits through the same pixels by another path (PIL files vs the uint8 cache)


def _rows(path: Path, split: str | None = None) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if split is None or r["split"] == split]


def _probabilities(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([[float(r[c]) for c in probability_columns(GZ10_CLASSES)] for r in rows])


def _labels(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([GZ10_CLASSES.index(r["label"]) for r in rows])


@pytest.fixture()
def run(trained_run, tmp_path) -> Path:
    """A copy of the session's real finished run (evaluation writes into it), without its checkpoints."""
    return Path(shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoint-*")))


# --------------------------------------------------------------------------- calibration arithmetic


def _one_hot_rows(confidences: list[float], top: list[int]) -> np.ndarray:
    rows = np.zeros((len(confidences), 10))
    for i, (c, k) in enumerate(zip(confidences, top, strict=True)):
        rows[i] = (1 - c) / 9
        rows[i, k] = c
    return rows


def test_ece_by_hand():
    # Confidences 0.9, 0.9 (one right, one wrong), 0.7 (right), 0.35 (right), away from the 1/15 bin edges:
    # ECE = 2/4 * |0.5 - 0.9| + 1/4 * |1 - 0.7| + 1/4 * |1 - 0.35| = 0.2 + 0.075 + 0.1625.
    probs = _one_hot_rows([0.9, 0.9, 0.7, 0.35], [0, 1, 2, 3])
    labels = np.array([0, 5, 2, 3])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4375, abs=1e-12)
    bins = reliability_bins(probs, labels)
    assert len(bins) == 15 and sum(b.count for b in bins) == 4
    filled = [(b.count, b.accuracy) for b in bins if b.count]
    assert filled == [(1, 1.0), (1, 1.0), (2, 0.5)]
    assert bins[13].lower == pytest.approx(13 / 15) and bins[13].confidence == pytest.approx(0.9)
    # A confidence exactly on an edge falls in the bin it closes, (m-1)/M < c <= m/M.
    assert [b.count for b in reliability_bins(_one_hot_rows([1.0], [0]), np.array([0]))][-1] == 1


def test_temperature_scaling_recovers_a_known_over_confidence():
    """Labels drawn from softmax(z): probabilities softmax(2 z) are over-confident by exactly T = 2."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, size=(20000, 10))
    truth = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(10, p=p) for p in truth])
    confident = np.exp(2 * logits) / np.exp(2 * logits).sum(1, keepdims=True)
    assert expected_calibration_error(truth, labels) < 0.03  # calibrated, up to sampling noise
    assert expected_calibration_error(confident, labels) > 0.1
    t = fit_temperature(confident, labels)
    assert t == pytest.approx(2.0, abs=0.1)
    tempered = temper(confident, t)
    np.testing.assert_allclose(tempered.sum(1), 1.0, atol=1e-12)
    assert (tempered.argmax(1) == confident.argmax(1)).all()  # no predicted class changes
    assert expected_calibration_error(tempered, labels) < 0.03
    for other in (t * 1.05, t / 1.05):  # the fitted T is the NLL minimum
        assert negative_log_likelihood(tempered, labels) < negative_log_likelihood(temper(confident, other), labels)


def test_fit_temperature_refuses_a_split_it_cannot_fit():
    with pytest.raises(HfgalError, match="cannot fit a temperature"):
        fit_temperature(_one_hot_rows([0.9, 0.8], [0, 0]), np.array([0, 0]))


# --------------------------------------------------------------------------- hfgal evaluate on a real run


def test_evaluate_reproduces_the_runs_evaluation_exactly(run, capsys):
    main(["evaluate", "--model", str(run), "--device", "cpu"])
    err = capsys.readouterr().err
    record, results = read_evaluation(run / "evaluation-test"), read_results(run)
    # The same data, pixels, normalisation, Trainer and metrics: the whole metrics block is the run's own.
    assert record.metrics == results.test
    assert record.run_accuracy == results.test.accuracy and "reproduced exactly" in err
    assert record.split == "test" and record.tta is False and record.temperature is None
    # ... down to every probability of every test galaxy, at full precision.
    evaluated = _rows(run / "evaluation-test" / "predictions.csv")
    assert evaluated == _rows(run / "predictions.csv", "test")
    probs, labels = _probabilities(evaluated), _labels(evaluated)
    assert record.ece == pytest.approx(expected_calibration_error(probs, labels), abs=1e-12)
    assert 0.0 <= record.ece <= 1.0 and f"ECE {100 * record.ece:.2f} %" in err
    assert sum(b.count for b in record.reliability) == record.metrics.num_examples
    for name in ("confusion_matrix.png", "reliability_diagram.png"):
        with Image.open(run / "evaluation-test" / name) as image:
            assert image.format == "PNG" and image.width > 400
    assert not (run / "calibration.json").exists()  # nothing is fitted unless asked


def test_evaluate_validation_and_a_chosen_output(run, tmp_path):
    out = tmp_path / "elsewhere"
    main(["evaluate", "--model", str(run), "--split", "validation", "--output", str(out), "--device", "cpu"])
    record = read_evaluation(out)
    assert record.metrics == read_results(run).validation and record.split == "validation"
    assert _rows(out / "predictions.csv") == _rows(run / "predictions.csv", "validation")


def test_calibrate_fits_on_validation_and_every_consumer_applies_it(run, tmp_path, capsys):
    from hfgal.demo.app import GalaxyDemo
    from hfgal.inference import load_classifier

    main(["evaluate", "--model", str(run), "--calibrate", "--device", "cpu"])
    err = capsys.readouterr().err
    calibration = read_calibration(run)
    validation = _rows(run / "predictions.csv", "validation")
    expected_t = fit_temperature(_probabilities(validation), _labels(validation))
    assert calibration.temperature == pytest.approx(expected_t, rel=1e-9) and calibration.fitted_on == "validation"
    assert calibration.validation.num_examples == len(validation) and calibration.test is not None
    assert f"T = {calibration.temperature:.4f} fitted on {len(validation)} validation images" in err
    record = read_evaluation(run / "evaluation-test")
    assert record.temperature == calibration.temperature and record.metrics == read_results(run).test
    assert record.ece_calibrated == pytest.approx(calibration.test.ece_after, abs=1e-12)

    # load_classifier applies it by default; calibrated=False gives what the run itself evaluated.
    test = _rows(run / "predictions.csv", "test")
    images = [tmp_path / f"test-{i}.png" for i in range(len(test))]
    from hfgal.data.sources import load_gz10

    for path, example in zip(images, load_gz10(str(SAMPLE_DIR)).splits["test"], strict=True):
        example["image"].save(path)
    classifier = load_classifier(run, device="cpu")
    assert classifier.temperature == calibration.temperature
    raw = classifier.predict_proba(images, calibrated=False)
    np.testing.assert_allclose(raw, _probabilities(test), atol=ATOL)
    np.testing.assert_allclose(classifier.predict_proba(images), temper(raw, calibration.temperature), atol=1e-5)

    # hfgal predict writes calibrated scores and says so; --uncalibrated gives the raw ones.
    main(["predict", "--model", str(run), "--device", "cpu", *map(str, images), "-o", str(tmp_path / "cal.csv")])
    assert f"(calibrated, T = {calibration.temperature:.3g})" in capsys.readouterr().err
    main(["predict", "--model", str(run), "--device", "cpu", "--uncalibrated", *map(str, images), "-o",
          str(tmp_path / "raw.csv")])  # fmt: skip
    np.testing.assert_allclose(_probabilities(_rows(tmp_path / "cal.csv")), temper(raw, calibration.temperature),
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(_probabilities(_rows(tmp_path / "raw.csv")), raw, atol=1e-7)

    # The Space shows the calibrated scores and says so.
    shown = GalaxyDemo([str(run)], device="cpu").predict(str(images[0]))
    np.testing.assert_allclose([shown["scores"][c] for c in GZ10_CLASSES], temper(raw, calibration.temperature)[0],
                               atol=1e-5)  # fmt: skip
    assert "Scores are calibrated" in shown["description"]

    # The card was refreshed with the calibration block.
    card = (run / "README.md").read_text()
    assert "### Calibration" in card and f"T = {calibration.temperature:.3f}" in card
    assert "| Validation (fitted on) |" in card and "| Test (held out) |" in card


def test_evaluate_a_model_folder_that_is_not_a_run(tmp_path, image_cache, capsys):
    model = save_vit(tmp_path / "vit", seed=3)
    main(["evaluate", "--model", str(model), "--dataset", str(SAMPLE_DIR), "--tta", "--device", "cpu"])
    record = read_evaluation(model / "evaluation-test-tta")
    assert record.tta and record.run_accuracy is None and record.metrics.num_examples == 3
    assert record.dataset == str(SAMPLE_DIR) and record.split_scheme
    assert "results.json" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "someone/gz10-model"], "is not a run folder (no config.yaml): pass --dataset"),
        (["--model", "someone/gz10-model", "--dataset", "synthetic", "--calibrate"], "needs a local folder"),
        (["--model", "no/such/folder/here"], "no such model folder"),
        (["--model", "RUN", "--split", "holdout"], "invalid choice: 'holdout'"),
        (["--model", "RUN", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--model", "RUN", "--dataset", "synthetic:5"], "synthetic:5 is too small"),
    ],
)
def test_bad_evaluate_inputs_are_one_line_errors(trained_run, argv, message, capsys):
    argv = [str(trained_run) if a == "RUN" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", *argv])
    assert exit_info.value.code in (1, 2)
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_corrupt_calibration_file_is_one_line(tmp_path):
    (tmp_path / "calibration.json").write_text(json.dumps({"temperature": -1.0}))
    with pytest.raises(HfgalError, match="missing"):
        read_calibration(tmp_path)
    scores = CalibrationScores(3, 0.1, 0.05, 1.0, 0.9)
    Calibration(temperature=-1.0, fitted_on="validation", tta=False, validation=scores).save(tmp_path)
    with pytest.raises(HfgalError, match="not a positive number"):
        read_calibration(tmp_path)
    (tmp_path / "calibration.json").write_text("{")
    with pytest.raises(HfgalError, match="not valid JSON"):
        read_calibration(tmp_path)


def test_card_without_and_with_a_tta_calibration(tmp_path):
    from hfgal.hub.card import write_model_card

    run = make_run_dir(tmp_path / "run")
    assert "### Calibration" not in write_model_card(run).read_text()
    scores = CalibrationScores(1773, 0.0712, 0.0154, 0.612, 0.581)
    Calibration(temperature=1.2345, fitted_on="validation", tta=True, validation=scores, test=None).save(run)
    card = write_model_card(run).read_text()
    assert "T = 1.234" in card and "averaged over the 8 dihedral views" in card
    assert "| Validation (fitted on) | 1773 | 7.12 % | 1.54 % | 0.612 | 0.581 |" in card
    assert "Test (held out)" not in card


@pytest.mark.slow  # a child process pointed at a local Hub (HF_ENDPOINT is read at import)
def test_a_hub_model_with_calibration_is_calibrated_when_loaded_by_id(tmp_path):
    import os
    import subprocess
    import sys

    from fixtures.hub_server import running_hub

    plain = save_vit(tmp_path / "plain", seed=1)
    calibrated = Path(shutil.copytree(plain, tmp_path / "calibrated"))
    scores = CalibrationScores(3, 0.2, 0.1, 2.0, 1.9)
    Calibration(temperature=1.7, fitted_on="validation", tta=False, validation=scores).save(calibrated)
    child = (
        "import json, sys\n"
        "from hfgal.inference import load_classifier\n"
        "print('RESULT ' + json.dumps([load_classifier(r, device='cpu').temperature for r in sys.argv[1:]]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(tmp_path / "hf_home"), NO_PROXY="127.0.0.1,localhost", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])

    def temperatures(**extra: str) -> list:
        argv = [sys.executable, "-c", child, "someone/gz10-calibrated", "someone/gz10-plain"]
        proc = subprocess.run(argv, env={**env, **extra}, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))

    with running_hub({"someone/gz10-calibrated": calibrated, "someone/gz10-plain": plain}) as hub:
        assert temperatures(HF_ENDPOINT=hub.url) == [1.7, None]
    assert temperatures(HF_HUB_OFFLINE="1") == [1.7, None]  # from the cache, with the Hub gone
