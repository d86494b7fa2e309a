"""Protocols: the seed study's preprocessing and selection diagnostic in a real run, and the study-level presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fixtures.checkpoints import save_convnextv2_author_style
from fixtures.finetune import finetune_args, run_finetune_main
from hfgal.data.geometry import Geometry, processor_pixels


def test_processor_geometry_reads_each_processor_family():
    from transformers import (
        BitImageProcessor,
        ConvNextImageProcessor,
        EfficientNetImageProcessor,
        TimmWrapperImageProcessor,
        ViTImageProcessor,
    )

    # ConvNeXt below 384 px: resize to size / crop_pct, keep the centre (the published convnextv2-*-224 repos).
    convnext = ConvNextImageProcessor(size={"shortest_edge": 224})
    assert Geometry.from_processor(convnext) == Geometry(224, 256, "bicubic")
    # DINOv2's BitImageProcessor: shortest edge 256, centre crop 224.
    dinov2 = BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224})
    assert Geometry.from_processor(dinov2) == Geometry(224, 256, "bicubic")
    assert Geometry.from_processor(ViTImageProcessor()) == Geometry(224)  # ViT: the whole image to 224, no crop
    timm = TimmWrapperImageProcessor(
        pretrained_cfg={"input_size": [3, 224, 224], "crop_pct": 0.95, "interpolation": "bicubic"}
    )
    assert Geometry.from_processor(timm) == Geometry(224, 235, "bicubic")  # timm: floor(224 / 0.95)
    # google/efficientnet-b* store resample 0: PIL's nearest, not a default to replace.
    efficientnet = EfficientNetImageProcessor(size={"height": 600, "width": 600}, resample=0)
    assert Geometry.from_processor(efficientnet) == Geometry(600, None, "nearest")


@pytest.mark.parametrize("geometry", [Geometry(224, 256, "bicubic"), Geometry(64, 72, "nearest"), Geometry(48)])
def test_a_geometrys_processor_crops_and_resizes_as_the_backbones_own(sample_dir, geometry):
    """The processor hfgal saves for a geometry computes the pixels of the backbone's own processor of that geometry
    (ConvNeXt's crop_pct resize + crop; ViT's whole-image resize), and keeps the whole cutout when it does not crop."""
    from transformers import AutoImageProcessor, ConvNextImageProcessor, ViTImageProcessor

    image = Image.open(sample_dir / "5_0.png")
    resample = {"bicubic": 3, "nearest": 0, "bilinear": 2}[geometry.resample]
    if geometry.crops:
        own = ConvNextImageProcessor(
            size={"shortest_edge": geometry.height}, crop_pct=geometry.height / geometry.resize
        )
    else:
        own = ViTImageProcessor(size={"height": geometry.height, "width": geometry.width})
    own.resample = resample
    theirs = processor_pixels(_as_loaded(own, AutoImageProcessor), [image])[0]  # loaded as pipeline() loads it
    ours = processor_pixels(geometry.image_processor(), [image])[0]
    assert ours.shape == (3, geometry.height, geometry.width) and np.array_equal(ours, theirs)
    if geometry.crops:  # hfgal's default keeps the whole cutout
        whole = processor_pixels(Geometry(geometry.height).image_processor(), [image])[0]
        assert np.abs(whole.astype(float) - ours).mean() > 3.0


def _as_loaded(processor, auto):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        processor.save_pretrained(tmp)
        return auto.from_pretrained(tmp)


@pytest.mark.slow
def test_a_run_with_the_processors_preprocessing_and_the_test_selection_diagnostic(tmp_path, sample_dir, image_cache):
    from hfgal.inference import load_classifier

    base = save_convnextv2_author_style(tmp_path / "base", shortest_edge=32)  # 32 / 0.875 -> resize 36, crop 32
    out = tmp_path / "run"
    args = finetune_args(out, sample_dir, "convnextv2", max_steps=4, preprocessing="processor", test_each_eval="true")
    args[args.index("--model") + 1] = str(base)
    for flag in ("--model_config_overrides", "--image_size"):  # the folder's own config and processor decide
        i = args.index(flag)
        del args[i : i + 2]
    assert run_finetune_main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["preprocessing"] == "resized to 36 px (bicubic), central 32 x 32 kept"
    diagnostic = results["selection_on_test"]
    assert diagnostic["evaluations"] == 2  # eval_steps 2 of 4 steps: test scored at both, never selected on
    assert 0.0 <= diagnostic["test_accuracy"] <= 1.0
    state = json.loads((out / f"checkpoint-{results['global_step']}" / "trainer_state.json").read_text())
    validation = [e["eval_validation_accuracy"] for e in state["log_history"] if "eval_validation_accuracy" in e]
    assert state["best_metric"] == max(validation)  # the checkpoint was still chosen on validation
    # The run folder serves images the way it was trained: the same crop, filter and normalisation.
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": 36} and processor["crop_size"] == {"height": 32, "width": 32}
    assert load_classifier(out, device="cpu").geometry == Geometry(32, 36, "bicubic")


REPO_STUDIES = __import__("pathlib").Path(__file__).resolve().parents[1] / "recipes" / "study"


def test_poster_dry_run_prints_the_seed_studys_settings_for_every_run(capsys, tmp_path):
    from hfgal.study.runner import run_study

    assert run_study(REPO_STUDIES / "poster.yaml", tmp_path / "p", dry_run=True) == 0
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if "-m hfgal.train" in line]
    assert len(commands) == 54  # Table 1 (9 rows) + Table 2 (3 rows x 3 columns) x 3 seeds
    poster = (
        "--dataset matthieulel/galaxy10_decals --protocol poster --learning_rate 5e-05 "
        "--per_device_train_batch_size 64 --gradient_accumulation_steps 4 --lr_scheduler_type linear "
        "--warmup_steps 0.1 --num_train_epochs 30 --weight_decay 0.0 --label_smoothing_factor 0.0 "
        "--d4_augment false --affine_augment false --preprocessing processor --test_each_eval true"
    )
    assert all(poster in command for command in commands)
    assert "protocol poster" in out and "its own train/test split" in out


def test_honest_dry_run_names_the_h5_and_the_cutout_width(capsys, tmp_path):
    from hfgal.constants import DEFAULT_SEPARATION_ARCSEC
    from hfgal.study.runner import run_study

    assert run_study(REPO_STUDIES / "full.yaml", tmp_path / "f", dry_run=True) == 0
    out = capsys.readouterr().out
    assert "Galaxy10_DECals.h5 from Zenodo record 10845026" in out
    assert f"closer than {DEFAULT_SEPARATION_ARCSEC:.1f} arcsec" in out and DEFAULT_SEPARATION_ARCSEC > 67
    commands = [line for line in out.splitlines() if "-m hfgal.train" in line]
    assert commands and all("--dataset zenodo --protocol honest" in command for command in commands)
    assert not any("--preprocessing processor" in command for command in commands)


def test_a_table2_row_must_train_one_architecture(tmp_path):
    import yaml

    from hfgal.errors import HfgalError
    from hfgal.study.plan import load_study

    study = {
        "name": "mixed",
        "dataset": "synthetic:200",
        "runs": [
            {
                "name": "maxvit-base",
                "table": 2,
                "pretraining": {
                    "none": "timm/maxvit_base_tf_224.in1k",
                    "imagenet": "timm/maxvit_base_tf_224.in1k",
                    "zoobot": "mwalmsley/zoobot-encoder-maxvit_base_rw_224",  # maxvit_rmlp_base_rw_224 inside
                },
            }
        ],
    }
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(HfgalError, match="compares different architectures .*maxvit_rmlp_base_rw_224"):
        load_study(path)
    study["runs"][0]["pretraining"]["imagenet"] = "someone/private-maxvit"
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(HfgalError, match="add `architecture: <timm name>`"):
        load_study(path)
    # The shipped Table 2 passes the check: the same architecture in every column of every row.
    assert len(load_study(REPO_STUDIES / "table2.yaml").entries) == 3


def test_the_report_opens_with_what_produced_the_numbers(tmp_path):
    import yaml

    from fixtures.runs import make_results
    from hfgal.study.report import write_report
    from hfgal.study.runner import run_study

    config = tmp_path / "poster.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "p",
                "protocol": "poster",
                "seeds": [0, 1],
                "runs": [
                    {"name": "vit-base", "table": 1, "model": "google/vit-base-patch16-224", "published": "ViT Base"}
                ],
            }
        )
    )
    out = tmp_path / "study"
    assert run_study(config, out, launcher="python", emit_commands=tmp_path / "c") == 0
    for seed, accuracy in ((0, 0.84), (1, 0.86)):
        record = make_results(model="google/vit-base-patch16-224")
        record.update(seed=seed, protocol="poster", preprocessing="resized to 224 px (bilinear), central 224 x 224")
        record["test"]["accuracy"] = accuracy
        record["selection_on_test"] = {"test_accuracy": accuracy + 0.02, "step": 9, "epoch": 3.0, "evaluations": 30}
        record["carbon"].update(concurrency=2, segments=2 - seed)
        run_dir = out / "runs" / f"vit-base__seed{seed}"
        (run_dir / "results.json").write_text(json.dumps(record))
    text = write_report(out).read_text()
    box = text.split("## Protocol")[1].split("##")[0]
    assert "Protocol: **poster**" in box and "`matthieulel/galaxy10_decals`" in box
    assert "best epoch on test" in box and "Seeds: 0, 1" in box
    assert "up to 2 runs shared a machine" in box and "1 run(s) were interrupted and resumed" in box
    assert "lr 5e-5" in box and "learning rate `5e-05`" in box
    published = text.split("## Compared with the seed study")[1]
    assert "Same protocol as the seed study" in published
    assert "| 85.00 ± 1.41 | 87.00 |" in published  # ours (validation-selected) beside the diagnostic


def test_the_model_card_states_the_protocol_and_the_diagnostic():
    from fixtures.runs import make_config, make_results
    from hfgal.hub.card import render_model_card
    from hfgal.runs import RunRecord

    results = make_results()
    results.update(protocol="poster", preprocessing="resized to 256 px (bicubic), central 224 x 224 kept")
    results["selection_on_test"] = {"test_accuracy": 0.9012, "step": 480, "epoch": 12.0, "evaluations": 30}
    results["carbon"].update(segments=3, concurrency=2)
    card = str(render_model_card(RunRecord.from_dict(results), make_config(results), repo_id="someone/gz10"))
    assert "follows the seed study's protocol (`poster`" in card
    assert "Diagnostic only, not a result" in card and "90.12 %" in card and "best of 30 evaluations" in card
    assert "| image preparation | resized to 256 px (bicubic), central 224 x 224 kept |" in card
    assert "| training processes (1 + times resumed) | 3 |" in card and "| runs sharing the machine | 2 |" in card
