"""The run folder, a contract between the run that writes it and everything that reads it.

A finished fine-tuning run folder holds the selected model and the image processor that serves it, `config.yaml`
(the resolved recipe), `results.json` (a `RunRecord`, written last: it marks the run complete), the confusion-matrix
figure and a model card. Training writes it; cards, pushes, studies, inference and the Space read it, all through
this package, which sits below every one of them and imports neither torch nor transformers.
"""

from .confusion import most_confused_pairs, plot_confusion_matrix
from .evaluation import (
    Calibration,
    CalibrationScores,
    EvaluationRecord,
    ReliabilityBin,
    read_calibration,
    read_evaluation,
)
from .folder import check_model_folder, check_run_dir, has_checkpoint, read_config, read_results, weight_files
from .names import (
    CALIBRATION_FILE,
    CARBON_LEDGER_FILE,
    CARD_FILE,
    CHECKPOINT_PREFIX,
    CONFIG_FILE,
    CONFUSION_FILE,
    CURVES_FILE,
    EVALUATION_FILE,
    EVALUATION_PREFIX,
    MODEL_CONFIG_FILE,
    PICKLED_WEIGHTS_FILES,
    PREDICTIONS_FILE,
    PROCESSOR_FILE,
    RELIABILITY_FILE,
    RESULTS_FILE,
    TENSORBOARD_DIR,
    TRAINING_LOG_FILE,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
)
from .record import (
    PHASE_FIELDS,
    TRAINING_OUTCOME,
    CarbonPhase,
    CarbonRecord,
    Hardware,
    Hyperparameters,
    RunRecord,
    SelectionOnTest,
    SplitMetrics,
)

__all__ = [
    "CALIBRATION_FILE",
    "CARBON_LEDGER_FILE",
    "CARD_FILE",
    "CHECKPOINT_PREFIX",
    "CONFIG_FILE",
    "CONFUSION_FILE",
    "CURVES_FILE",
    "EVALUATION_FILE",
    "EVALUATION_PREFIX",
    "MODEL_CONFIG_FILE",
    "PHASE_FIELDS",
    "PICKLED_WEIGHTS_FILES",
    "PREDICTIONS_FILE",
    "PROCESSOR_FILE",
    "RELIABILITY_FILE",
    "RESULTS_FILE",
    "TENSORBOARD_DIR",
    "TRAINING_LOG_FILE",
    "TRAINING_OUTCOME",
    "WEIGHTS_FILE",
    "WEIGHTS_INDEX_FILE",
    "Calibration",
    "CalibrationScores",
    "CarbonPhase",
    "CarbonRecord",
    "EvaluationRecord",
    "Hardware",
    "Hyperparameters",
    "ReliabilityBin",
    "RunRecord",
    "SelectionOnTest",
    "SplitMetrics",
    "check_model_folder",
    "check_run_dir",
    "has_checkpoint",
    "most_confused_pairs",
    "plot_confusion_matrix",
    "read_calibration",
    "read_config",
    "read_evaluation",
    "read_results",
    "weight_files",
]
