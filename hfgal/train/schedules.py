"""Learning-rate schedules the Trainer's `lr_scheduler_type` does not offer.

`step_decay_schedule` is the step schedule of the published GCNN recipe (Pandya et al. 2023: `MultiStepLR`, x0.1 at
epochs 25, 50 and 75), applied per optimizer step as the Trainer steps its scheduler, after an optional linear
warm-up. It is a `torch.optim.lr_scheduler.LambdaLR`, so the Trainer saves and restores it with its checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from ..errors import HfgalError


@dataclasses.dataclass
class StepDecay:
    """The learning-rate factor at optimizer step `step` (0-based): `step / warmup_steps` during the warm-up, then
    `gamma ** k`, k the number of milestone epochs already reached (epoch = step // steps_per_epoch).

    A plain object rather than a closure, so `LambdaLR.state_dict()` records its settings with the step count.
    """

    steps_per_epoch: int
    milestones: tuple[int, ...]
    gamma: float
    warmup_steps: int = 0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        epoch = step // self.steps_per_epoch
        return self.gamma ** sum(epoch >= milestone for milestone in self.milestones)


def parse_milestones(text: str | Sequence[int]) -> tuple[int, ...]:
    """Milestone epochs from `"25,50,75"` (or a sequence of ints): positive and increasing.

    Raises:
        HfgalError: not comma-separated positive integers in increasing order.
    """
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not all(p.isdigit() for p in parts):
            raise HfgalError(f"--lr_step_epochs {text!r} must be comma-separated epochs, e.g. 25,50,75")
        milestones = tuple(int(p) for p in parts)
    else:
        milestones = tuple(int(m) for m in text)
    if not milestones or min(milestones) < 1 or list(milestones) != sorted(set(milestones)):
        raise HfgalError(f"--lr_step_epochs {text!r} must be positive epochs in increasing order, e.g. 25,50,75")
    return milestones


def step_decay_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    milestones: str | Sequence[int],
    gamma: float = 0.1,
    warmup_steps: int = 0,
    last_epoch: int = -1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Multiply every group's learning rate by `gamma` at each milestone epoch, after a linear warm-up.

    Args:
        optimizer: the optimizer whose learning rates (its groups' `initial_lr`, else `lr`) are scaled.
        steps_per_epoch: optimizer steps per epoch (after gradient accumulation).
        milestones: epochs at which the rate is multiplied by `gamma` (`"25,50,75"` or ints).
        gamma: the factor at each milestone (0.1: ten times smaller).
        warmup_steps: linear warm-up from 0 over this many steps (0: none).
        last_epoch: the last step already taken (-1 for a new schedule), as for every torch scheduler.

    Returns:
        A `LambdaLR` to step once per optimizer step.

    Raises:
        HfgalError: bad milestones, steps per epoch, gamma or warm-up.
    """
    if steps_per_epoch < 1:
        raise HfgalError(f"steps per epoch {steps_per_epoch} must be at least 1 for --lr_step_epochs")
    if not gamma > 0:
        raise HfgalError(f"--lr_step_gamma {gamma} must be positive, e.g. 0.1")
    if warmup_steps < 0:
        raise HfgalError(f"warm-up steps {warmup_steps} must be >= 0")
    decay = StepDecay(steps_per_epoch, parse_milestones(milestones), float(gamma), int(warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, decay, last_epoch=last_epoch)
