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

    def _pixels(self, inputs: dict[str, torch.Tensor], train: bool) -> torch.Tensor:
        x = inputs["pixel_values"]  # (B, 3, H, W) uint8 on device
        if train and self.d4_augment and self.affine_augment:
            # The D4 view folds into the affine sampling grid: one resampling pass instead of a permutation + one.
            x = random_dihedral_affine(normalize(x, self.mean, self.std))
        else:
            if train and self.d4_augment:
                x = random_dihedral(x)
            x = normalize(x, self.mean, self.std)
            if train and self.affine_augment:
                x = random_affine(x)
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


def predict_labels(trainer: Trainer, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true class ids over a split; each image counted exactly once across processes."""
    output = trainer.predict(dataset)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return np.asarray(logits).argmax(-1), np.asarray(output.label_ids)


def evaluation_sets(splits: dict[str, Any], training_args: TrainingArguments, test_each_eval: bool = False):
    """What the Trainer evaluates during training: validation, which selects the checkpoint.

    With `test_each_eval`, test is scored too at every evaluation (as `eval_test_*`), never to select: the selection
    metric is pointed at validation's (`validation_accuracy`), and the test scores only feed the labelled
    diagnostic of what selecting on test would have reported.
    """
    if not test_each_eval:
        return splits["validation"]
    metric = (training_args.metric_for_best_model or "loss").removeprefix("eval_")
    if not metric.startswith("validation_"):
        training_args.metric_for_best_model = f"validation_{metric}"
    return {"validation": splits["validation"], "test": splits["test"]}
