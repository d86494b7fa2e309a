"""Model cards of fine-tuned runs, rendered from `hub_cards/model_card.md` by pure functions of their results, and
the checks of a run folder before it is carded or pushed (the dataset card lives in `hfgal.dataset_card`).

The numbers live in the card metadata (`model-index`, `co2_eq_emissions`) as well as in the prose, so the Hub's
leaderboards and carbon filters read them without parsing Markdown.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .constants import (
    DEFAULT_DATASET,
    GZ10_CITATION,
    GZ10_CLASSES,
    HFGAL_CITATION,
)
from .utils import HfgalError, atomic_write_text, hub_card_template

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"
CARD_FILE = "README.md"
CONFUSION_FILE = "confusion_matrix.png"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"

SPLITS = ("train", "validation", "test")
MODEL_TAGS = ["image-classification", "astronomy", "galaxy-morphology", "hfgal"]


# --------------------------------------------------------------------------- formatting


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * float(x):.{digits}f} %"


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{float(x):.{digits}f}"


def _sig(x: float | None) -> str:
    # Carbon numbers span 1e-7 kg (a CPU smoke run) to kilograms: significant digits, not fixed decimals.
    return "n/a" if x is None else f"{float(x):.3g}"


def _hms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(float(seconds)):
        return "n/a"
    total = int(round(float(seconds)))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def hub_dataset_id(dataset: str | None) -> str | None:
    """The Hub dataset id a run or split was made from, or None for synthetic data and local files.

    Args:
        dataset: `results["dataset"]` / `split_info["source"]`: a Hub id, `synthetic:N`, a folder or an h5 path.

    Returns:
        `dataset` when it reads as `namespace/name` and is not a local path, else None.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not dataset or dataset.startswith(("synthetic", ".", "/", "~")) or dataset.count("/") != 1:
        return None
    if dataset.lower().endswith((".h5", ".hdf5")) or Path(dataset).exists():
        return None
    try:
        validate_repo_id(dataset)
    except HFValidationError:
        return None
    return dataset


# --------------------------------------------------------------------------- run folders


def check_run_dir(run_dir: str | os.PathLike, *, for_push: bool = False) -> tuple[Path, dict, dict]:
    """Check that `run_dir` is a finished fine-tuning run and read its results and config.

    Args:
        run_dir: the recipe's OUTPUT_DIR.
        for_push: also require the files a Hub repo needs to load (`config.json`, `preprocessor_config.json`).

    Returns:
        `(run_dir, results, config)`.

    Raises:
        HfgalError: naming the folder and what is missing or broken.
    """
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HfgalError(f"{run_dir}: no such run folder; pass the --output_dir of a finished recipes/finetune.py run")
    results_path = run_dir / RESULTS_FILE
    if not results_path.is_file():
        raise HfgalError(f"{run_dir}: no {RESULTS_FILE} — is the run finished? run recipes/finetune.py first")
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HfgalError(f"{results_path}: not valid JSON ({err}); rerun the evaluation of this run") from None
    if not isinstance(results, dict) or not results.get("complete"):
        raise HfgalError(
            f"{run_dir}: {RESULTS_FILE} is not marked complete — the run did not finish; relaunch "
            "recipes/finetune.py with --resume_from_checkpoint true"
        )
    for split in ("test", "validation"):
        metrics = results.get(split)
        if not isinstance(metrics, dict) or "accuracy" not in metrics or "macro_f1" not in metrics:
            raise HfgalError(f"{results_path}: no {split} metrics; rerun the evaluation of this run")
    if not _weight_files(run_dir):
        raise HfgalError(
            f"{run_dir}: no {WEIGHTS_FILE} (or sharded weights with {WEIGHTS_INDEX_FILE}); the final model was not "
            "saved — rerun recipes/finetune.py"
        )
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise HfgalError(f"{run_dir}: no {CONFIG_FILE} (the resolved recipe config); rerun recipes/finetune.py")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise HfgalError(f"{config_path}: not valid YAML ({str(err).splitlines()[0]}); restore the file") from None
    if not isinstance(config, dict):
        raise HfgalError(f"{config_path}: expected a mapping of recipe arguments; restore the file")
    if for_push:
        for name in ("config.json", "preprocessor_config.json"):
            if not (run_dir / name).is_file():
                raise HfgalError(f"{run_dir}: no {name}, so the model could not be loaded from the Hub; rerun the run")
    return run_dir, results, config


def _weight_files(run_dir: Path) -> list[str]:
    """Names of the final weights: one safetensors file, or the index and every shard it lists."""
    if (run_dir / WEIGHTS_FILE).is_file():
        return [WEIGHTS_FILE]
    index = run_dir / WEIGHTS_INDEX_FILE
    if not index.is_file():
        return []
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
        return []
    if not shards or not all((run_dir / s).is_file() for s in shards):
        return []
    return [WEIGHTS_INDEX_FILE, *shards]


# --------------------------------------------------------------------------- model card


def render_model_card(
    results: dict,
    config: dict,
    repo_id: str | None = None,
    *,
    confusion_image: str | None = CONFUSION_FILE,
) -> ModelCard:
    """Render a model card from a run's `results.json` and resolved `config.yaml` (no live model needed).

    Args:
        results: the parsed results.json of a finished run (schema in the run-folder contract).
        config: the parsed config.yaml (flat mapping of recipe arguments); `license` sets the card's licence.
        repo_id: the Hub model id the card will live in (used for the model name and the usage snippets).
        confusion_image: relative path of the confusion-matrix PNG, or None when the run has none.

    Returns:
        A `huggingface_hub.ModelCard` with `model-index` (test accuracy and macro-F1) and `co2_eq_emissions`
        (grams) metadata.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    test, validation = results["test"], results["validation"]
    model = str(results.get("model") or "")
    base_model = results.get("base_model") or None
    dataset = str(results.get("dataset") or "")
    dataset_id = hub_dataset_id(dataset)
    synthetic = dataset.startswith("synthetic")
    is_timm = model.startswith("timm") or "timm" in str(results.get("model_type") or "")
    run_name = str(results.get("run_name") or "")
    title = repo_id.split("/")[-1] if repo_id else (run_name or f"{model} on Galaxy10 DECaLS")
    repo_ref = repo_id or f"path/to/{run_name or 'run'}"
    zoobot = "zoobot" in f"{base_model or ''} {model}".lower()

    if dataset_id:
        dataset_type, dataset_name = dataset_id, "Galaxy10 DECaLS"
    elif synthetic:
        dataset_type, dataset_name = "synthetic", f"Synthetic GZ10-like galaxies ({dataset})"
    else:
        dataset_type, dataset_name = "galaxy10_decals", "Galaxy10 DECaLS (local copy)"
    common = {
        "task_type": "image-classification",
        "task_name": "Image Classification",
        "dataset_type": dataset_type,
        "dataset_name": dataset_name,
        "dataset_split": "test",
        "dataset_revision": results.get("dataset_revision"),
    }
    eval_results = [
        EvalResult(**common, metric_type="accuracy", metric_name="Accuracy", metric_value=test["accuracy"]),
        EvalResult(
            **common, metric_type="f1", metric_config="macro", metric_name="Macro F1", metric_value=test["macro_f1"]
        ),
    ]
    carbon = results.get("carbon") or {}
    co2 = _co2_metadata(carbon, results.get("hardware") or {})
    card_data = ModelCardData(
        model_name=title,
        library_name="transformers",
        license=config.get("license") or "apache-2.0",
        tags=[*MODEL_TAGS, *(["timm"] if is_timm else [])],
        datasets=[dataset_id] if dataset_id else None,
        base_model=base_model,
        pipeline_tag="image-classification",
        metrics=["accuracy", "f1"],
        eval_results=eval_results,
        **({"co2_eq_emissions": co2} if co2 else {}),
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(hub_card_template("model_card.md")),
        title=title,
        summary=_summary(results, config, title, dataset_id),
        result_rows=[_result_row("Test", test), _result_row("Validation", validation)],
        selection_text=(
            f"The checkpoint kept ({results.get('best_checkpoint') or 'the final one'}) is the one with the best "
            "validation accuracy; the test split was evaluated once, with that checkpoint"
            + (", averaging the 8 dihedral views of each image (TTA)." if results.get("tta") else ".")
        ),
        class_rows=_class_rows(test),
        confusion_image=confusion_image,
        confused_pairs=_confused_pairs(test),
        hyperparameters=_hyperparameters(results),
        config_yaml=_config_yaml(config),
        versions=", ".join(f"{k} {v}" for k, v in (results.get("versions") or {}).items() if v) or "n/a",
        carbon_rows=_carbon_rows(carbon),
        carbon_text=_carbon_text(carbon, results),
        repo_ref=repo_ref,
        image_size=results.get("image_size") or 224,
        zoobot_caveat=zoobot,
        synthetic=synthetic,
        dataset=dataset,
        base_model=base_model,
        citation=f"{GZ10_CITATION}\n{HFGAL_CITATION}",
    )


def _summary(results: dict, config: dict, title: str, dataset_id: str | None) -> str:
    model = results.get("model") or "?"
    base = results.get("base_model")
    base_link = f"[{base}](https://huggingface.co/{base})" if base else f"`{model}`"
    if results.get("linear_probe"):
        how = f"a linear probe of {base_link}: the backbone was frozen and only the classification head trained"
    elif results.get("init") == "scratch":
        how = f"a `{results.get('model_type') or model}` network (`{model}`) trained from random initialisation"
    else:
        how = f"{base_link} fine-tuned"
    dataset = str(results.get("dataset") or "")
    if dataset_id:
        data = f"[Galaxy10 DECaLS](https://huggingface.co/datasets/{dataset_id})"
        if dataset_id == DEFAULT_DATASET:
            data += " (its own test split; validation carved from its train split, stratified by class)"
    elif dataset.startswith("synthetic"):
        data = f"synthetic GZ10-like galaxies (`{dataset}`)"
    else:
        data = f"Galaxy10 DECaLS (local copy `{Path(dataset).name}`)"
        scheme = results.get("split_scheme") or config.get("split_scheme")
        if scheme:
            data += f", split with hfgal's `{scheme}` scheme"
    augment = (
        " Training images were randomly rotated and reflected (the 8 dihedral views: galaxies have no preferred "
        "orientation) with a small random affine jitter."
        if results.get("d4_augment")
        else ""
    )
    test = results["test"]
    lo, hi = (test.get("accuracy_ci95") or [None, None])[:2]
    evaluated = "evaluated once on the test split"
    if results.get("tta"):
        evaluated += " averaging the 8 dihedral views of each image"
    if results.get("trained_by"):
        evaluated += f" (the training is that of the run `{results['trained_by']}`, which differs only in evaluation)"
    return (
        f"**{title}** sorts galaxy images into the 10 morphology classes of Galaxy10 DECaLS. It is {how} on {data}, "
        f"with seed {results.get('seed', 'n/a')}.{augment} The checkpoint with the best validation accuracy was kept "
        f"and {evaluated}: accuracy {_pct(test['accuracy'])} (95 % CI {_pct(lo)} – {_pct(hi)}), macro-F1 "
        f"{_num(test['macro_f1'])}."
    )


def _result_row(split: str, m: dict) -> dict:
    lo, hi = (m.get("accuracy_ci95") or [None, None])[:2]
    return {
        "split": split,
        "accuracy": _pct(m.get("accuracy")),
        "ci": f"{_pct(lo)} – {_pct(hi)}" if lo is not None else "n/a",
        "balanced_accuracy": _pct(m.get("balanced_accuracy")),
        "macro_f1": _num(m.get("macro_f1")),
        "num_examples": m.get("num_examples", "n/a"),
    }


def _class_rows(test: dict) -> list[dict]:
    per_class = test.get("per_class") or {}
    rows = []
    for name in GZ10_CLASSES:
        c = per_class.get(name)
        if c is None:
            continue
        rows.append(
            {
                "name": name,
                "precision": _num(c.get("precision")),
                "recall": _num(c.get("recall")),
                "f1": _num(c.get("f1")),
                "support": c.get("support", "n/a"),
            }
        )
    return rows


def _confused_pairs(test: dict, k: int = 5) -> list[dict]:
    confusion = test.get("confusion_matrix")
    if not confusion:
        return []
    from .confusion import most_confused_pairs

    pairs = most_confused_pairs(confusion, list(GZ10_CLASSES), k=k)
    return [{**p, "rate": _pct(p["rate"], 1)} for p in pairs if p["count"] > 0]


def _hyperparameters(results: dict) -> list[tuple[str, str]]:
    rows: list[tuple[str, Any]] = [
        ("initialisation", results.get("init")),
        ("base model", results.get("base_model") or "none (random initialisation)"),
        ("linear probe", results.get("linear_probe")),
        ("D4 augmentation", results.get("d4_augment")),
        ("test-time augmentation", results.get("tta")),
        ("image size", results.get("image_size")),
        ("parameters (total / trainable)", _params(results)),
        ("seed", results.get("seed")),
    ]
    rows += list((results.get("training") or {}).items())
    rows += [
        ("epochs trained", results.get("epochs")),
        ("optimisation steps", results.get("global_step")),
        ("best checkpoint (validation accuracy)", results.get("best_checkpoint")),
        ("training time (h:mm:ss)", _hms(results.get("train_seconds"))),
        ("training throughput (images/s)", _num(results.get("train_images_per_second"), 1)),
        ("hardware", _hardware(results.get("hardware") or {})),
    ]
    return [
        (name, "n/a" if value is None else f"`{value}`" if isinstance(value, bool) else str(value))
        for name, value in rows
    ]


def _params(results: dict) -> str | None:
    total, trainable = results.get("params_total"), results.get("params_trainable")
    if total is None:
        return None
    return f"{total / 1e6:.2f} M / {(trainable if trainable is not None else total) / 1e6:.2f} M"


def _config_yaml(config: dict) -> str:
    import yaml

    # TrainingArguments carries hub_token-like fields: a card is public, a secret in it would be published.
    safe = {
        k: ("<redacted>" if "token" in str(k).lower() and v not in (None, "", False) else v) for k, v in config.items()
    }
    return yaml.safe_dump(safe, sort_keys=False, default_flow_style=False).strip() if safe else ""


def _hardware(hw: dict) -> str:
    machines = int(hw.get("num_machines") or 1)
    where = f" on each of {machines} machines" if machines > 1 else ""
    if hw.get("gpu"):
        return f"{int(hw.get('gpu_count') or 1)} x {hw['gpu']}{where}"
    if hw.get("cpu"):
        cores = f" ({hw['cpu_count']} cores)" if hw.get("cpu_count") else ""
        return f"CPU: {hw['cpu']}{cores}{where}"
    return "n/a"


def _tracked(carbon: dict) -> bool:
    return bool(carbon) and bool((carbon.get("emissions_kg") or 0) > 0 or (carbon.get("energy_kwh") or 0) > 0)


def _co2_metadata(carbon: dict, hardware: dict) -> dict | None:
    """The Hub's `co2_eq_emissions` block (grams), or None when nothing was measured (zeros are not a claim)."""
    if not _tracked(carbon):
        return None
    location = carbon.get("country_iso_code") or "unknown"
    if carbon.get("region"):
        location = f"{carbon['region']}, {location}"
    return {
        "emissions": float(carbon["emissions_kg"]) * 1000,
        "source": "codecarbon",
        "training_type": "fine-tuning",
        "geographical_location": location,
        "hardware_used": _hardware(hardware),
    }


def _carbon_rows(carbon: dict) -> list[dict]:
    rows = []
    for phase, label in (("train", "Training"), ("eval", "Test evaluation")):
        part = carbon.get(phase)
        if isinstance(part, dict):
            rows.append(_carbon_row(label, part))
    rows.append(_carbon_row("**Total**", carbon))
    return rows


def _carbon_row(label: str, part: dict) -> dict:
    kg = part.get("emissions_kg")
    return {
        "phase": label,
        "duration": _hms(part.get("duration_s")),
        "energy": _sig(part.get("energy_kwh")),
        "kg": _sig(kg),
        "g": _sig(None if kg is None else float(kg) * 1000),
    }


def _carbon_text(carbon: dict, results: dict) -> str:
    if not _tracked(carbon):
        return (
            "Energy and emissions were not measured for this run (carbon tracking was off or unavailable), so the "
            "card makes no CO₂ claim."
        )
    version = (results.get("versions") or {}).get("codecarbon")
    where = carbon.get("country_iso_code") or "an unknown country"
    if carbon.get("region"):
        where = f"{carbon['region']}, {where}"
    return (
        f"Measured with codecarbon{f' {version}' if version else ''} (offline tracker, `{carbon.get('tracking_mode')}`"
        f" mode) around training and the final test evaluation: energy drawn by the "
        f"{'GPUs, ' if carbon.get('gpu_model') else ''}CPU and RAM, times the carbon intensity of the electricity in "
        f"{where}. Without hardware power counters codecarbon estimates CPU power from its thermal design power."
    )


# --------------------------------------------------------------------------- run folder -> README.md


def write_model_card(run_dir: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Write (or refresh) `README.md` in a finished run folder, atomically.

    Args:
        run_dir: the recipe's OUTPUT_DIR (results.json complete, model.safetensors and config.yaml present).
        repo_id: the Hub model id the card will be published under, if known.

    Returns:
        The path of the written README.md.

    Raises:
        HfgalError: the folder is missing, unfinished or incomplete.
    """
    run_dir, results, config = check_run_dir(run_dir)
    image = CONFUSION_FILE if (run_dir / CONFUSION_FILE).is_file() else None
    card = render_model_card(results, config, repo_id, confusion_image=image)
    text = str(card)
    return atomic_write_text(run_dir / CARD_FILE, text if text.endswith("\n") else text + "\n")


def _card_cmd(args) -> int:
    if args.repo_id:
        from .hub import validate_repo_id

        validate_repo_id(args.repo_id)
    path = write_model_card(args.output_dir, repo_id=args.repo_id)
    print(f"wrote {path}")
    return 0


def register_cli(subparsers) -> None:
    card = subparsers.add_parser("card", help="write the model card (README.md) of a finished run folder")
    card.add_argument("output_dir", metavar="OUTPUT_DIR", help="run folder written by recipes/finetune.py")
    card.add_argument("--repo-id", help="Hub id the model will be published as (USER/NAME), used in the card")
    card.set_defaults(func=_card_cmd)
