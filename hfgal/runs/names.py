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
