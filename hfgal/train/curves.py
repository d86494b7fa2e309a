"""Learning curves of a run, kept in its folder: the Trainer's log (`trainer_log.jsonl`) and its figure
(`learning_curves.png`: training and validation loss, validation accuracy and the learning rate against the step).

The log is `trainer.state.log_history`, which a resumed run restores from its checkpoint, so the file covers every
segment of the training. Both files are part of the run-folder contract (`hfgal.runs`) and pushed with the model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_file, atomic_write_text
from ..runs import CURVES_FILE, TRAINING_LOG_FILE

# Where the Trainer logs validation: `eval_<metric>`, or `eval_validation_<metric>` when test is scored beside it.
_VALIDATION_PREFIXES = ("eval_validation_", "eval_")
_TEST_PREFIX = "eval_test_"  # --test_each_eval: a diagnostic, never used to select


def save_learning_curves(
    out: str | os.PathLike, log_history: Sequence[dict[str, Any]], *, best_step: int | None = None
) -> list[Path]:
    """Write the run's training log and learning curves into its folder (nothing when it logged nothing, as a run
    sharing another's training does).

    Args:
        out: the run folder.
        log_history: the Trainer's `state.log_history`.
        best_step: the step of the checkpoint kept (`state.best_global_step`), marked on the curves.

    Returns:
        The paths written.
    """
    if not log_history:
        return []
    out = Path(out)
    log = write_training_log(out / TRAINING_LOG_FILE, log_history)
    return [log, plot_learning_curves(log_history, out / CURVES_FILE, best_step=best_step)]


def write_training_log(path: str | os.PathLike, log_history: Sequence[dict[str, Any]]) -> Path:
    """One JSON object per logged event, in order (`pandas.read_json(path, lines=True)` reads it); a NaN or
    infinite value (a diverged loss) is written as null, which every JSON reader accepts."""

    def finite(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    lines = [json.dumps({k: finite(v) for k, v in entry.items()}, allow_nan=False) for entry in log_history]
    return atomic_write_text(path, "".join(f"{line}\n" for line in lines))


def read_training_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The events of a `trainer_log.jsonl`, in order."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def curve(log_history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """`(steps, values)` of one logged quantity (entries without it, or with a null, are skipped)."""
    points = [(int(e["step"]), float(e[key])) for e in log_history if e.get(key) is not None and "step" in e]
    return [s for s, _ in points], [v for _, v in points]


def validation_key(log_history: Sequence[dict[str, Any]], metric: str) -> str | None:
    """The log key of a validation metric (`eval_accuracy`, or `eval_validation_accuracy` under --test_each_eval)."""
    for prefix in _VALIDATION_PREFIXES:
        if any(f"{prefix}{metric}" in e for e in log_history):
            return f"{prefix}{metric}"
    return None


def plot_learning_curves(
    log_history: Sequence[dict[str, Any]], path: str | os.PathLike, *, best_step: int | None = None
) -> Path:
    """Draw loss, accuracy and learning rate against the optimisation step to a PNG, atomically.

    Panels: training loss (every logged step) with the validation loss (every evaluation); validation accuracy (and
    the test accuracy of `--test_each_eval`, labelled as the diagnostic it is); the learning rate. The checkpoint
    kept is marked by a dotted line.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # a bare Figure on the Agg canvas: no pyplot state, safe on clusters
    loss_ax, accuracy_ax, lr_ax = fig.subplots(1, 3)
    _line(loss_ax, curve(log_history, "loss"), "training", "-")
    _line(loss_ax, curve(log_history, validation_key(log_history, "loss") or "eval_loss"), "validation", "o-")
    loss_ax.set(title="Loss", ylabel="loss (with label smoothing, if any)")
    _line(
        accuracy_ax, curve(log_history, validation_key(log_history, "accuracy") or "eval_accuracy"), "validation", "o-"
    )
    _line(accuracy_ax, curve(log_history, f"{_TEST_PREFIX}accuracy"), "test (diagnostic, not used to select)", "s--")
    accuracy_ax.set(title="Accuracy", ylabel="accuracy")
    _line(lr_ax, curve(log_history, "learning_rate"), None, "-")
    lr_ax.set(title="Learning rate", ylabel="learning rate")
    for ax in (loss_ax, accuracy_ax, lr_ax):
        ax.set_xlabel("optimisation step")
        ax.grid(alpha=0.3)
        if best_step is not None:
            ax.axvline(best_step, color="grey", linestyle=":", label=f"kept (step {best_step})")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png")
    return Path(path)


def _line(ax: Any, points: tuple[list[int], list[float]], label: str | None, style: str) -> None:
    steps, values = points
    if steps:
        ax.plot(steps, values, style, label=label, markersize=3)
