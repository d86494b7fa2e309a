"""What we publish is what we measured: every consumer of a run folder gives the probabilities the training process
evaluated.

For each model family (transformers ConvNeXt V2, ViT, DINOv2-like, EfficientNet; timm through TimmWrapper; a
Zoobot-named timm encoder; hfgal's own gz10_equivariant GCNN) and each way of preparing images (hfgal's whole-image
resize; the checkpoint's own processor's resize + centre crop, the poster protocol), a tiny model is fine-tuned by
the real recipe on the real GZ10 sample. The run's `predictions.csv` holds the probabilities its in-process
evaluation computed for every validation and test galaxy; `load_classifier`, `pipeline("image-classification")`,
`hfgal predict` and the Space's predict function must give the same numbers for the same images, from the saved folder.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures.finetune import finetune_args, run_finetune_main
from hfgal.catalogue import probability_columns
from hfgal.constants import GZ10_CLASSES, ID2LABEL, LABEL2ID

pytestmark = pytest.mark.slow  # 14 tiny fine-tunes and their consumers

SIZE = 32
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
ATOL = 2e-5  # float32 logits through the same pixels; softmax of logits in (-10, 10)


def _labels() -> dict:
    return {"num_labels": 10, "id2label": dict(ID2LABEL), "label2id": dict(LABEL2ID)}


def _save_transformers(folder: Path, config, processor: dict) -> Path:
    from transformers import AutoModelForImageClassification

    torch.manual_seed(0)
    AutoModelForImageClassification.from_config(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def _save_timm(folder: Path, pretrained_cfg: dict) -> Path:
    from transformers import AutoModelForImageClassification, TimmWrapperConfig

    config = TimmWrapperConfig(architecture="test_resnet", pretrained_cfg=pretrained_cfg, **_labels())
    torch.manual_seed(0)
    AutoModelForImageClassification.from_config(config).save_pretrained(folder)
    return folder


def base_checkpoint(family: str, root: Path) -> Path:
    """A tiny randomly initialised checkpoint laid out as the family's published ones, with its own processor."""
    from transformers import ConvNextV2Config, Dinov2Config, EfficientNetConfig, ViTConfig

    from hfgal.models.loading import load_model

    folder = root / ("zoobot-encoder-test" if family == "zoobot" else family)
    crop_pct = {"crop_pct": 0.875, "size": {"shortest_edge": SIZE}, "resample": 3, "do_rescale": True}
    if family == "convnextv2":
        config = ConvNextV2Config(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], **_labels())
        processor = {"image_processor_type": "ConvNextImageProcessor", "do_normalize": True, **crop_pct, **IMAGENET}
        return _save_transformers(folder, config, processor)
    if family == "vit":
        config = ViTConfig(image_size=SIZE, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=37, **_labels())  # fmt: skip
        processor = {"image_processor_type": "ViTImageProcessor", "size": {"height": SIZE, "width": SIZE},
                     "image_mean": [0.5] * 3, "image_std": [0.5] * 3}  # fmt: skip
        return _save_transformers(folder, config, processor)
    if family == "dinov2":
        config = Dinov2Config(image_size=SIZE, patch_size=8, hidden_size=32, num_hidden_layers=1,
                              num_attention_heads=2, **_labels())  # fmt: skip
        processor = {"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 36}, "resample": 3,
                     "do_center_crop": True, "crop_size": {"height": SIZE, "width": SIZE}, **IMAGENET}  # fmt: skip
        return _save_transformers(folder, config, processor)
    if family == "efficientnet":  # google/efficientnet-b*: PIL nearest, and a std its processor divides by twice
        config = EfficientNetConfig(image_size=SIZE, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128,
                                    **_labels())  # fmt: skip
        processor = {"image_processor_type": "EfficientNetImageProcessor", "size": {"height": SIZE, "width": SIZE},
                     "resample": 0, "include_top": True, "image_mean": IMAGENET["image_mean"],
                     "image_std": [s**0.5 for s in IMAGENET["image_std"]], "rescale_offset": False}  # fmt: skip
        return _save_transformers(folder, config, processor)
    if family in ("timm", "zoobot"):  # timm repos carry their preprocessing in config.json's pretrained_cfg
        stats = [0.5] * 3
        return _save_timm(folder, {"input_size": [3, SIZE, SIZE], "interpolation": "bicubic", "crop_pct": 0.875,
                                   "crop_mode": "center", "mean": stats, "std": stats})  # fmt: skip
    loaded = load_model("gcnn-d4-tiny", config_overrides={"image_size": SIZE})
    loaded.model.save_pretrained(folder)
    processor = {"image_processor_type": "ConvNextImageProcessor", "do_normalize": True, **crop_pct, **IMAGENET}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


FAMILIES = ("convnextv2", "vit", "dinov2", "efficientnet", "timm", "zoobot", "gcnn")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sample_dir, image_cache) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("parity")
    out = {}
    for family in FAMILIES:
        base = base_checkpoint(family, root / "base")
        for preprocessing in ("resize", "processor"):
            run = root / "runs" / f"{family}-{preprocessing}"
            args = finetune_args(run, sample_dir, max_steps=2, preprocessing=preprocessing)
            for flag in ("--model_config_overrides", "--image_size"):  # the checkpoint's own config and size
                i = args.index(flag)
                del args[i : i + 2]
            args[args.index("--model") + 1] = str(base)
            assert run_finetune_main(args) == 0
            out[family, preprocessing] = run
    return out


def evaluated(run: Path) -> tuple[list[str], np.ndarray]:
    """The galaxies the run evaluated (split, row) and the probabilities it computed, from predictions.csv."""
    with open(run / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [f"{r['split']}/{r['row']}" for r in rows]
    return keys, np.array([[float(r[c]) for c in probability_columns(GZ10_CLASSES)] for r in rows])


@pytest.fixture(scope="module")
def evaluated_images(sample_dir, tmp_path_factory) -> dict[str, Path]:
    """The sample's validation and test galaxies as the runs split them, written losslessly as PNG files."""
    from hfgal.data.sources import load_gz10

    gz10 = load_gz10(str(sample_dir))
    folder = tmp_path_factory.mktemp("evaluated-images")
    paths = {}
    for split in ("validation", "test"):
        for row, example in enumerate(gz10.splits[split]):
            paths[f"{split}/{row}"] = folder / f"{split}-{row}.png"
            example["image"].save(paths[f"{split}/{row}"])
    return paths


def _by_class(scores: list[dict]) -> list[float]:
    found = {item["label"]: item["score"] for item in scores}
    return [found[name] for name in GZ10_CLASSES]


@pytest.mark.parametrize("preprocessing", ["resize", "processor"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_consumer_serves_the_evaluated_probabilities(runs, evaluated_images, family, preprocessing, tmp_path):
    from transformers import pipeline

    import hfgal.models  # noqa: F401  registers gz10_equivariant with the Auto classes, for pipeline()
    from hfgal.cli import main as hfgal_cli
    from hfgal.demo.app import GalaxyDemo
    from hfgal.inference import load_classifier

    run = runs[family, preprocessing]
    keys, expected = evaluated(run)
    assert len(keys) >= 4 and np.allclose(expected.sum(1), 1.0)
    paths = [evaluated_images[key] for key in keys]

    served = load_classifier(run, device="cpu").predict_proba([str(p) for p in paths])
    np.testing.assert_allclose(served, expected, atol=ATOL, err_msg="load_classifier")

    classify = pipeline("image-classification", model=str(run), device="cpu")
    piped = np.array([_by_class(scores) for scores in classify([str(p) for p in paths], top_k=10)])
    np.testing.assert_allclose(piped, expected, atol=ATOL, err_msg="pipeline")

    catalogue = tmp_path / "predictions.csv"  # a failure would exit non-zero (SystemExit)
    hfgal_cli(["predict", "--model", str(run), "--device", "cpu", *map(str, paths), "--output", str(catalogue)])
    with open(catalogue, newline="") as f:
        by_path = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    predicted = np.array([[float(by_path[p.name][c]) for c in probability_columns(GZ10_CLASSES)] for p in paths])
    np.testing.assert_allclose(predicted, expected, atol=ATOL, err_msg="hfgal predict")

    space = GalaxyDemo([str(run)], device="cpu")
    spaced = np.array([[space.predict(str(p))["scores"][name] for name in GZ10_CLASSES] for p in paths])
    np.testing.assert_allclose(spaced, expected, atol=ATOL, err_msg="the Space's predict")


def test_a_zoobot_encoder_is_served_the_pixels_it_trained_on(runs):
    """The poster protocol's Zoobot cell: [0, 1] pixels (no mean/std), the timm processor's resize and crop — in the
    record, in the saved processor, in the timm config, and in what load_classifier applies."""
    from hfgal.data.geometry import Geometry
    from hfgal.inference import load_classifier
    from hfgal.runs import read_results

    run = runs["zoobot", "processor"]
    record = read_results(run)
    assert record.normalization == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    processor = json.loads((run / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.0] * 3 and processor["image_std"] == [1.0] * 3
    assert processor["size"] == {"shortest_edge": 36} and processor["crop_size"] == {"height": SIZE, "width": SIZE}
    timm_cfg = json.loads((run / "config.json").read_text())["pretrained_cfg"]
    assert timm_cfg["mean"] == [0.0] * 3 and timm_cfg["std"] == [1.0] * 3 and timm_cfg["interpolation"] == "bicubic"
    classifier = load_classifier(run, device="cpu")
    assert classifier.geometry == Geometry(SIZE, 36, "bicubic")
    assert classifier.mean == (0.0, 0.0, 0.0) and classifier.std == (1.0, 1.0, 1.0)


def test_efficientnet_runs_record_nearest_and_the_normalisation_its_processor_applies(runs):
    from hfgal.runs import read_results

    record = read_results(runs["efficientnet", "processor"])
    assert record.preprocessing == f"whole image resized to {SIZE} x {SIZE} (nearest)"
    np.testing.assert_allclose(record.normalization["std"], IMAGENET["image_std"], rtol=1e-5)  # divided twice
