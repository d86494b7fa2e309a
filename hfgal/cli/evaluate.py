"""`hfgal evaluate`: score a saved model (a run folder, any image-classifier folder or a Hub id) on a GZ10 split with
the metrics block of a training run, the calibration of its probabilities, and optionally a fitted temperature."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ..errors import HfgalError

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add `hfgal evaluate` to the `hfgal` command line."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a saved model on a GZ10 split: accuracy with CI, macro-F1, per class, calibration (ECE)",
        description="Evaluate a saved model on a GZ10 split the way a training run evaluates its selected model "
        "(the same data loading, uint8 cache, normalisation, Trainer and metrics): a run folder evaluated on its "
        "own dataset and split reproduces its results.json. Writes evaluation.json, predictions.csv, the "
        "confusion matrix and a reliability diagram. --calibrate fits a temperature on the validation split and "
        "saves it with the model (calibration.json), which load_classifier, hfgal predict and the Space apply.",
    )
    parser.add_argument("--model", required=True, help="a run folder, a saved image-classifier folder or a Hub id")
    parser.add_argument(
        "--dataset", help="anything load_gz10 takes (Hub id, folder, h5, synthetic:N); default: a run folder's own"
    )
    parser.add_argument("--split", default="test", choices=("test", "validation", "train"), help="default: test")
    parser.add_argument("--dataset-revision", help="Hub revision of the dataset (default: a run folder's own)")
    parser.add_argument("--split-seed", type=int, help="split seed (default: a run folder's own, else 42)")
    parser.add_argument("--split-scheme", help="default or poster, for sources hfgal splits (default: the run's)")
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average the 8 rotations/flips of each image (default: as the run evaluated, else off)",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="fit a temperature on the validation split and save it with the model as calibration.json",
    )
    parser.add_argument("--output", "-o", help="folder to write (default: <model folder>/evaluation-<split>)")
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default: the run's, else 128)")
    parser.add_argument(
        "--device", help="cpu, cuda or mps (default: where the run evaluated, else a GPU when there is one)"
    )
    parser.add_argument("--image-cache-dir", help="folder of the decoded uint8 image cache (default: hfgal's)")
    parser.add_argument("--revision", help="Hub branch, tag or commit of --model")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow custom modelling code from the model repo"
    )
    parser.set_defaults(func=evaluate_command)


def evaluate_command(args: Any) -> int:
    """Handler of `hfgal evaluate`: score the split, write the evaluation folder, save a fitted temperature."""
    from ..errors import require_extra

    require_extra("train", "hfgal evaluate")
    from ..inference import load_classifier
    from ..train.evaluate import EvaluationSettings, default_output, evaluate_model, write_evaluation

    folder, config, results = _model_folder(args.model)
    if config is None and not args.dataset:
        raise HfgalError(f"{args.model} is not a run folder (no config.yaml): pass --dataset, e.g. --dataset zenodo")
    if args.calibrate and folder is None:
        raise HfgalError(
            "--calibrate saves calibration.json with the model, so it needs a local folder: download the model "
            f"(hf download {args.model} --local-dir DIR) and pass --model DIR"
        )
    if args.batch_size is not None and args.batch_size < 1:  # said with the flag's name
        raise HfgalError(f"--batch-size must be at least 1, got {args.batch_size}")
    chosen = {
        "dataset": args.dataset,
        "split": args.split,
        "dataset_revision": args.dataset_revision,
        "split_seed": args.split_seed,
        "split_scheme": args.split_scheme,
        "tta": args.tta,
        "batch_size": args.batch_size,
        "image_cache_dir": args.image_cache_dir,
    }
    settings = EvaluationSettings.from_run_config(config or {}, **chosen)
    settings.check()  # the data is checked before the model is loaded
    # A run that evaluated on the CPU is re-evaluated there by default: other kernels round logits otherwise.
    device = args.device or ("cpu" if (config or {}).get("use_cpu") else None)
    classifier = load_classifier(args.model, args.revision, device=device, trust_remote_code=args.trust_remote_code)
    record, fitted, scored, gz10 = evaluate_model(
        classifier.model,
        classifier.processor,
        args.model,
        settings,
        calibrate=args.calibrate,
        calibration=None if args.calibrate else classifier.calibration,
        device=str(classifier.device),
    )
    if results is not None and args.split != "train":
        run_settings = EvaluationSettings.from_run_config(config, split=args.split)
        if settings.data_settings() == run_settings.data_settings():  # the same data, scored the same way
            record.run_accuracy = getattr(results, args.split).accuracy
    out = Path(args.output) if args.output else default_output(args.model, settings.split, settings.tta)
    write_evaluation(out, record, scored, gz10)
    if fitted is not None:
        fitted.save(folder)
        if results is not None:  # the card shows the calibration
            from ..hub.card import write_model_card

            write_model_card(folder)
    _report(record, fitted, folder, out)
    return 0


def _model_folder(model: str) -> tuple[Path | None, dict | None, Any]:
    """`(folder or None for a Hub id, its config.yaml or None, its RunRecord or None)`."""
    from ..hub.access import is_hub_id
    from ..runs import CONFIG_FILE, read_config, read_results

    folder = Path(model).expanduser()
    if not folder.is_dir():
        if not is_hub_id(model):
            raise HfgalError(f"{model}: no such model folder (and not a Hub repo id); check the path")
        return None, None, None
    if not (folder / CONFIG_FILE).is_file():
        return folder, None, None
    return folder, read_config(folder), read_results(folder)


def _report(record: Any, fitted: Any, folder: Path | None, out: Path) -> None:
    m = record.metrics
    low, high = m.accuracy_ci95
    lines = [
        f"{record.split}: accuracy {m.accuracy:.4f} (95% CI {low:.4f}-{high:.4f}), macro-F1 {m.macro_f1:.4f}, "
        f"ECE {100 * record.ece:.2f} %, NLL {record.nll:.4f} over {m.num_examples} images"
        + (" (TTA)" if record.tta else "")
    ]
    if record.run_accuracy is not None:
        same = "reproduced exactly" if record.run_accuracy == m.accuracy else "DIFFERS"
        lines.append(f"the run's results.json {record.split} accuracy {record.run_accuracy:.4f}: {same}")
    if fitted is not None:
        v = fitted.validation
        text = (
            f"temperature T = {fitted.temperature:.4f} fitted on {v.num_examples} validation images: validation ECE "
            f"{100 * v.ece_before:.2f} % -> {100 * v.ece_after:.2f} %"
        )
        if fitted.test is not None:
            text += f", test ECE {100 * fitted.test.ece_before:.2f} % -> {100 * fitted.test.ece_after:.2f} %"
        lines.append(f"{text}; saved to {folder}/calibration.json")
    elif record.temperature is not None:
        calibrated = f"ECE {100 * record.ece_calibrated:.2f} %"
        lines.append(f"with the model's temperature T = {record.temperature:.4f}: {calibrated}")
    lines.append(f"wrote {out}")
    for line in lines:
        print(f"hfgal: {line}", file=sys.stderr)
