"""Real multi-process runs on the CPU (DDP over gloo, launched by `accelerate launch --multi_gpu`): every test image
counted once, and every rank drawing its own augmentations (reproducibly per seed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures.finetune import FINETUNE, REPO_ROOT, finetune_args, launch_two_ranks, subprocess_env

pytestmark = pytest.mark.slow  # two processes each


def test_two_process_ddp_counts_each_test_image_once(tmp_path, sample_dir, image_cache):
    out = tmp_path / "ddp"
    # DINOv2 carries a parameter classification never uses (mask_token): DDP without the per-step search for
    # unused parameters only works because hfgal freezes it first.
    args = finetune_args(out, sample_dir, "dinov2", max_steps=3, per_device_eval_batch_size=3)
    proc = launch_two_ranks([str(FINETUNE), *args], subprocess_env(HFGAL_CACHE=str(image_cache), OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "find_unused_parameters=True was specified" not in proc.stderr
    assert "DDP: froze dinov2.embeddings.mask_token" in proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["hardware"]["num_processes"] == 2  # both ranks ran
    assert results["global_step"] == 3
    # 3 test images over 2 ranks: the distributed sampler's padding duplicate would make 4.
    assert np.asarray(results["test"]["confusion_matrix"]).sum() == 3
    assert results["test"]["num_examples"] == 3


def _augmentations(out: str, seed: str) -> None:
    # Run on each rank by the test below: the GZ10Trainer's augmentation of one fixed batch, for the first two
    # micro-batches of the first step, saved per rank.
    from accelerate import PartialState
    from transformers import TrainingArguments

    from hfgal.models.loading import load_model
    from hfgal.train.trainer import GZ10Trainer, end_distributed

    tiny = load_model("convnextv2-tiny", config_overrides={"depths": [1, 1, 1, 1], "hidden_sizes": [8, 8, 8, 8]})
    args = TrainingArguments(output_dir=out, use_cpu=True, seed=int(seed), report_to="none")
    trainer = GZ10Trainer(model=tiny.model, args=args, mean=(0.5,) * 3, std=(0.25,) * 3)
    batch = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 16, 16), dtype=np.uint8))
    views = torch.stack([trainer.augment(batch), trainer.augment(batch)])
    torch.save(views, Path(out) / f"rank{PartialState().process_index}.pt")
    end_distributed()


def test_every_ddp_rank_draws_its_own_augmentations_reproducibly(tmp_path):
    env = subprocess_env(OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO_ROOT}:{REPO_ROOT / 'tests'}")
    draws = {}
    for attempt, seed in (("first", 7), ("again", 7), ("other-seed", 8)):
        out = tmp_path / attempt
        out.mkdir()
        proc = launch_two_ranks([__file__, "augmentations", str(out), str(seed)], env)
        assert proc.returncode == 0, proc.stderr[-4000:]
        draws[attempt] = [torch.load(out / f"rank{rank}.pt") for rank in (0, 1)]
    (rank0, rank1), (again0, again1) = draws["first"], draws["again"]
    # The same images on two ranks get different views (as a per-sample transform in each rank's loader would)...
    assert not torch.allclose(rank0, rank1)
    # ...and so do two micro-batches of one step on one rank...
    assert not torch.allclose(rank0[0], rank0[1])
    # ...while the same seed draws the same ones again, and another seed other ones.
    assert torch.equal(rank0, again0) and torch.equal(rank1, again1)
    assert not torch.allclose(draws["other-seed"][0], rank0)


if __name__ == "__main__" and sys.argv[1:2] == ["augmentations"]:
    _augmentations(*sys.argv[2:4])
