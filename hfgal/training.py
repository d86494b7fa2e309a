"""Fine-tuning on GZ10 with `transformers.Trainer`: arguments, the uint8 data path, on-device augmentation.

The recipe `recipes/finetune.py` is a linear script over these pieces.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments

from .augment import normalize, random_affine, random_dihedral, random_dihedral_affine
from .constants import DEFAULT_DATASET
from .utils import HfgalError, OneLineUsageErrors

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- arguments


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="convnextv2-tiny",
        metadata={
            "help": "Hub id (transformers or timm/...), local folder, named config (convnextv2-tiny, vit-base, ...) "
            "or timm:<architecture>",
            "aliases": ["--model"],
        },
    )
    init: str = field(
        default="pretrained",
        metadata={"help": "pretrained: load the weights; scratch: same architecture, random weights"},
    )
    model_config_overrides: str | None = field(
        default=None, metadata={"help": "JSON of config attributes to change, e.g. '{\"hidden_sizes\": [...]}'"}
    )
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision of the model"})
    image_size: str | None = field(
        default=None, metadata={"help": "input side (e.g. 224) or HxW; default: the model's own processor/config"}
    )
    linear_probe: bool = field(default=False, metadata={"help": "freeze the backbone and train only the head"})
    layer_decay: float | None = field(
        default=None, metadata={"help": "layer-wise learning-rate decay (e.g. 0.75); None disables it"}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "allow custom model code from the Hub (runs code; off by default)"}
    )


@dataclass
class DataArguments:
    dataset: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": "anything hfgal.load_gz10 takes: Hub id, save_to_disk folder, h5, imagefolder, synthetic:N"},
    )
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub revision of the dataset"})
    split_seed: int = field(default=42, metadata={"help": "seed of the train/validation/test split (when split here)"})
    split_scheme: str = field(default="default", metadata={"help": "default (80/10/10, duplicate-aware) or poster"})
    d4_augment: bool = field(default=True, metadata={"help": "random dihedral (D4) view of every training image"})
    affine_augment: bool = field(default=True, metadata={"help": "small random translation and scale"})
    tta: bool = field(default=False, metadata={"help": "average predictions over the 8 D4 views at evaluation"})
    image_cache_dir: str | None = field(
        default=None, metadata={"help": "folder of the decoded uint8 image cache (default: $HF_HOME/hfgal)"}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "use only the first N training images"})


@dataclass
class GZ10TrainingArguments(TrainingArguments):
    """TrainingArguments with GZ10 defaults and hfgal's own switches (every Trainer flag still works)."""

    output_dir: str | None = field(default="outputs/gz10-run", metadata={"help": "run folder"})
    eval_strategy: str = field(default="epoch", metadata={"help": "when to evaluate on validation"})
    save_strategy: str = field(default="epoch", metadata={"help": "when to checkpoint"})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "keep the best-on-validation checkpoint"})
    metric_for_best_model: str | None = field(default="accuracy", metadata={"help": "validation metric to select on"})
    greater_is_better: bool | None = field(default=True, metadata={"help": "larger metric is better"})
    save_total_limit: int | None = field(default=2, metadata={"help": "checkpoints kept (the best is always kept)"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    warmup_steps: float = field(default=0.1, metadata={"help": "warmup steps, or a fraction of training if < 1"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "cosine, linear, ..."})
    label_smoothing_factor: float = field(default=0.1, metadata={"help": "label smoothing of the loss"})
    num_train_epochs: float = field(default=30.0, metadata={"help": "epochs"})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "batch per device"})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "eval batch per device"})
    logging_steps: float = field(default=20, metadata={"help": "log every N steps"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep pixel_values/labels as they are"})
    # The Trainer's NaN filter reads the loss on the host at every step, a device sync that stops the host from
    # queueing the next batch; without it a NaN loss is logged as NaN (training itself is unchanged).
    logging_nan_inf_filter: bool = field(default=False, metadata={"help": "drop NaN/inf losses from the log"})
    # Pinned uint8 batches are copied to the GPU asynchronously, overlapping with the previous step.
    accelerator_config: dict | str | None = field(
        default_factory=lambda: {"non_blocking": True}, metadata={"help": "Accelerate settings (JSON or file)"}
    )
    # hfgal's own
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "stop after N evaluations without validation improvement"}
    )
    carbon_tracking: bool = field(default=True, metadata={"help": "measure energy and CO2 with codecarbon"})
    carbon_country_iso_code: str = field(default="USA", metadata={"help": "ISO 3166-1 alpha-3 code of the grid"})
    carbon_region: str | None = field(default=None, metadata={"help": "region of the grid (e.g. california)"})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "start over: delete checkpoints and results already in output_dir"}
    )
    license: str = field(default="apache-2.0", metadata={"help": "licence written in the model card"})
    trained_run: str | None = field(
        default=None,
        metadata={
            "help": "a finished run folder whose training this run shares: every setting but the evaluation ones "
            "(e.g. --tta) must match; its selected model is evaluated here instead of being trained again"
        },
    )

    def __post_init__(self):
        if self.use_cpu and self.accelerator_config == {"non_blocking": True}:
            self.accelerator_config = {"non_blocking": False}  # no pinned memory on a CPU run, nothing to overlap
        super().__post_init__()


ARG_CLASSES = (ModelArguments, DataArguments, GZ10TrainingArguments)


class RecipeArgumentParser(OneLineUsageErrors, HfArgumentParser):
    """HfArgumentParser whose usage errors are one line instead of the usage of every Trainer flag."""


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise HfgalError(f"--config {path}: no such file") from None
    except yaml.YAMLError as err:
        raise HfgalError(f"--config {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise HfgalError(f"--config {path}: expected a mapping of argument names to values")
    return data


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, GZ10TrainingArguments]:
    """Parse `[--config recipe.yaml] [--flag value ...]`: YAML sets defaults, the command line overrides them.

    Raises:
        HfgalError: unknown YAML keys or command-line flags, malformed values.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = RecipeArgumentParser(ARG_CLASSES)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise HfgalError("--config needs a path to a YAML recipe")
        path = argv[i + 1]
        del argv[i : i + 2]
        data = _read_yaml(path)
        known = {f.name for cls in ARG_CLASSES for f in fields(cls) if f.init}
        unknown = sorted(set(data) - known - {"model"})
        if unknown:
            raise HfgalError(f"--config {path}: unknown key(s) {', '.join(unknown)}; see --help for valid names")
        if "model" in data:
            data["model_name_or_path"] = data.pop("model")
        parser.set_defaults(
            **{
                k: (json.dumps(v) if k == "model_config_overrides" and isinstance(v, dict) else v)
                for k, v in data.items()
            }
        )
    try:
        model_args, data_args, training_args, unknown = parser.parse_args_into_dataclasses(
            args=argv, return_remaining_strings=True
        )
    except ValueError as err:
        raise HfgalError(str(err).splitlines()[0]) from None
    if unknown:
        raise HfgalError(f"unknown argument(s) {' '.join(unknown)}; see --help for the valid flags")
    if model_args.init not in ("pretrained", "scratch"):
        raise HfgalError(f"--init {model_args.init!r} is not valid; use pretrained or scratch")
    if training_args.hub_token:
        # The Trainer pickles its arguments into training_args.bin of the run and of every checkpoint.
        raise HfgalError(
            "--hub_token would be saved in every checkpoint (training_args.bin); set HF_TOKEN or run "
            "`hf auth login` instead"
        )
    return model_args, data_args, training_args


def config_overrides(model_args: ModelArguments) -> dict[str, Any]:
    if not model_args.model_config_overrides:
        return {}
    try:
        value = json.loads(model_args.model_config_overrides)
    except json.JSONDecodeError as err:
        raise HfgalError(f"--model_config_overrides is not valid JSON ({err.msg}); pass a JSON object") from None
    if not isinstance(value, dict):
        raise HfgalError("--model_config_overrides must be a JSON object, e.g. '{\"depths\": [1, 1, 1, 1]}'")
    return value


def parse_image_size(value: str | None, tta: bool, d4_augment: bool = False) -> tuple[int, int] | None:
    """`"224"` -> (224, 224); `"224x192"` -> (224, 192); D4 views (TTA or augmentation) need a square image."""
    if value is None:
        return None
    try:
        parts = [int(p) for p in str(value).lower().split("x")]
    except ValueError:
        raise HfgalError(f"--image_size {value!r} is not valid; use a side (224) or HxW (224x192)") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8:
        raise HfgalError(f"--image_size {value!r} is not valid; use a side >= 8 (224) or HxW (224x192)")
    if (tta or d4_augment) and parts[0] != parts[1]:
        flag = "--tta" if tta else "--d4_augment (on by default)"
        raise HfgalError(f"{flag} needs a square image (D4 views rotate it); --image_size {value} is not square")
    return parts[0], parts[1]


def resolved_config(model_args, data_args, training_args) -> dict[str, Any]:
    """Every argument of the run as one flat mapping (no token), re-usable with `--config`."""
    config: dict[str, Any] = {}
    config.update(asdict(model_args))
    config.update(asdict(data_args))
    train = training_args.to_dict()
    for key in list(train):
        if "token" in key or key in ("local_rank",) or key.startswith("_"):
            train.pop(key)
    init_fields = {f.name for f in fields(GZ10TrainingArguments) if f.init}
    config.update({k: v for k, v in train.items() if k in init_fields})
    return config


# --------------------------------------------------------------------------- data path


class UInt8Images(torch.utils.data.Dataset):
    """A GZ10 split as a memory-mapped uint8 array: whole batches are sliced at once (`__getitems__`).

    The memmap is opened lazily in each process, so DataLoader workers never copy the array through pickling.
    """

    def __init__(self, cache_path: str, labels: np.ndarray, rows: np.ndarray | None = None):
        self.cache_path = cache_path
        self.labels = np.asarray(labels, dtype=np.int64)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels) if self.rows is None else len(self.rows)

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.cache_path, mmap_mode="r")
        return self._images

    def __getstate__(self):
        return {**self.__dict__, "_images": None}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        if self.rows is not None:
            idx = self.rows[idx]
        # One sorted fancy-index read of the memmap, then back to the sampler's order.
        order = np.argsort(idx, kind="stable")
        pixels = np.empty((len(idx), *self.images.shape[1:]), dtype=np.uint8)
        pixels[order] = self.images[idx[order]]
        return {"pixel_values": torch.from_numpy(pixels), "labels": torch.from_numpy(self.labels[idx])}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([index])
        return {k: v[0] for k, v in batch.items()}


def collate_uint8(batch: Any) -> dict[str, torch.Tensor]:
    """Collator for `UInt8Images`: batches arrive whole from `__getitems__`; single items are stacked."""
    if isinstance(batch, dict):
        return batch  # (B, 3, H, W) uint8 and (B,) int64
    return {k: torch.stack([item[k] for item in batch]) for k in batch[0]}


def cached_split(ds, size: tuple[int, int], cache_dir: str | None, max_samples: int | None = None):
    """`(UInt8Images, seconds spent building the cache)` for one GZ10 split."""
    from .cache import uint8_cache

    images, seconds = uint8_cache(ds, size, cache_dir)
    labels = np.asarray(ds.select_columns(["label"]).with_format("numpy")["label"], dtype=np.int64)
    rows = np.arange(max_samples) if max_samples is not None and max_samples < len(labels) else None
    return UInt8Images(images.filename, labels, rows), seconds


# --------------------------------------------------------------------------- trainer


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
        from .augment import dihedral_view

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
        from .models import layer_groups

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
    from .models import freeze_unused_parameters

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


# --------------------------------------------------------------------------- results


def hardware_info(num_processes: int = 1, num_machines: int = 1) -> dict[str, Any]:
    """CPU/GPU names and counts of this machine, and the size of the run."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if gpu_count else None,
        "gpu_count": gpu_count,
        "num_processes": num_processes,
        "num_machines": num_machines,
    }


def versions_info() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("hfgal", "torch", "transformers", "timm", "datasets", "accelerate", "codecarbon"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def predict_labels(trainer: Trainer, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true class ids over a split; each image counted exactly once across processes."""
    output = trainer.predict(dataset)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return np.asarray(logits).argmax(-1), np.asarray(output.label_ids)
