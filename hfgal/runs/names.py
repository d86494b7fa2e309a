"""The names of the files a fine-tuning run folder holds: the contract between the run that writes the folder and
everything that reads it (cards, pushes, studies, inference, the Space)."""

from __future__ import annotations

# What a finished run folder holds.
RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"  # the resolved recipe arguments, re-usable with --config
CARD_FILE = "README.md"
CONFUSION_FILE = "confusion_matrix.png"
PREDICTIONS_FILE = "predictions.csv"  # the validation and test galaxies as the selected model scored them
MODEL_CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
CHECKPOINT_PREFIX = "checkpoint-"
CARBON_LEDGER_FILE = "carbon.json"  # in each checkpoint: the training's energy, CO2 and time up to it
PICKLED_WEIGHTS_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TRAINING_LOG_FILE = "trainer_log.jsonl"  # the Trainer's log history, one JSON object per logged step
CURVES_FILE = "learning_curves.png"  # training loss, validation loss and accuracy against the step
TENSORBOARD_DIR = "runs"  # where --report_to tensorboard writes its event files (not pushed)

# What a model folder may hold once it is evaluated (`hfgal evaluate`).
CALIBRATION_FILE = "calibration.json"  # the temperature `load_classifier` applies (hfgal.runs.evaluation.Calibration)
EVALUATION_FILE = "evaluation.json"  # one evaluated split (hfgal.runs.evaluation.EvaluationRecord)
RELIABILITY_FILE = "reliability_diagram.png"
EVALUATION_PREFIX = "evaluation-"  # <run folder>/evaluation-<split>: where hfgal evaluate writes by default
