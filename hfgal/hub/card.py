"""Model cards of fine-tuned runs, rendered from `hub_cards/model_card.md` by pure functions of their run record.

The numbers live in the card metadata (`model-index`, `co2_eq_emissions`) as well as in the prose, so the Hub's
leaderboards and carbon filters read them without parsing Markdown. (The dataset card lives in `hfgal.data.card`.)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constants import (
    DEFAULT_DATASET,
    GZ10_CITATION,
    GZ10_CLASSES,
    GZ10_CUTOUT_ARCSEC,
    GZ10_H5_FILENAME,
    GZ10_ZENODO_RECORD,
    HFGAL_CITATION,
)
from ..io import atomic_write_text, card_template
from ..runs import (
    CARD_FILE,
    CONFUSION_FILE,
    CURVES_FILE,
    TRAINING_LOG_FILE,
    Calibration,
    CarbonRecord,
    Hardware,
    RunRecord,
    SplitMetrics,
    check_run_dir,
    read_calibration,
)
from .access import is_hub_id

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

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


# --------------------------------------------------------------------------- model card


def render_model_card(
    results: RunRecord,
    config: dict,
    repo_id: str | None = None,
    *,
    confusion_image: str | None = CONFUSION_FILE,
    calibration: Calibration | None = None,
    curves_image: str | None = None,
    training_log: str | None = None,
) -> ModelCard:
    """Render a model card from a run's `results.json` and resolved `config.yaml` (no live model needed).

    Args:
        results: the record of a finished run (its results.json).
        config: the parsed config.yaml (flat mapping of recipe arguments); `license` sets the card's licence.
        repo_id: the Hub model id the card will live in (used for the model name and the usage snippets).
        confusion_image: relative path of the confusion-matrix PNG, or None when the run has none.
        calibration: the model's calibration.json (`hfgal evaluate --calibrate`), shown when there is one.
        curves_image: relative path of the learning-curves PNG, or None when the run has none.
        training_log: relative path of the Trainer's log, or None when the run has none.

    Returns:
        A `huggingface_hub.ModelCard` with `model-index` (test accuracy and macro-F1) and `co2_eq_emissions`
        (grams) metadata.
    """
    from huggingface_hub import ModelCard, ModelCardData

    test, validation = results.test, results.validation
    model = results.model
    base_model = results.base_model or None
    dataset = results.dataset
    dataset_id = dataset if is_hub_id(dataset) else None
    synthetic = dataset.startswith("synthetic")
    is_timm = model.startswith("timm") or "timm" in str(results.model_type or "")
    run_name = results.run_name
    title = repo_id.split("/")[-1] if repo_id else (run_name or f"{model} on Galaxy10 DECaLS")
    repo_ref = repo_id or f"path/to/{run_name or 'run'}"
    zoobot = "zoobot" in f"{base_model or ''} {model}".lower()

    carbon = results.carbon
    co2 = _co2_metadata(carbon, results.hardware)
    card_data = ModelCardData(
        model_name=title,
        library_name="transformers",
        license=config.get("license") or "apache-2.0",
        tags=[*MODEL_TAGS, *(["timm"] if is_timm else [])],
        datasets=[dataset_id] if dataset_id else None,
        base_model=base_model,
        pipeline_tag="image-classification",
        metrics=["accuracy", "f1"],
        eval_results=_eval_results(results, dataset_id),
        **({"co2_eq_emissions": co2} if co2 else {}),
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(card_template("model_card.md")),
        title=title,
        summary=_summary(results, config, title, dataset_id),
        result_rows=[_result_row("Test", test), _result_row("Validation", validation)],
        selection_text=_selection_text(results),
        class_rows=_class_rows(test),
        confusion_image=confusion_image,
        confused_pairs=_confused_pairs(test),
        calibration=calibration,
        calibration_rows=_calibration_rows(calibration),
        curves_image=curves_image,
        training_log=training_log,
        hyperparameters=_hyperparameters(results),
        config_yaml=_config_yaml(config),
        versions=", ".join(f"{k} {v}" for k, v in results.versions.items() if v) or "n/a",
        carbon_rows=_carbon_rows(carbon),
        carbon_text=_carbon_text(carbon, results),
        repo_ref=repo_ref,
        image_size=results.image_size or 224,
        zoobot_caveat=zoobot,
        synthetic=synthetic,
        dataset=dataset,
        base_model=base_model,
        citation=f"{GZ10_CITATION}\n{HFGAL_CITATION}",
    )


def _eval_results(results: RunRecord, dataset_id: str | None) -> list:
    """The `model-index` results: test accuracy and macro-F1, on the dataset as the Hub names it."""
    from huggingface_hub import EvalResult

    test, dataset = results.test, results.dataset
    if dataset_id:
        dataset_type, dataset_name = dataset_id, "Galaxy10 DECaLS"
    elif dataset.startswith("synthetic"):
        dataset_type, dataset_name = "synthetic", f"Synthetic GZ10-like galaxies ({dataset})"
    else:
        where = f"Zenodo {GZ10_ZENODO_RECORD}" if dataset == "zenodo" else "local copy"
        dataset_type, dataset_name = "galaxy10_decals", f"Galaxy10 DECaLS ({where})"
    common = {
        "task_type": "image-classification",
        "task_name": "Image Classification",
        "dataset_type": dataset_type,
        "dataset_name": dataset_name,
        "dataset_split": "test",
        "dataset_revision": results.dataset_revision,
    }
    return [
        EvalResult(**common, metric_type="accuracy", metric_name="Accuracy", metric_value=test.accuracy),
        EvalResult(
            **common, metric_type="f1", metric_config="macro", metric_name="Macro F1", metric_value=test.macro_f1
        ),
    ]


def _calibration_rows(calibration: Calibration | None) -> list[tuple[str, Any]]:
    """The calibration's scores per split: fitted on validation, checked on test (when it was)."""
    if calibration is None:
        return []
    rows = [("Validation (fitted on)", calibration.validation), ("Test (held out)", calibration.test)]
    return [(name, scores) for name, scores in rows if scores is not None]


def _summary(results: RunRecord, config: dict, title: str, dataset_id: str | None) -> str:
    model = results.model or "?"
    base = results.base_model
    base_link = f"[{base}](https://huggingface.co/{base})" if base else f"`{model}`"
    if results.linear_probe:
        how = f"a linear probe of {base_link}: the backbone was frozen and only the classification head trained"
    elif results.init == "scratch":
        how = f"a `{results.model_type or model}` network (`{model}`) trained from random initialisation"
    else:
        how = f"{base_link} fine-tuned"
    dataset = results.dataset
    if dataset_id:
        data = f"[Galaxy10 DECaLS](https://huggingface.co/datasets/{dataset_id})"
    elif dataset.startswith("synthetic"):
        data = f"synthetic GZ10-like galaxies (`{dataset}`)"
    elif dataset == "zenodo":
        data = f"Galaxy10 DECaLS (`{GZ10_H5_FILENAME}` from Zenodo record {GZ10_ZENODO_RECORD})"
    else:
        data = f"Galaxy10 DECaLS (local copy `{Path(dataset).name}`)"
    data += _split_clause(results, config, dataset_id)
    augment = (
        " Training images were randomly rotated and reflected (the 8 dihedral views: galaxies have no preferred "
        "orientation) with a small random affine jitter."
        if results.d4_augment
        else ""
    )
    test = results.test
    lo, hi = test.accuracy_ci95[:2]
    evaluated = "evaluated once on the test split"
    if results.tta:
        evaluated += " averaging the 8 dihedral views of each image"
    if results.trained_by:
        evaluated += f" (the training is that of the run `{results.trained_by}`, which differs only in evaluation)"
    seed = "n/a" if results.seed is None else results.seed
    return (
        f"**{title}** sorts galaxy images into the 10 morphology classes of Galaxy10 DECaLS. It is {how} on {data}, "
        f"with seed {seed}.{augment} The checkpoint with the best validation accuracy was kept "
        f"and {evaluated}: accuracy {_pct(test.accuracy)} (95 % CI {_pct(lo)} – {_pct(hi)}), macro-F1 "
        f"{_num(test.macro_f1)}."
    )


def _split_clause(results: RunRecord, config: dict, dataset_id: str | None) -> str:
    """What split the run used, as recorded (`RunRecord.split`), with the close pairs that cross it; for records
    written before the split was recorded, only what is certain."""
    if results.split:
        text = f" (split: {results.split}"
        rows = results.split_close_pairs or []
        widest = max(rows, key=lambda r: r["within_arcsec"]) if rows else None
        if widest and widest["within_arcsec"] >= GZ10_CUTOUT_ARCSEC - 1e-3:
            text += (
                f"; {int(widest['cross_split'])} of the {int(widest['pairs'])} pairs of galaxies closer than the "
                f'{widest["within_arcsec"]:g}" cutout width sit on both sides of it'
            )
        return text + ")"
    if dataset_id == DEFAULT_DATASET:  # hfgal never re-split it: its published train/test, validation carved
        return " (its own test split; validation carved from its train split, stratified by class)"
    scheme = None if dataset_id else results.split_scheme or config.get("split_scheme")
    return f", split with hfgal's `{scheme}` scheme" if scheme else ""


def _result_row(split: str, m: SplitMetrics) -> dict:
    lo, hi = (m.accuracy_ci95 or [None, None])[:2]
    return {
        "split": split,
        "accuracy": _pct(m.accuracy),
        "ci": f"{_pct(lo)} – {_pct(hi)}" if lo is not None else "n/a",
        "balanced_accuracy": _pct(m.balanced_accuracy),
        "macro_f1": _num(m.macro_f1),
        "num_examples": m.num_examples,
    }


def _class_rows(test: SplitMetrics) -> list[dict]:
    rows = []
    for name in GZ10_CLASSES:
        c = test.per_class.get(name)
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


def _confused_pairs(test: SplitMetrics, k: int = 5) -> list[dict]:
    if not test.confusion_matrix:
        return []
    from ..runs import most_confused_pairs

    pairs = most_confused_pairs(test.confusion_matrix, list(GZ10_CLASSES), k=k)
    return [{**p, "rate": _pct(p["rate"], 1)} for p in pairs if p["count"] > 0]


def _selection_text(results: RunRecord) -> str:
    """How the reported checkpoint was chosen and tested, the protocol it followed, and the diagnostic if any."""
    text = (
        f"The checkpoint kept ({results.best_checkpoint or 'the final one'}) is the one with the best validation "
        "accuracy; the test split was evaluated once, with that checkpoint"
        + (", averaging the 8 dihedral views of each image (TTA)." if results.tta else ".")
    )
    if results.protocol == "poster":
        text += (
            " The run follows the seed study's protocol (`poster`: its data split, recipe and preprocessing), so its "
            "numbers compare with the published ones."
        )
    elif results.protocol:
        text += f" The run follows hfgal's `{results.protocol}` protocol."
    diagnostic = results.selection_on_test
    if diagnostic is not None:
        text += (
            f" Diagnostic only, not a result: choosing the checkpoint on the test split instead (the seed study's "
            f"selection) would have reported {_pct(diagnostic.test_accuracy)} (step {diagnostic.step}, the best of "
            f"{diagnostic.evaluations} evaluations of test during training)."
        )
    return text


def _hyperparameters(results: RunRecord) -> list[tuple[str, str]]:
    import dataclasses

    rows: list[tuple[str, Any]] = [
        ("initialisation", results.init),
        ("base model", results.base_model or "none (random initialisation)"),
        ("linear probe", results.linear_probe),
        ("D4 augmentation", results.d4_augment),
        ("test-time augmentation", results.tta),
        ("image size", results.image_size),
        ("image preparation", results.preprocessing),
        ("protocol", results.protocol),
        ("parameters (total / trainable)", _params(results)),
        ("seed", results.seed),
    ]
    rows += list(dataclasses.asdict(results.training).items())
    rows += [
        ("epochs trained", results.epochs),
        ("optimisation steps", results.global_step),
        ("best checkpoint (validation accuracy)", results.best_checkpoint),
        ("training time (h:mm:ss)", _hms(results.train_seconds)),
        ("training processes (1 + times resumed)", results.carbon.segments),
        ("runs sharing the machine", results.carbon.concurrency),
        ("training throughput (images/s)", _num(results.train_images_per_second, 1)),
        ("hardware", results.hardware.describe()),
    ]
    return [
        (name, "n/a" if value is None else f"`{value}`" if isinstance(value, bool) else str(value))
        for name, value in rows
    ]


def _params(results: RunRecord) -> str | None:
    total, trainable = results.params_total, results.params_trainable
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


def _co2_metadata(carbon: CarbonRecord, hardware: Hardware) -> dict | None:
    """The Hub's `co2_eq_emissions` block (grams), or None when nothing was measured (zeros are not a claim)."""
    if not carbon.measured:
        return None
    location = carbon.country_iso_code or "unknown"
    if carbon.region:
        location = f"{carbon.region}, {location}"
    return {
        "emissions": carbon.emissions_kg * 1000,
        "source": "codecarbon",
        "training_type": "fine-tuning",
        "geographical_location": location,
        "hardware_used": hardware.describe(),
    }


def _carbon_rows(carbon: CarbonRecord) -> list[dict]:
    labels = {"train": "Training", "eval": "Test evaluation"}
    rows = [_carbon_row(labels[name], carbon.phases[name]) for name in labels if name in carbon.phases]
    rows.append(_carbon_row("**Total**", carbon.total))
    return rows


def _carbon_row(label: str, part) -> dict:
    return {
        "phase": label,
        "duration": _hms(part.duration_s),
        "energy": _sig(part.energy_kwh),
        "kg": _sig(part.emissions_kg),
        "g": _sig(part.emissions_kg * 1000),
    }


def _carbon_text(carbon: CarbonRecord, results: RunRecord) -> str:
    if not carbon.measured:
        return (
            "Energy and emissions were not measured for this run (carbon tracking was off or unavailable), so the "
            "card makes no CO₂ claim."
        )
    version = results.versions.get("codecarbon")
    where = carbon.country_iso_code or "an unknown country"
    if carbon.region:
        where = f"{carbon.region}, {where}"
    return (
        f"Measured with codecarbon{f' {version}' if version else ''} (offline tracker, `{carbon.tracking_mode}`"
        f" mode) around training and the final test evaluation: energy drawn by the "
        f"{'GPUs, ' if carbon.gpu_model else ''}CPU and RAM, times the carbon intensity of the electricity in "
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
    files = (CONFUSION_FILE, CURVES_FILE, TRAINING_LOG_FILE)
    present = {name: name if (run_dir / name).is_file() else None for name in files}
    card = render_model_card(
        results,
        config,
        repo_id,
        confusion_image=present[CONFUSION_FILE],
        calibration=read_calibration(run_dir),
        curves_image=present[CURVES_FILE],
        training_log=present[TRAINING_LOG_FILE],
    )
    text = str(card)
    return atomic_write_text(run_dir / CARD_FILE, text if text.endswith("\n") else text + "\n")
