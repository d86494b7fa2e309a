"""`GZ10Trainer`: a `transformers.Trainer` whose batches arrive as uint8 and are augmented and normalised on the
training device; layer-wise learning-rate decay, D4 test-time averaging, DDP without the per-step unused-parameter
search, and evaluation that counts every test image once across processes."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from ..data.augment import dihedral_view, normalize, random_affine, random_dihedral, random_dihedral_affine
from ..data.cache import UInt8Images
from ..errors import HfgalError
from ..models.adapt import freeze_unused_parameters, layer_groups

logger = logging.getLogger(__name__)


class GZ10Trainer(Trainer):
    """Trainer whose batches are uint8 on the device: augmentation and normalisation happen there, batched.

    Args (beyond Trainer's):
        mean, std: normalisation of the model's pretraining.
        d4_augment, affine_augment: training-time augmentation switches.
        tta: average logits over the 8 D4 views in `prediction_step` (used for the final evaluations).
        layer_decay: layer-wise learning-rate decay factor, or None.
    """

    def __init__(
        self,
        *args,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        d4_augment: bool = True,
        affine_augment: bool = True,
        tta: bool = False,
        layer_decay: float | None = None,
        **kwargs,
    ):
        train_args, model, train_ds = kwargs.get("args"), kwargs.get("model"), kwargs.get("train_dataset")
        if train_args is not None and model is not None and train_args.world_size > 1:
            size = tuple(train_ds.images.shape[-2:]) if isinstance(train_ds, UInt8Images) else (224, 224)
            _prepare_for_ddp(model, train_args, size)
        super().__init__(*args, **kwargs)
        # Every image has one label: the loss is the mean over each micro-batch, which the Trainer divides by the
        # gradient-accumulation steps (and DDP averages over ranks). Left on, transformers 5.0 gives models whose
        # forward takes **kwargs (ViT, BEiT, ...) `num_items_in_batch` and skips that division, while its
        # `label_smoothing_factor` loss stays a per-micro-batch mean: loss and gradients grow with the accumulation
        # steps (4x with 4; later 5.x divide the smoothed loss by num_items_in_batch). tests/test_backbones.py checks
        # 1 vs 4 accumulation steps on 5.0 and on the installed version, and under DDP.
        self.model_accepts_loss_kwargs = False
        self.mean, self.std = mean, std
        self.d4_augment, self.affine_augment, self.tta = d4_augment, affine_augment, tta
        self.layer_decay = layer_decay
        self.channels_last = self.args.device.type == "cuda"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._generators: dict[torch.device, torch.Generator] = {}
        self._draw = (-1, 0)  # (optimizer step, micro-batch within it) of the last augmentation drawn

    def augmentation_generator(self, device: torch.device) -> torch.Generator:
        """The random stream of the next training batch's augmentation.

        Seeded by (seed, process index, optimizer step, micro-batch within the step): every DDP rank and every
        micro-batch draws its own views, as a per-sample transform in each rank's data loader would; the same seed
        draws the same ones again, and a resumed run draws exactly those of the uninterrupted run.
        """
        step = self.state.global_step
        micro = self._draw[1] + 1 if self._draw[0] == step else 0
        self._draw = (step, micro)
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device=device)
        return generator.manual_seed(augmentation_seed(self.args.seed, self.args.process_index, step, micro))

    def augment(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """A training batch as the model sees it: `(B, 3, H, W)` uint8 -> a random D4 view and a small zoom/shift of
        every image (as switched on), normalised."""
        x, generator = pixel_values, self.augmentation_generator(pixel_values.device)
        if self.d4_augment and self.affine_augment:
            # The D4 view folds into the affine sampling grid: one resampling pass instead of a permutation + one.
            return random_dihedral_affine(normalize(x, self.mean, self.std), generator=generator)
        if self.d4_augment:
            x = random_dihedral(x, generator=generator)
        x = normalize(x, self.mean, self.std)
        return random_affine(x, generator=generator) if self.affine_augment else x

    def _pixels(self, inputs: dict[str, torch.Tensor], train: bool) -> torch.Tensor:
        x = inputs["pixel_values"]  # (B, 3, H, W) uint8 on device
        x = self.augment(x) if train else normalize(x, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if inputs["pixel_values"].dtype == torch.uint8:
            inputs = {**inputs, "pixel_values": self._pixels(inputs, train=model.training)}
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if not self.tta:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        inputs = self._prepare_inputs(inputs)
        labels = inputs["labels"]
        with torch.no_grad(), self.compute_loss_context_manager():
            probs = 0
            for k in range(8):  # galaxies have no preferred orientation: average the 8 dihedral views
                view = {"pixel_values": dihedral_view(inputs["pixel_values"], k)}
                logits = model(pixel_values=self._pixels(view, train=False)).logits.float()
                probs = probs + logits.softmax(-1) / 8
            loss = torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels)
        if prediction_loss_only:
            return loss, None, None
        return loss, probs.log(), labels

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        import pickle

        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        except pickle.UnpicklingError as err:
            # The Trainer reads optimizer/scheduler/RNG states with torch.load(weights_only=True): a pickle that
            # would run code is refused there. Say which checkpoint, not a torch traceback.
            where = resume_from_checkpoint or f"a checkpoint in {self.args.output_dir}"
            reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
            raise HfgalError(
                f"checkpoint {where} holds a pickle that torch.load(weights_only=True) refuses ({reason}); "
                "delete it or pass --overwrite_output_dir true to start over"
            ) from None

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        # transformers steps once before it checks max_steps, so a run resumed from the checkpoint saved at
        # max_steps (killed during its final evaluation) would train one step too many. No batch, no step.
        if 0 < self.state.max_steps <= self.state.global_step:
            return [], None
        return super().get_batch_samples(epoch_iterator, num_batches, device)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The Trainer's scheduler, or the step schedule of `--lr_step_epochs` (x `--lr_step_gamma` at each epoch
        listed, after the warm-up; `hfgal.train.schedules`)."""
        if getattr(self.args, "lr_step_epochs", None) is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        from .schedules import step_decay_schedule

        batches = len(self.get_train_dataloader())
        self.lr_scheduler = step_decay_schedule(
            self.optimizer if optimizer is None else optimizer,
            steps_per_epoch=max(1, -(-batches // self.args.gradient_accumulation_steps)),
            milestones=self.args.lr_step_epochs,
            gamma=self.args.lr_step_gamma,
            warmup_steps=self.args.get_warmup_steps(num_training_steps),
        )
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def create_optimizer(self, model=None):
        if self.layer_decay is None or self.optimizer is not None:
            return super().create_optimizer(model) if model is not None else super().create_optimizer()
        model = self.model
        decay_names = set(self.get_decay_parameter_names(model))
        params = dict(model.named_parameters())
        groups = layer_groups(model)
        param_groups = []
        for depth, names in enumerate(groups):
            scale = self.layer_decay ** (len(groups) - 1 - depth)
            for wd in (True, False):
                chosen = [params[n] for n in names if params[n].requires_grad and ((n in decay_names) == wd)]
                if chosen:
                    param_groups.append(
                        {
                            "params": chosen,
                            "weight_decay": self.args.weight_decay if wd else 0.0,
                            "lr": self.args.learning_rate * scale,
                        }
                    )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer


def augmentation_seed(seed: int, process_index: int, step: int, micro_batch: int) -> int:
    """The seed of one training batch's augmentation: independent streams for every (seed, process, optimizer step,
    micro-batch), mixed by numpy's `SeedSequence` so that nearby integers give unrelated streams."""
    entropy = np.random.SeedSequence([seed, process_index, step, micro_batch])
    return int(entropy.generate_state(1, np.uint64)[0]) >> 1


def _prepare_for_ddp(model, args: TrainingArguments, image_size: tuple[int, int]) -> None:
    """Let DDP skip its per-step search for unused parameters (Trainer turns it on for every model).

    Parameters classification never reaches are frozen first, so `find_unused_parameters=False` is safe. An explicit
    `--ddp_find_unused_parameters` is left as given.
    """
    from accelerate import PartialState

    # Only plain DDP searches for unused parameters; FSDP / DeepSpeed shard the model and are left alone.
    if args.ddp_find_unused_parameters is not None or not PartialState().distributed_type.name.startswith("MULTI_"):
        return
    frozen = freeze_unused_parameters(model.to(args.device), image_size)
    if frozen:
        logger.warning("DDP: froze %s (no forward pass uses it); no per-step unused search", ", ".join(frozen))
    args.ddp_find_unused_parameters = False


def end_distributed() -> None:
    """Every process leaves together and the process group is destroyed, so no rank aborts at interpreter exit."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from accelerate import PartialState

        state = PartialState()
        state.wait_for_everyone()
        state.destroy_process_group()


def predict_probabilities(trainer: Trainer, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities `(N, C)` float64 and true class ids over a split; each image counted exactly once across
    processes. With TTA the probabilities are the mean over the 8 D4 views."""
    output = trainer.predict(dataset)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    logits = np.asarray(logits, dtype=np.float64)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    return probabilities / probabilities.sum(-1, keepdims=True), np.asarray(output.label_ids)


def evaluation_sets(splits: dict[str, Any], test_each_eval: bool = False):
    """What the Trainer evaluates during training: validation, which selects the checkpoint.

    With `test_each_eval`, test is scored too at every evaluation (as `eval_test_*`), never to select (the recipe's
    arguments then select on `validation_<metric>`, see `hfgal.train.args.parse_args`): the test scores only feed
    the labelled diagnostic of what selecting on test would have reported.
    """
    if not test_each_eval:
        return splits["validation"]
    return {"validation": splits["validation"], "test": splits["test"]}
