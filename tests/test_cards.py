"""Model and dataset cards: rendered from templates, read back with huggingface_hub's own parsers."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from fixtures.runs import make_config, make_results, make_run_dir
from hfgal.constants import GZ10_CLASSES, GZ10_DESCRIPTIONS
from hfgal.data.card import render_dataset_card
from hfgal.data.split import SplitInfo
from hfgal.errors import HfgalError
from hfgal.hub.card import render_model_card, write_model_card
from hfgal.runs import RunRecord, most_confused_pairs

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "astro-user/gz10-convnextv2-nano"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("runs") / "convnextv2-nano-gz10")


@pytest.fixture()
def fresh_run(run_dir, tmp_path) -> Path:
    """A private copy of the finished run, for tests that change it."""
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hfgal.cli", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


# --------------------------------------------------------------------------- model card


def test_model_card_metadata_round_trip(fresh_run):
    results = _results(fresh_run)
    path = write_model_card(fresh_run, repo_id=REPO_ID)
    assert path == fresh_run / "README.md"

    meta = metadata_load(path)
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "image-classification"
    assert meta["license"] == "apache-2.0"
    assert meta["base_model"] == results["base_model"]
    assert meta["datasets"] == [results["dataset"]]
    assert meta["tags"] == ["image-classification", "astronomy", "galaxy-morphology", "hfgal"]
    assert meta["metrics"] == ["accuracy", "f1"]
    co2 = meta["co2_eq_emissions"]
    assert co2["emissions"] == results["carbon"]["emissions_kg"] * 1000
    assert co2 == {
        "emissions": results["carbon"]["emissions_kg"] * 1000,
        "source": "codecarbon",
        "training_type": "fine-tuning",
        "geographical_location": "FRA",
        "hardware_used": "1 x NVIDIA H100 80GB HBM3",
    }

    name, evals = model_index_to_eval_results(meta["model-index"])
    assert name == "gz10-convnextv2-nano"
    by_metric = {e.metric_type: e for e in evals}
    assert set(by_metric) == {"accuracy", "f1"}
    assert by_metric["accuracy"].metric_value == results["test"]["accuracy"]
    assert by_metric["f1"].metric_value == results["test"]["macro_f1"]
    assert by_metric["f1"].metric_config == "macro"
    for e in evals:
        assert e.task_type == "image-classification"
        assert e.dataset_type == results["dataset"]
        assert e.dataset_split == "test"
        assert e.dataset_revision == results["dataset_revision"]

    # The same numbers through ModelCard's own parser.
    card = ModelCard.load(path)
    assert {e.metric_type: e.metric_value for e in card.data.eval_results} == {
        "accuracy": results["test"]["accuracy"],
        "f1": results["test"]["macro_f1"],
    }
    assert card.data.co2_eq_emissions["emissions"] == results["carbon"]["emissions_kg"] * 1000


def test_model_card_body_carries_the_results(fresh_run):
    results = _results(fresh_run)
    text = write_model_card(fresh_run, repo_id=REPO_ID).read_text()
    test, validation = results["test"], results["validation"]
    for metrics in (test, validation):
        assert f"{100 * metrics['accuracy']:.2f} %" in text
        lo, hi = metrics["accuracy_ci95"]
        assert f"{100 * lo:.2f} % – {100 * hi:.2f} %" in text
        assert f"{100 * metrics['balanced_accuracy']:.2f} %" in text
        assert f"{metrics['macro_f1']:.3f}" in text
    for name in GZ10_CLASSES:
        c = test["per_class"][name]
        row = f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
        assert row in text
    assert "![confusion matrix](confusion_matrix.png)" in text
    top = most_confused_pairs(test["confusion_matrix"], list(GZ10_CLASSES), k=5)[0]
    assert f"| {top['true']} | {top['predicted']} | {top['count']} | {100 * top['rate']:.1f} % |" in text
    # Hyperparameters, time and carbon.
    assert "| learning_rate | 5e-05 |" in text
    assert "| lr_scheduler_type | cosine |" in text
    assert "| training time (h:mm:ss) | 1:02:05 |" in text  # 3725.4 s
    assert "| **Total** | 1:03:07 | 0.0344 | 0.0123 | 12.3 |" in text
    assert "FRA" in text and "codecarbon 3.3.2" in text
    # Usage snippets name the repo; checkpoint selection on validation is stated.
    assert f'pipeline("image-classification", model="{REPO_ID}")' in text
    assert f'hfgal.load_classifier("{REPO_ID}")' in text and "tta=True" in text
    assert "best validation accuracy" in text and "evaluated once on the test split" in text
    assert "Zoobot" not in text
    assert "@article{Leung2019" in text and "@software{hfgal" in text


def test_scratch_run_without_carbon_renders():
    results = make_results(model="convnextv2-nano", base_model=None, init="scratch", emissions_kg=0.0)
    card = render_model_card(RunRecord.from_dict(results), make_config(results), repo_id=None)
    meta = card.data.to_dict()
    assert "base_model" not in meta and "co2_eq_emissions" not in meta
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == results["test"]["accuracy"]
    text = str(card)
    assert "trained from random initialisation" in text
    assert "none (random initialisation)" in text
    assert "not measured" in text
    assert "**Licence.**" not in text  # no upstream weights whose licence applies
    assert 'model="path/to/convnextv2-nano-gz10"' in text


def test_zoobot_run_carries_leakage_caveat_and_timm_tag():
    zoobot = "mwalmsley/zoobot-encoder-convnext_nano"
    results = make_results(model=zoobot, base_model=zoobot, model_type="timm_wrapper")
    card = render_model_card(RunRecord.from_dict(results), {"license": "mit"}, repo_id=REPO_ID)
    assert "Possible test leakage through Zoobot" in str(card)
    assert card.data.tags == ["image-classification", "astronomy", "galaxy-morphology", "hfgal", "timm"]
    assert card.data.base_model == zoobot
    assert card.data.license == "mit"

    imagenet = make_results(model="timm/convnext_nano.in12k_ft_in1k", base_model="timm/convnext_nano.in12k_ft_in1k")
    assert "Zoobot" not in str(render_model_card(RunRecord.from_dict(imagenet), {}, repo_id=REPO_ID))


def test_synthetic_run_is_flagged_and_names_no_hub_dataset():
    results = make_results(dataset="synthetic:600")
    card = render_model_card(RunRecord.from_dict(results), make_config(results), repo_id=REPO_ID)
    assert card.data.datasets is None
    assert card.data.eval_results[0].dataset_type == "synthetic"
    assert "**Synthetic data.**" in str(card)


def test_card_omits_missing_confusion_png_and_redacts_tokens(fresh_run):
    (fresh_run / "confusion_matrix.png").unlink()
    config = yaml.safe_load((fresh_run / "config.yaml").read_text())
    config["hub_token"] = "hf_secretvalue123"
    (fresh_run / "config.yaml").write_text(yaml.safe_dump(config))
    text = write_model_card(fresh_run).read_text()
    assert "confusion_matrix.png" not in text
    assert "hf_secretvalue123" not in text
    assert "hub_token: <redacted>" in text


def test_refreshing_the_card_replaces_it(fresh_run):
    write_model_card(fresh_run)
    assert 'model="path/to/convnextv2-nano-gz10"' in (fresh_run / "README.md").read_text()
    write_model_card(fresh_run, repo_id=REPO_ID)
    text = (fresh_run / "README.md").read_text()
    assert REPO_ID in text and "path/to/" not in text
    assert not [p for p in fresh_run.iterdir() if p.name.startswith(".README")]  # no temporary files left


# --------------------------------------------------------------------------- bad run folders


def _break(run: Path, how: str) -> str:
    """Damage a run folder; returns a fragment the error must contain."""
    if how == "missing":
        shutil.rmtree(run)
        return "no such run folder"
    if how == "no-results":
        (run / "results.json").unlink()
        return "no results.json — is the run finished?"
    if how == "bad-json":
        (run / "results.json").write_text('{"complete": tr')
        return "not valid JSON"
    if how == "incomplete":
        results = _results(run)
        results["complete"] = False
        (run / "results.json").write_text(json.dumps(results))
        return "not marked complete"
    if how == "no-weights":
        (run / "model.safetensors").unlink()
        return "no model.safetensors"
    if how == "no-config":
        (run / "config.yaml").unlink()
        return "no config.yaml"
    raise AssertionError(how)


BREAKS = ["missing", "no-results", "bad-json", "incomplete", "no-weights", "no-config"]


@pytest.mark.parametrize("how", BREAKS)
def test_write_model_card_refuses_unfinished_runs(fresh_run, how):
    expected = _break(fresh_run, how)
    with pytest.raises(HfgalError) as err:
        write_model_card(fresh_run)
    message = str(err.value)
    assert expected in message and str(fresh_run) in message and "\n" not in message
    assert not (fresh_run / "README.md").exists()


@pytest.mark.slow
def test_card_cli_writes_the_card(fresh_run):
    proc = _cli("card", str(fresh_run), "--repo-id", REPO_ID)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {fresh_run / 'README.md'}"
    assert ModelCard.load(fresh_run / "README.md").data.model_name == "gz10-convnextv2-nano"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["no-results", "incomplete"])
def test_card_cli_errors_are_one_line(fresh_run, how):
    expected = _break(fresh_run, how)
    proc = _cli("card", str(fresh_run))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("hfgal: error: ")
    assert expected in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_card_cli_rejects_bad_repo_id(fresh_run):
    proc = _cli("card", str(fresh_run), "--repo-id", "bad..id")
    assert proc.returncode == 1 and proc.stderr.startswith("hfgal: error: invalid repo id 'bad..id'")
    assert proc.stderr.count("\n") == 1
    assert not (fresh_run / "README.md").exists()


# --------------------------------------------------------------------------- dataset card

SPLIT_INFO = {
    "source": "/home/someone/data/Galaxy10_DECals.h5",
    "scheme": "default",
    "seed": 42,
    "separation_arcsec": 67.072,
    "grouped": True,
    "num_rows": 17736,
    "duplicate_groups": 228,
    "grouped_rows": 460,
    "cross_split_pairs": 0,
    "close_pairs": [
        {"within_arcsec": 1.0, "pairs": 59, "cross_split": 0},
        {"within_arcsec": 10.0, "pairs": 126, "cross_split": 0},
        {"within_arcsec": 67.072, "pairs": 236, "cross_split": 0},
    ],
    "fractions": {"train": 0.8, "validation": 0.1, "test": 0.1},
    "counts": {
        "train": [865, 1482, 2116, 1622, 267, 1634, 1463, 2102, 1138, 1498],
        "validation": [108, 185, 265, 203, 34, 205, 183, 263, 143, 187],
        "test": [108, 186, 264, 202, 33, 204, 183, 263, 142, 188],
    },
}


def test_dataset_card_lists_counts_and_split(tmp_path):
    card = render_dataset_card(SplitInfo.from_dict(SPLIT_INFO), repo_id="astro-user/galaxy10-decals")
    card.save(tmp_path / "README.md")
    loaded = DatasetCard.load(tmp_path / "README.md")
    meta = loaded.data.to_dict()
    assert meta["license"] == "other" and meta["license_name"] and meta["license_link"]
    assert "does not state a licence" in meta["license_details"]
    assert meta["task_categories"] == ["image-classification"]
    assert meta["size_categories"] == ["10K<n<100K"]
    assert meta["pretty_name"] == "Galaxy10 DECaLS"
    assert {"astronomy", "galaxy-morphology", "galaxy10", "hfgal"} <= set(meta["tags"])

    text = loaded.text
    counts = SPLIT_INFO["counts"]
    for i, name in enumerate(GZ10_CLASSES):
        row = [counts[s][i] for s in ("train", "validation", "test")]
        assert f"| {i} | {name} | {GZ10_DESCRIPTIONS[name]} | {row[0]} | {row[1]} | {row[2]} | {sum(row)} |" in text
    assert "| | **All** | | **14187** | **1776** | **1773** | **17736** |" in text
    assert "80/10/10" in text and "seed 42" in text and "hfgal's `default` split of Galaxy10_DECals.h5" in text
    assert 'galaxies closer than 67.072" on the sky kept in one split' in text
    assert "228 such groups of two or more galaxies (460 rows)" in text
    assert 'No pair of galaxies closer than 67.072" sits on both sides of a split' in text
    for row in ('| 1" | 59 | 0 |', '| 10" | 126 | 0 |', '| 67.072" (cutout width) | 236 | 0 |'):
        assert row in text
    assert "1.9 %" in text
    assert 'load_dataset("astro-user/galaxy10-decals")' in text
    assert 'hfgal.load_gz10("astro-user/galaxy10-decals")' in text
    assert "10.5281/zenodo.10845026" in text and "Walmsley" in text and "Dey" in text
    assert "/home/someone" not in text and "`Galaxy10_DECals.h5`" in text  # no local directory layout published


def test_dataset_card_for_a_leaky_synthetic_split():
    info = copy.deepcopy(SPLIT_INFO)
    info.update(source="synthetic:600", scheme="poster", grouped=False, num_rows=600)
    info["close_pairs"] = [{"within_arcsec": 67.072, "pairs": 9, "cross_split": 3}]
    card = render_dataset_card(SplitInfo.from_dict(info))
    text = str(card)
    assert card.data.pretty_name == "Synthetic GZ10-like galaxies"
    assert "sky neighbours not kept together" in text and "such groups" not in text
    assert '3 pairs of galaxies closer than 67.072" ended in different splits' in text
    assert '| 67.072" (cutout width) | 9 | 3 |' in text
    assert card.data.size_categories == ["n<1K"]


def test_dataset_card_of_a_split_info_written_before_the_close_pair_table():
    old = {k: v for k, v in SPLIT_INFO.items() if k not in ("grouped", "close_pairs")} | {"separation_arcsec": 10.0}
    text = str(render_dataset_card(SplitInfo.from_dict(old)))
    assert 'galaxies closer than 10" on the sky kept in one split' in text
    assert 'No pair of galaxies closer than 10" sits on both sides of a split.' in text and '| 1"' not in text


def test_dataset_card_of_the_hub_copy_says_what_its_split_is():
    info = {k: SPLIT_INFO[k] for k in ("num_rows", "counts")} | {"source": "matthieulel/galaxy10_decals"}
    info |= {"scheme": "hub-split", "seed": 42, "separation_arcsec": None, "grouped": False, "close_pairs": None}
    text = str(render_dataset_card(SplitInfo.from_dict(info)))
    assert "Split: hub-split (no coordinates): the published train/test of matthieulel/galaxy10_decals" in text
    assert "validation carved from train (10 %, stratified by class, seed 42)" in text
    assert "could not be searched for" in text and "`default`" not in text


def test_dataset_card_without_coordinates():
    info = {k: SPLIT_INFO[k] for k in ("num_rows", "counts")} | {"scheme": "default", "separation_arcsec": None}
    text = str(render_dataset_card(SplitInfo.from_dict(info)))
    assert "no sky coordinates" in text and "80/10/10" in text and "could not be searched for" in text
    assert "such groups" not in text and '| 1"' not in text


def test_dataset_card_needs_counts():
    with pytest.raises(HfgalError, match="no 10 class counts for test"):
        render_dataset_card(SplitInfo(scheme="default", counts={"train": [1] * 10, "validation": [1] * 10}))


def test_local_dataset_run_names_no_hub_dataset_and_hides_local_paths():
    results = make_results(dataset="/home/someone/gz10/Galaxy10_DECals.h5")
    results["split_scheme"] = "default"
    card = render_model_card(RunRecord.from_dict(results), {}, repo_id=REPO_ID)
    assert card.data.datasets is None
    assert card.data.eval_results[0].dataset_type == "galaxy10_decals"
    assert "(local copy `Galaxy10_DECals.h5`), split with hfgal's `default` scheme" in card.text
    assert "/home/someone" not in card.text
