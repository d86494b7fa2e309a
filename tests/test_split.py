"""What a run says about its split: results.json and the model card record the split the source actually honoured
(the published Hub copy's `hub-split`, hfgal's `default` split of the h5 with its linking radius), and the recipe
refuses a split its source cannot honour."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures.finetune import finetune_args, run_finetune_main
from fixtures.runs import make_results
from hfgal.constants import DEFAULT_DATASET
from hfgal.data.split import SplitInfo
from hfgal.errors import HfgalError
from hfgal.hub.card import render_model_card
from hfgal.runs import RunRecord
from hfgal.train.outputs import split_fields


def _hub_copy_split_info() -> SplitInfo:
    """The split info `load_gz10` attaches to the published Hub copy (train/test, no coordinates)."""
    from datasets import Dataset, DatasetDict, Features, Image, Value

    from hfgal.data.sources import conform_gz10

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(60)]
    feats = Features({"image": Image(), "label": Value("uint8")})
    labels = np.tile(np.arange(10), 6)
    hub_like = DatasetDict(
        {
            "train": Dataset.from_dict({"image": images[:50], "label": labels[:50]}, features=feats),
            "test": Dataset.from_dict({"image": images[50:], "label": labels[50:]}, features=feats),
        }
    )
    return conform_gz10(hub_like, seed=42, source=DEFAULT_DATASET).info


H5_SPLIT_INFO = SplitInfo(
    **{
        "source": "zenodo:10845026/Galaxy10_DECals.h5",
        "scheme": "default",
        "seed": 42,
        "grouped": True,
        "separation_arcsec": 67.072,
        "fractions": {"train": 0.8, "validation": 0.1, "test": 0.1},
        "close_pairs": [
            {"within_arcsec": 1.0, "pairs": 59, "cross_split": 0},
            {"within_arcsec": 10.0, "pairs": 126, "cross_split": 0},
            {"within_arcsec": 67.072, "pairs": 236, "cross_split": 0},
        ],
    }
)


def _record(dataset: str, split_info: SplitInfo) -> RunRecord:
    results = make_results(dataset=dataset)
    results.update(split_fields(split_info))
    # Through JSON, as results.json is written and read back.
    return RunRecord.from_dict(json.loads(json.dumps(RunRecord.from_dict(results).to_dict())))


def test_the_hub_copy_run_records_its_published_split_not_the_default_scheme():
    record = _record(DEFAULT_DATASET, _hub_copy_split_info())
    assert record.split_scheme == "hub-split"
    assert record.split.startswith(f"hub-split (no coordinates): the published train/test of {DEFAULT_DATASET}")
    assert record.split_separation_arcsec is None and record.split_close_pairs is None
    text = render_model_card(record, {}, repo_id="astro-user/gz10").text
    assert "(split: hub-split (no coordinates): the published train/test" in text
    assert "validation carved from train (10 %, stratified by class, seed 42)" in text
    assert "hfgal's `default`" not in text and "default scheme" not in text


def test_an_h5_run_records_the_linking_radius_and_the_pairs_crossing():
    record = _record("zenodo", H5_SPLIT_INFO)
    assert record.split == (
        "hfgal's `default` split of zenodo:10845026/Galaxy10_DECals.h5: 80/10/10 train/validation/test, "
        'stratified by class, seed 42; galaxies closer than 67.072" on the sky kept in one split'
    )
    assert record.split_scheme == "default" and record.split_separation_arcsec == pytest.approx(67.072)
    assert [r["pairs"] for r in record.split_close_pairs] == [59, 126, 236]
    card = render_model_card(record, {}, repo_id="astro-user/gz10")
    assert "Galaxy10 DECaLS (`Galaxy10_DECals.h5` from Zenodo record 10845026)" in card.text
    assert 'galaxies closer than 67.072" on the sky kept in one split' in card.text
    assert 'the 236 pairs of galaxies closer than the 67.072" cutout width sit on both sides of it' in card.text
    assert card.data.eval_results[0].dataset_name == "Galaxy10 DECaLS (Zenodo 10845026)"


def test_a_record_written_before_the_split_was_recorded_claims_nothing_false():
    # Old results.json of a Hub-copy run said split_scheme "default": the card must not repeat it.
    results = make_results(dataset=DEFAULT_DATASET) | {"split_scheme": "default"}
    text = render_model_card(RunRecord.from_dict(results), {"split_scheme": "default"}).text
    assert "its own test split; validation carved from its train split" in text and "`default` scheme" not in text


def test_split_fields_of_an_ungrouped_split_claim_no_linking_radius():
    import dataclasses

    fields = split_fields(dataclasses.replace(H5_SPLIT_INFO, scheme="poster", grouped=False))
    assert fields["split_scheme"] == "poster" and fields["split_separation_arcsec"] is None
    assert fields["split"].endswith("sky neighbours not kept together")


def test_recipe_split_arguments(tmp_path):
    from hfgal.train.args import parse_args

    _, data_args, _ = parse_args(["--dataset", "zenodo", "--output_dir", str(tmp_path)])
    assert data_args.split_scheme is None and data_args.split_separation_arcsec is None  # the honest default
    _, data_args, _ = parse_args(["--split_scheme", "default", "--split_separation_arcsec", "30", "--output_dir", "o"])
    assert (data_args.split_scheme, data_args.split_separation_arcsec) == ("default", 30.0)
    _, data_args, _ = parse_args(["--split_scheme", "poster", "--output_dir", "o"])
    assert (data_args.split_scheme, data_args.split_separation_arcsec) == ("poster", None)
    # Refused while the arguments are parsed, by the check load_gz10 makes: nothing is loaded first.
    with pytest.raises(HfgalError, match="split scheme 'random' is not valid; use default or poster"):
        parse_args(["--split_scheme", "random", "--output_dir", str(tmp_path)])
    with pytest.raises(HfgalError, match="cannot be honoured by the 'poster' split scheme"):
        parse_args(["--split_scheme", "poster", "--split_separation_arcsec", "30", "--output_dir", str(tmp_path)])
    with pytest.raises(HfgalError, match="linking radius -5.0 arcsec is not valid"):
        parse_args(["--split_separation_arcsec", "-5", "--output_dir", str(tmp_path)])


@pytest.mark.parametrize("flag, value", [("split_scheme", "default"), ("split_separation_arcsec", "67.072")])
def test_recipe_refuses_a_split_the_hub_copy_cannot_honour(tmp_path, flag, value):
    argv = finetune_args(tmp_path / "run", DEFAULT_DATASET, max_steps=1, **{flag: value})
    with pytest.raises(HfgalError, match="comes already split .* cannot be honoured") as err:
        run_finetune_main(argv)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_finished_run_records_the_split_it_used(trained_run):
    results = json.loads((trained_run / "results.json").read_text())
    # The real sample has no coordinates: hfgal's default split, and it says it could not group neighbours.
    assert results["split_scheme"] == "default" and results["split_separation_arcsec"] is None
    assert results["split"].startswith("hfgal's `default` split of gz10-sample: 80/10/10")
    assert "no sky coordinates" in results["split"] and results["split_close_pairs"] is None
    card = (trained_run / "README.md").read_text()
    assert "(split: hfgal's `default` split of gz10-sample" in card
