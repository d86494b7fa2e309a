"""Confusion matrices for people: the most confused class pairs and the row-normalised figure.

Light on imports (numpy; matplotlib when drawing), so cards and reports render without loading `evaluate`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import GZ10_CLASSES
from ..errors import HfgalError
from ..io import atomic_file


def most_confused_pairs(confusion, class_names: Sequence[str] = GZ10_CLASSES, k: int = 5) -> list[dict[str, Any]]:
    """The `k` most frequent off-diagonal (true, predicted) pairs of a confusion matrix.

    Args:
        confusion: square counts, rows = true class, columns = predicted class.
        class_names: one name per class.
        k: how many pairs to return at most (pairs with no errors are never listed).

    Returns:
        A list of {"true", "predicted", "count", "rate"}, most frequent first; `rate` is the fraction of the
        true class's examples predicted as that class.
    """
    confusion = _square(confusion, class_names)
    support = confusion.sum(axis=1)
    errors = confusion.astype(np.float64).copy()
    np.fill_diagonal(errors, 0)
    true_ids, pred_ids = np.nonzero(errors)
    counts = confusion[true_ids, pred_ids]
    rates = counts / support[true_ids]
    # Most errors first; equal counts go to the pair with the higher rate, then class order, so lists are stable.
    order = np.lexsort((pred_ids, true_ids, -rates, -counts))[: max(k, 0)]
    return [
        {
            "true": class_names[true_ids[i]],
            "predicted": class_names[pred_ids[i]],
            "count": int(counts[i]),
            "rate": float(rates[i]),
        }
        for i in order
    ]


def plot_confusion_matrix(
    confusion, class_names: Sequence[str], path: str | os.PathLike, title: str | None = None, dpi: int = 100
) -> Path:
    """Draw a row-normalised confusion matrix (fraction of each true class) to a PNG, atomically.

    Args:
        confusion: square counts, rows = true class, columns = predicted class.
        class_names: one name per class, written on both axes.
        path: where to write the PNG (its folder is created).
        title: figure title; defaults to "Confusion matrix (row-normalised)".
        dpi: resolution; the figure is 9 x 8 inches, so 900 x 800 pixels at the default 100.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    class_names = list(class_names)
    confusion = _square(confusion, class_names)
    support = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, support, out=np.zeros(confusion.shape), where=support > 0)

    # A bare Figure on the Agg canvas: no pyplot state, no display needed, safe in threads and on clusters.
    fig = Figure(figsize=(9, 8), dpi=dpi)
    FigureCanvasAgg(fig)
    # Axes placed in inches: room for the longest GZ10 names on the left and below, a square matrix, and the
    # colourbar beside it (automatic layouts misplace labels around an equal-aspect image).
    width, height = fig.get_size_inches()
    ax = fig.add_axes((2.3 / width, 1.9 / height, 5.6 / width, 5.6 / height))
    cax = fig.add_axes((8.1 / width, 1.9 / height, 0.25 / width, 5.6 / height))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, cax=cax, label="fraction of true class")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, labels=class_names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title or "Confusion matrix (row-normalised)")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            value = normalised[i, j]
            ax.text(
                j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value > 0.5 else "black"
            )

    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png")
    return Path(path)


def _square(confusion, class_names: Sequence[str]) -> np.ndarray:
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise HfgalError(f"confusion matrix has shape {confusion.shape}; pass a square (classes x classes) matrix")
    if confusion.shape[0] != len(class_names):
        raise HfgalError(
            f"confusion matrix has {confusion.shape[0]} classes but {len(class_names)} class names were given; "
            "pass one name per row"
        )
    return confusion
