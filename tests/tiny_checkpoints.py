"""Tiny randomly initialised GZ10 checkpoints of real architectures, saved the way real ones are published.

Used by the inference, predict-CLI and local-Hub tests: a ViT run folder (ViTImageProcessor), a TimmWrapper
folder (preprocessing in config.json's pretrained_cfg, as timm repos on the Hub), and a ConvNeXt V2 folder laid out
like the study authors' `matthieulel/*-finetuned-galaxy10-decals` repos (ConvNextImageProcessor with crop_pct).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from hfgal.constants import ID2LABEL, LABEL2ID

SAMPLE_DIR = (Path(__file__).resolve().parents[2] / "shared" / "data" / "gz10-sample").resolve()


def sample_images(n: int) -> list[Path]:
    """`n` real GZ10 sample images, taken round-robin over the classes so several labels appear."""
    with open(SAMPLE_DIR / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_class: dict[str, list[Path]] = {}
    for row in rows:
        by_class.setdefault(row["label"], []).append(SAMPLE_DIR / row["file_name"])
    picked: list[Path] = []
    while len(picked) < n:
        for paths in by_class.values():
            if len(picked) < n and paths:
                picked.append(paths.pop(0))
    return picked


def _randomise(model: torch.nn.Module, seed: int) -> None:
    # Zero-initialised heads give uniform probabilities, which would make every ranking test vacuous.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2 or "classifier" in name or "fc" in name or "head" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def save_vit(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    """A 1-layer ViT with GZ10 labels and a ViTImageProcessor: the hfgal run-folder layout."""
    from transformers import AutoModelForImageClassification, ViTConfig, ViTImageProcessor

    config = ViTConfig(
        image_size=image_size,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=10,
        id2label=ID2LABEL,
        label2id=LABEL2ID,
    )
    model = AutoModelForImageClassification.from_config(config)
    _randomise(model, seed)
    model.save_pretrained(folder)
    ViTImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.1, 0.1, 0.1], image_std=[0.2, 0.2, 0.2]
    ).save_pretrained(folder)
    return Path(folder)


def save_timm(
    folder: Path, seed: int = 0, image_size: int = 40, timm_model_args: bool = False, with_pretrained_cfg: bool = True
) -> Path:
    """A TimmWrapper checkpoint of timm's `test_resnet`; `timm_model_args` mimics timm's save_for_hf output."""
    from transformers import AutoModelForImageClassification, TimmWrapperConfig

    pretrained_cfg = {
        "input_size": [3, image_size, image_size],
        "interpolation": "bilinear",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "crop_pct": 1.0,
        "crop_mode": "center",
        "num_classes": 10,
    }
    config = TimmWrapperConfig(
        architecture="test_resnet",
        num_labels=10,
        id2label=ID2LABEL,
        label2id=LABEL2ID,
        **({"pretrained_cfg": pretrained_cfg} if with_pretrained_cfg else {}),
    )
    model = AutoModelForImageClassification.from_config(config)
    _randomise(model, seed)
    model.save_pretrained(folder)
    if timm_model_args:
        path = Path(folder) / "config.json"
        data = json.loads(path.read_text())
        data["model_args"] = {"num_classes": 10}
        path.write_text(json.dumps(data, indent=2))
    return Path(folder)


def save_convnextv2_author_style(folder: Path, seed: int = 0, shortest_edge: int = 48, labels: dict | None = None):
    """ConvNeXt V2 with the files of a Trainer push of the study: GZ10 id2label, ConvNextImageProcessor JSON."""
    from transformers import AutoModelForImageClassification, ConvNextV2Config

    id2label = labels or ID2LABEL
    config = ConvNextV2Config(
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 24, 32],
        num_labels=10,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    model = AutoModelForImageClassification.from_config(config)
    _randomise(model, seed)
    model.save_pretrained(folder)
    # Written as the JSON file the published repos carry (older transformers wrote it through the same keys).
    processor = {
        "crop_pct": 0.875,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_processor_type": "ConvNextImageProcessor",
        "image_std": [0.229, 0.224, 0.225],
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": shortest_edge},
    }
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    return Path(folder)


def save_pickled_copy(src: Path, dst: Path, payload: object | None = None) -> Path:
    """Copy a safetensors checkpoint to `dst` as pickle-only `pytorch_model.bin` (plus `payload` inside it)."""
    import shutil

    from safetensors.torch import load_file

    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "preprocessor_config.json"):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)
    state = load_file(src / "model.safetensors")
    if payload is not None:
        state = {"payload": payload, **state}
    torch.save(state, dst / "pytorch_model.bin")
    return dst
