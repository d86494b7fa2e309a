"""Shared fixtures: real GZ10 sample images, a GZ10-schema h5 built from them, offline Hub settings."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

# Tests never reach the network: the Hub is unreachable here and would only add retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = (REPO_ROOT.parent / "shared" / "data" / "gz10-sample").resolve()


def sample_rows() -> list[dict]:
    with open(SAMPLE_DIR / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real GZ10 sample images not found at {SAMPLE_DIR}")
    return SAMPLE_DIR


def write_gz10_h5(path: Path, images: np.ndarray, labels: np.ndarray, ra, dec, redshift=None, pxscale=None) -> Path:
    """Write a file with the Galaxy10_DECals.h5 schema."""
    import h5py

    n = len(labels)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, chunks=(1, *images.shape[1:]))
        f.create_dataset("ans", data=np.asarray(labels, dtype=np.uint8))
        f.create_dataset("ra", data=np.asarray(ra, dtype=np.float64))
        f.create_dataset("dec", data=np.asarray(dec, dtype=np.float64))
        f.create_dataset("redshift", data=np.full(n, np.nan) if redshift is None else redshift)
        f.create_dataset("pxscale", data=np.full(n, 0.262) if pxscale is None else pxscale)
    return path


@pytest.fixture(scope="session")
def gz10_h5_arrays(sample_dir):
    """Real sample pixels + labels, with made-up coordinates holding exact duplicates and near pairs."""
    from PIL import Image

    rows = sample_rows()
    images = np.stack([np.asarray(Image.open(sample_dir / r["file_name"]).convert("RGB")) for r in rows])
    labels = np.array([int(r["label"]) for r in rows], dtype=np.uint8)
    rng = np.random.default_rng(7)
    n = len(rows)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-0.3, 0.6, n)))
    # Close pairs within one class (a galaxy imaged twice): exact duplicates and 2-8 arcsec neighbours.
    pairs = []
    for c in range(10):
        members = np.flatnonzero(labels == c)
        pairs.append((members[0], members[1], 0.0))  # identical coordinates
        pairs.append((members[2], members[3], 2.0 + 0.6 * c))  # near pair
    pairs.append((np.flatnonzero(labels == 5)[4], np.flatnonzero(labels == 6)[4], 4.0))  # cross-class near pair
    for a, b, sep in pairs:
        ra[b] = ra[a] + sep / 3600 / np.cos(np.radians(dec[a]))
        dec[b] = dec[a]
    redshift = rng.uniform(0.01, 0.3, n)
    redshift[::7] = np.nan
    return {"images": images, "labels": labels, "ra": ra, "dec": dec, "redshift": redshift, "pairs": pairs}


@pytest.fixture(scope="session")
def gz10_h5(tmp_path_factory, gz10_h5_arrays) -> Path:
    a = gz10_h5_arrays
    path = tmp_path_factory.mktemp("h5") / "Galaxy10_DECals.h5"
    return write_gz10_h5(path, a["images"], a["labels"], a["ra"], a["dec"], a["redshift"])


# --------------------------------------------------------------------------- real fine-tuning runs

FINETUNE = REPO_ROOT / "recipes" / "finetune.py"

# Tiny random configs of the study's architectures (no download): name -> (model, overrides, image size).
TINY_MODELS = {
    "convnextv2": ("convnextv2-tiny", '{"depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64]}', "32"),
    "vit": (
        "vit-base",
        '{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, '
        '"image_size": 32, "patch_size": 8}',
        "32",
    ),
    "dinov2": (
        "dinov2-base",
        '{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}',
        "32",
    ),
    "timm": ("timm:resnet18", '{"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}', "32"),
}


def finetune_args(output_dir, dataset, arch: str = "convnextv2", max_steps: int = 4, **extra) -> list[str]:
    """Command-line arguments of a tiny, fast run of recipes/finetune.py."""
    model, overrides, size = TINY_MODELS[arch]
    args = {
        "model": model,
        "model_config_overrides": overrides,
        "image_size": size,
        "dataset": str(dataset),
        "output_dir": str(output_dir),
        "max_steps": str(max_steps),
        "eval_strategy": "steps",
        "save_strategy": "steps",
        "eval_steps": "2",
        "save_steps": "2",
        "logging_steps": "1",
        "per_device_train_batch_size": "16",
        "per_device_eval_batch_size": "32",
        "learning_rate": "0.003",
        "use_cpu": "true",
        "dataloader_num_workers": "0",
        "disable_tqdm": "true",
        "report_to": "none",
        **{k: str(v) for k, v in extra.items()},
    }
    out = []
    for k, v in args.items():
        out += [f"--{k}", v]
    return out


def run_finetune_main(argv: list[str]) -> int:
    import importlib.util

    spec = importlib.util.spec_from_file_location("hfgal_finetune_recipe", FINETUNE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("uint8-cache")
    os.environ["HFGAL_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, sample_dir, image_cache) -> Path:
    """A real finished run folder: a tiny ConvNeXtV2 fine-tuned by recipes/finetune.py on the real sample."""
    out = tmp_path_factory.mktemp("runs") / "tiny-convnextv2"
    assert run_finetune_main(finetune_args(out, sample_dir, "convnextv2", max_steps=4)) == 0
    return out


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment of a child process that imports hfgal from this checkout, whatever is pip-installed."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}
