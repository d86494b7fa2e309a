"""The step learning-rate schedule (`hfgal.train.schedules`): every step's rate against torch's own MultiStepLR and
the closed form, warm-up, several parameter groups, a resumed schedule, and bad settings."""

from __future__ import annotations

import pytest
import torch

from hfgal.errors import HfgalError
from hfgal.train.schedules import parse_milestones, step_decay_schedule


def optimizer(lrs=(0.1,)) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.AdamW(groups, lr=lrs[0])


def rates(opt, scheduler, steps: int) -> list[list[float]]:
    """The learning rates each optimizer step uses, stepping like the Trainer (optimizer, then scheduler)."""
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        scheduler.step()
    return seen


def test_every_step_matches_torch_multisteplr_stepped_per_epoch():
    steps_per_epoch, milestones = 7, [3, 5, 8]
    opt = optimizer()
    ours = rates(opt, step_decay_schedule(opt, steps_per_epoch=7, milestones="3,5,8", gamma=0.1), 10 * 7)
    reference_opt = optimizer()
    reference = torch.optim.lr_scheduler.MultiStepLR(reference_opt, milestones=milestones, gamma=0.1)
    per_epoch = []
    for _ in range(10):  # the published recipe's way: one scheduler step per epoch
        per_epoch.append(reference_opt.param_groups[0]["lr"])
        reference_opt.step()
        reference.step()
    expected = [per_epoch[step // steps_per_epoch] for step in range(10 * 7)]
    assert [r[0] for r in ours] == pytest.approx(expected, rel=1e-12)
    assert ours[0][0] == pytest.approx(0.1) and ours[-1][0] == pytest.approx(1e-4)  # three decays by 10


def test_warmup_then_steps_in_closed_form_for_each_parameter_group():
    opt = optimizer((0.2, 0.05))  # e.g. layer-wise decay: each group keeps its own base rate
    scheduler = step_decay_schedule(opt, steps_per_epoch=4, milestones=[2, 3], gamma=0.5, warmup_steps=3)
    for step, lrs in enumerate(rates(opt, scheduler, 20)):
        factor = step / 3 if step < 3 else 0.5 ** ((step // 4 >= 2) + (step // 4 >= 3))
        assert lrs == pytest.approx([0.2 * factor, 0.05 * factor], rel=1e-12, abs=1e-15), step


def test_a_resumed_schedule_continues_exactly_like_an_uninterrupted_one():
    settings = {"steps_per_epoch": 5, "milestones": "2,4", "gamma": 0.1, "warmup_steps": 4}
    opt = optimizer()
    uninterrupted = rates(opt, step_decay_schedule(opt, **settings), 30)

    first_opt = optimizer()
    first = step_decay_schedule(first_opt, **settings)
    before = rates(first_opt, first, 12)
    saved_scheduler, saved_optimizer = first.state_dict(), first_opt.state_dict()
    assert saved_scheduler["last_epoch"] == 12 and saved_scheduler["lr_lambdas"][0]["milestones"] == (2, 4)

    resumed_opt = optimizer()  # a new process: fresh optimizer and schedule, then the checkpoint's states
    resumed = step_decay_schedule(resumed_opt, **settings)
    resumed_opt.load_state_dict(saved_optimizer)
    resumed.load_state_dict(saved_scheduler)
    after = rates(resumed_opt, resumed, 18)
    assert [r[0] for r in before + after] == pytest.approx([r[0] for r in uninterrupted], rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"milestones": "25;50"}, "comma-separated epochs"),
        ({"milestones": "50,25"}, "increasing order"),
        ({"milestones": "0,25"}, "positive epochs"),
        ({"milestones": ""}, "positive epochs"),
        ({"gamma": 0.0}, "--lr_step_gamma 0.0 must be positive"),
        ({"steps_per_epoch": 0}, "steps per epoch 0"),
        ({"warmup_steps": -1}, "warm-up steps -1"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, fragment):
    settings = {"steps_per_epoch": 10, "milestones": "25,50,75", "gamma": 0.1, **kwargs}
    with pytest.raises(HfgalError, match=fragment) as info:
        step_decay_schedule(optimizer(), **settings)
    assert "\n" not in str(info.value)


def test_milestones_parse_from_the_flag_text():
    assert parse_milestones("25, 50,75") == (25, 50, 75)
    assert parse_milestones([25, 50]) == (25, 50)
