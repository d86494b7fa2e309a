"""Speed work must not change results: the fast data path gives what the plain one gives, up to float rounding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fixtures.finetune import finetune_args, run_finetune_main
from hfgal.data.augment import dihedral_view, normalize, random_affine, random_dihedral, random_dihedral_affine
from hfgal.data.cache import UInt8Images, collate_uint8

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture
def uint8_batch() -> torch.Tensor:
    return torch.randint(0, 256, (24, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.slow
def test_keeping_freed_memory_does_not_change_a_seeded_run(tmp_path, sample_dir, image_cache):
    """The CPU allocator setting of the recipe (hfgal.train.hardware.keep_freed_memory) changes speed, not numbers."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    from fixtures.finetune import FINETUNE, subprocess_env

    runs = {}
    for keep in ("1", "0"):
        out = tmp_path / f"keep{keep}"
        env = subprocess_env(HFGAL_CACHE=str(image_cache), HFGAL_KEEP_FREED_MEMORY=keep)
        argv = finetune_args(out, sample_dir, "convnextv2", max_steps=4)
        proc = subprocess.run([sys.executable, str(FINETUNE), *argv], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[keep] = (load_file(out / "model.safetensors"), json.loads((out / "results.json").read_text()))
    (kept, kept_results), (default, default_results) = runs["1"], runs["0"]
    assert kept.keys() == default.keys()
    for name, value in kept.items():
        assert torch.equal(default[name], value), name
    for split in ("validation", "test"):
        assert kept_results[split] == default_results[split]


@pytest.mark.slow
def test_worker_processes_do_not_change_a_seeded_run(tmp_path, sample_dir, image_cache):
    from safetensors.torch import load_file

    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"workers{workers}"
        argv = finetune_args(out, sample_dir, "convnextv2", max_steps=4, dataloader_num_workers=workers)
        assert run_finetune_main(argv) == 0
        runs[workers] = (load_file(out / "model.safetensors"), json.loads((out / "results.json").read_text()))
    (weights0, results0), (weights2, results2) = runs[0], runs[2]
    assert weights0.keys() == weights2.keys()
    # Both runs really trained: the weights left a fresh initialisation of the same config and seed.
    from transformers import AutoConfig, AutoModelForImageClassification

    torch.manual_seed(42)
    fresh = AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(tmp_path / "workers0"))
    moved = [k for k, v in fresh.state_dict().items() if k in weights0 and not torch.equal(v, weights0[k])]
    assert len(moved) > len(weights0) // 2
    for name, value in weights0.items():
        torch.testing.assert_close(weights2[name], value, rtol=1e-5, atol=1e-6, msg=name)
    # The same batches in the same order, augmented the same way: the same model, the same test predictions.
    assert results2["global_step"] == results0["global_step"] == 4
    assert results2["best_checkpoint"] == results0["best_checkpoint"]
    for split in ("validation", "test"):
        assert results2[split]["confusion_matrix"] == results0[split]["confusion_matrix"]
        assert results2[split]["accuracy"] == pytest.approx(results0[split]["accuracy"])


def test_batched_fetch_equals_per_item_fetch(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "cache.npy", images)
    labels = rng.integers(0, 10, 40)
    rows = rng.permutation(40)[:30]  # a subset, out of order
    ds = UInt8Images(str(tmp_path / "cache.npy"), labels, rows)
    indices = [int(i) for i in rng.permutation(30)[:16]]
    batched = collate_uint8(ds.__getitems__(indices))
    per_item = collate_uint8([ds[i] for i in indices])
    assert torch.equal(batched["pixel_values"], per_item["pixel_values"])
    assert torch.equal(batched["labels"], per_item["labels"])
    assert torch.equal(batched["pixel_values"], torch.from_numpy(images[rows[indices]]))
    assert batched["labels"].tolist() == labels[rows[indices]].tolist()


def test_random_dihedral_applies_the_drawn_view_to_each_image(uint8_batch):
    out = random_dihedral(uint8_batch, torch.Generator().manual_seed(3))
    k = torch.randint(0, 8, (len(uint8_batch),), generator=torch.Generator().manual_seed(3))
    assert len(set(k.tolist())) == 8  # every view is exercised
    for i in range(len(uint8_batch)):
        assert torch.equal(out[i], dihedral_view(uint8_batch[i], int(k[i])))


def test_normalize_is_the_plain_formula_bit_for_bit(uint8_batch):
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255.0
    assert torch.equal(normalize(uint8_batch, MEAN, STD), (uint8_batch.float() - mean) / std)
    torch.testing.assert_close(normalize(uint8_batch, MEAN, STD), (uint8_batch / 255.0 - mean / 255) / (std / 255))
    assert normalize(uint8_batch, MEAN, STD, torch.bfloat16).dtype == torch.bfloat16


def test_random_affine_grid_matches_affine_grid(uint8_batch):
    x = normalize(uint8_batch, MEAN, STD)
    out = random_affine(x, generator=torch.Generator().manual_seed(5))
    # The same draws turned into the textbook affine_grid + grid_sample.
    u = torch.rand(len(x), 3, generator=torch.Generator().manual_seed(5))
    scale = 0.9 + 0.2 * u[:, 0]
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = (u[:, 1:] * 2 - 1) * 0.05 * 2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, x)  # it did move the pixels


def test_folded_d4_affine_equals_view_then_affine(uint8_batch):
    x = normalize(uint8_batch, MEAN, STD)
    fused = random_dihedral_affine(x, generator=torch.Generator().manual_seed(7))
    two_step_gen = torch.Generator().manual_seed(7)
    two_step = random_affine(random_dihedral(x, two_step_gen), generator=two_step_gen)
    torch.testing.assert_close(fused, two_step, rtol=1e-4, atol=1e-4)
    # Same random draws through the global generator, as the Trainer uses it.
    torch.manual_seed(11)
    fused = random_dihedral_affine(x)
    torch.manual_seed(11)
    torch.testing.assert_close(fused, random_affine(random_dihedral(x)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("d4, affine", [(True, True), (True, False), (False, True), (False, False)])
def test_trainer_pixels_equal_the_step_by_step_recipe(uint8_batch, d4, affine, tmp_path):
    from transformers import TrainingArguments

    from hfgal.models.loading import load_model
    from hfgal.train.trainer import GZ10Trainer, augmentation_seed

    tiny = load_model("convnextv2-tiny", config_overrides={"depths": [1, 1, 1, 1], "hidden_sizes": [8, 8, 8, 8]})
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, seed=13, report_to="none")
    trainer = GZ10Trainer(model=tiny.model, args=args, mean=MEAN, std=STD, d4_augment=d4, affine_augment=affine)
    fast = trainer.augment(uint8_batch)  # the first batch: step 0, micro-batch 0
    generator = torch.Generator().manual_seed(augmentation_seed(13, 0, 0, 0))
    x = random_dihedral(uint8_batch, generator) if d4 else uint8_batch  # unfused: view, normalise, jitter
    x = normalize(x, MEAN, STD)
    expected = random_affine(x, generator=generator) if affine else x
    torch.testing.assert_close(fast, expected, rtol=1e-4, atol=1e-4)
    if d4 or affine:  # the next micro-batch of the same step draws its own views
        assert not torch.allclose(trainer.augment(uint8_batch), fast)
    # Evaluation batches are only normalised.
    evaluated = trainer._pixels({"pixel_values": uint8_batch}, train=False)
    assert torch.equal(evaluated, normalize(uint8_batch, MEAN, STD))


def test_no_per_step_host_sync_by_default(tmp_path):
    from hfgal.train.args import parse_args

    _, _, args = parse_args(["--dataset", "synthetic:20", "--output_dir", str(tmp_path)])
    assert args.logging_nan_inf_filter is False  # the Trainer's filter reads the loss on the host every step
    assert args.accelerator_config.non_blocking is True  # pinned uint8 batches copied asynchronously
    assert args.dataloader_pin_memory is True
    # A CPU run pins nothing, so it does not ask for non-blocking copies (the Trainer would warn).
    _, _, args = parse_args(["--dataset", "synthetic:20", "--output_dir", str(tmp_path), "--use_cpu", "true"])
    assert args.accelerator_config.non_blocking is False and args.dataloader_pin_memory is False
