"""The recipe's arguments: dataclasses parsed by `HfArgumentParser` (the training ones extend `TrainingArguments`, so
every Trainer flag works), `--config recipe.yaml` defaults, and the resolved config written next to every run."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

from ..constants import DEFAULT_DATASET
from ..data.published import check_split_request
from ..errors import HfgalError, OneLineUsageErrors
from ..hub.access import check_push_access

logger = logging.getLogger(__name__)


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
    split_scheme: str | None = field(
        default=None,
        metadata={
            "help": "default (80/10/10, sky neighbours kept together) or poster (90/10 random) for sources hfgal "
            "splits (h5, zenodo, synthetic); unset: the source's honest default (Hub datasets keep their published "
            "split and refuse an explicit scheme)"
        },
    )
    split_separation_arcsec: float | None = field(
        default=None,
        metadata={"help": "linking radius of the default split, in arcsec (unset: the 67.072 arcsec cutout width)"},
    )
    d4_augment: bool = field(default=True, metadata={"help": "random dihedral (D4) view of every training image"})
    affine_augment: bool = field(default=True, metadata={"help": "small random translation and scale"})
    tta: bool = field(default=False, metadata={"help": "average predictions over the 8 D4 views at evaluation"})
    image_cache_dir: str | None = field(
        default=None, metadata={"help": "folder of the decoded uint8 image cache (default: $HF_HOME/hfgal)"}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "use only the first N training images"})
    preprocessing: str = field(
        default="resize",
        metadata={
            "help": "resize: the whole image resized to the model's input (hfgal); processor: the checkpoint's own "
            "image processor's resize and centre crop (the seed study's way, the poster protocol)"
        },
    )
    test_each_eval: bool = field(
        default=False,
        metadata={
            "help": "also evaluate test at every evaluation, never to select: records what choosing the checkpoint "
            "on test (the seed study's selection) would report, as a labelled diagnostic"
        },
    )


@dataclass
class GZ10TrainingArguments(TrainingArguments):
    """TrainingArguments with GZ10 defaults and hfgal's own switches (every Trainer flag still works)."""

    output_dir: str | None = field(
        default=None, metadata={"help": "run folder (default: outputs/<model>, one folder per model)"}
    )
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
    lr_step_epochs: str | None = field(
        default=None,
        metadata={
            "help": "step schedule instead of --lr_scheduler_type: multiply the learning rate by --lr_step_gamma at "
            "these epochs, e.g. 25,50,75 (the published GCNN recipe), after the warm-up"
        },
    )
    lr_step_gamma: float = field(default=0.1, metadata={"help": "factor of the step schedule at each epoch listed"})
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
    carbon_tracking_mode: str = field(
        default="auto",
        metadata={"help": "machine, process, or auto: process when --concurrent_runs > 1, else machine"},
    )
    concurrent_runs: int = field(
        default=1, metadata={"help": "runs sharing this machine at the same time (set by recipes/study.py)"}
    )
    gpu_share: float = field(
        default=1.0,
        metadata={"help": "share of the visible GPUs' energy booked to this run (1/N when N runs share them)"},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "start over: delete checkpoints and results already in output_dir"}
    )
    license: str = field(default="apache-2.0", metadata={"help": "licence written in the model card"})
    protocol: str | None = field(
        default=None, metadata={"help": "the study protocol the run follows (poster, honest), recorded in its card"}
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch threads per process (default: $HFGAL_NUM_THREADS, else the available cores / local "
            "processes; a launcher's OMP_NUM_THREADS=1 is not taken as a choice)"
        },
    )
    trained_run: str | None = field(
        default=None,
        metadata={
            "help": "a finished run folder whose training this run shares: every setting but the evaluation ones "
            "(e.g. --tta) must match; its selected model is evaluated here instead of being trained again"
        },
    )

    # `--push_to_hub true` as the user asked it: hfgal publishes the finished run folder once, as one commit
    # (`hfgal.hub.push.push_run`), so the Trainer's own push (a repo at start, a commit at every save) stays off.
    publish_to_hub: bool = field(init=False, default=False)

    def __post_init__(self):
        self.publish_to_hub, self.push_to_hub = bool(self.push_to_hub), False
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise HfgalError(f"--cpu_threads {self.cpu_threads} is not valid; use a whole number >= 1, or omit it")
        if self.use_cpu and self.accelerator_config == {"non_blocking": True}:
            self.accelerator_config = {"non_blocking": False}  # no pinned memory on a CPU run, nothing to overlap
        super().__post_init__()


ARG_CLASSES = (ModelArguments, DataArguments, GZ10TrainingArguments)

# Trainer flags the recipe does not follow, and why: each is refused in one line rather than accepted and ignored.
# (`--hub_strategy end` and `--hub_revision` are honoured: the finished run folder is pushed once, at the end.)
REFUSED_FLAGS = {
    "do_train": "the recipe always trains, selects the checkpoint on validation and evaluates test once",
    "do_eval": "the recipe always evaluates validation (to select) and test (once, at the end)",
    "do_predict": "the recipe always evaluates test once, at the end; to score a finished run use hfgal evaluate",
    "hub_always_push": "the finished run folder is pushed once, as one commit, at the end",
}
RUNS_ROOT = "outputs"  # where a run folder goes when --output_dir is not given: outputs/<model>


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


def recipe_path(config: str) -> str:
    """The YAML file `--config` names: a path, or the name of a recipe shipped with hfgal (`offline`)."""
    from pathlib import Path

    from ..io import shipped_file

    if Path(config).exists() or "/" in config or config.endswith((".yaml", ".yml")):
        return config
    found = shipped_file("recipes", f"{config}.yaml")
    if found is None:
        raise HfgalError(f"--config {config}: no such file and no recipe of that name shipped with hfgal (offline)")
    return str(found)


def default_output_dir(model: str) -> str:
    """`outputs/<model>`: one run folder per model (`facebook/dinov2-base` -> `outputs/facebook--dinov2-base`)."""
    from pathlib import Path

    name = Path(model).name if Path(model).is_dir() else model.replace("/", "--").replace(":", "-")
    return f"{RUNS_ROOT}/{name}"


def _given(flag: str, argv: list[str], data: dict[str, Any]) -> bool:
    return flag in data or any(a == f"--{flag}" or a.startswith(f"--{flag}=") for a in argv)


def parse_args(
    argv: list[str] | None = None, prog: str | None = None
) -> tuple[ModelArguments, DataArguments, GZ10TrainingArguments]:
    """Parse `[--config recipe.yaml] [--flag value ...]`: YAML sets defaults, the command line overrides them.

    Args:
        argv: the arguments (default `sys.argv[1:]`).
        prog: the command's name in `--help` and usage errors.

    Raises:
        HfgalError: unknown YAML keys or command-line flags, malformed values, Trainer flags the recipe refuses.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = RecipeArgumentParser(ARG_CLASSES, prog=prog)
    parser.add_argument(
        "--config",
        default=None,
        help="YAML recipe setting defaults for any of these flags (flags given here override it): a path, or the "
        "name of a recipe shipped with hfgal (offline)",
    )
    data: dict[str, Any] = {}
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise HfgalError("--config needs a path to a YAML recipe")
        path = recipe_path(argv[i + 1])
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
    refused = [flag for flag in REFUSED_FLAGS if _given(flag, argv, data)]
    if refused:
        raise HfgalError(f"--{refused[0]} is not used by this recipe: {REFUSED_FLAGS[refused[0]]}; drop it")
    try:
        model_args, data_args, training_args, _, unknown = parser.parse_args_into_dataclasses(
            args=argv, return_remaining_strings=True
        )
    except ValueError as err:
        raise HfgalError(str(err).splitlines()[0]) from None
    if unknown:
        raise HfgalError(f"unknown argument(s) {' '.join(unknown)}; see --help for the valid flags")
    strategy = getattr(training_args.hub_strategy, "value", training_args.hub_strategy)
    if _given("hub_strategy", argv, data) and strategy != "end":
        raise HfgalError(
            f"--hub_strategy {strategy} is not supported: the finished run folder is pushed once, as one commit, "
            "at the end (--hub_strategy end); drop the flag"
        )
    if not _given("output_dir", argv, data):
        training_args.output_dir = default_output_dir(model_args.model_name_or_path)
    if data_args.test_each_eval:  # test is scored beside validation at every evaluation: select on validation's
        metric = (training_args.metric_for_best_model or "loss").removeprefix("eval_")
        training_args.metric_for_best_model = metric if metric.startswith("validation_") else f"validation_{metric}"
    check_args(model_args, data_args, training_args)
    return model_args, data_args, training_args


def check_args(model_args: ModelArguments, data_args: DataArguments, training_args: GZ10TrainingArguments) -> None:
    """The checks no single dataclass can make: values that depend on each other.

    Raises:
        HfgalError: naming the flag and what to pass instead.
    """
    if model_args.init not in ("pretrained", "scratch"):
        raise HfgalError(f"--init {model_args.init!r} is not valid; use pretrained or scratch")
    check_split_request(data_args.split_scheme, data_args.split_separation_arcsec)
    if training_args.lr_step_epochs is not None:
        from .schedules import parse_milestones

        parse_milestones(training_args.lr_step_epochs)
        if not training_args.lr_step_gamma > 0:
            raise HfgalError(f"--lr_step_gamma {training_args.lr_step_gamma} must be positive, e.g. 0.1")
    if data_args.preprocessing not in ("resize", "processor"):
        raise HfgalError(f"--preprocessing {data_args.preprocessing!r} is not valid; use resize or processor")
    if data_args.preprocessing == "processor" and model_args.image_size:
        raise HfgalError("--preprocessing processor takes the size from the model's processor; drop --image_size")
    if training_args.hub_token:
        # The Trainer pickles its arguments into training_args.bin of the run and of every checkpoint.
        raise HfgalError(
            "--hub_token would be saved in every checkpoint (training_args.bin); set HF_TOKEN or run "
            "`hf auth login` instead"
        )


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
    """Every argument of the run as one flat mapping, re-usable with `--config`: no token, and none of the Trainer
    flags the recipe refuses (they say nothing about the run)."""
    config: dict[str, Any] = {}
    config.update(asdict(model_args))
    config.update(asdict(data_args))
    train = training_args.to_dict()
    for key in list(train):
        if "token" in key or key in ("local_rank", "hub_strategy", *REFUSED_FLAGS) or key.startswith("_"):
            train.pop(key)
    init_fields = {f.name for f in fields(GZ10TrainingArguments) if f.init}
    config.update({k: v for k, v in train.items() if k in init_fields})
    return config


def push_target(training_args: GZ10TrainingArguments) -> str | None:
    """The Hub repo a run publishes to at its end (`--push_to_hub true --hub_model_id USER/NAME`), or None.

    Everything a push needs is checked now, before hours of training; the finished run folder is pushed once, as one
    commit, by `hfgal.hub.push.push_run`.

    Raises:
        HfgalError: no or a bad repo id, no token, or the Hub switched off.
    """
    if not training_args.publish_to_hub:
        return None
    if not training_args.hub_model_id:
        raise HfgalError("--push_to_hub needs --hub_model_id USER/NAME")
    check_push_access(training_args.hub_model_id, flag="--push_to_hub", instead="push later with hfgal push")
    return training_args.hub_model_id
