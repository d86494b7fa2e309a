"""How far a model's probabilities can be taken at their word: expected calibration error, the reliability diagram,
and temperature scaling.

A classifier is calibrated when, of the galaxies it gives 80 % to, 80 % are right. Fine-tuned networks are usually
over-confident; one temperature `T`, fitted on the validation split, fixes most of it without changing a single
predicted class (Guo et al. 2017, "On Calibration of Modern Neural Networks", ICML, arXiv:1706.04599).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import HfgalError
from ..io import atomic_file
from ..runs import CalibrationScores, ReliabilityBin

ECE_BINS = 15  # Guo et al. 2017 report ECE over 15 equal-width bins; the usual choice since
TEMPERATURE_RANGE = (0.05, 20.0)  # far wider than any fitted value in practice: a bound, not a prior


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """`log p` of probability rows, floored at the smallest positive float so that a 0 stays finite."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return np.log(np.clip(probabilities, np.finfo(np.float64).tiny, None))


def temper(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities after temperature scaling: `softmax(log p / T)`, row by row (float64).

    For a single forward pass `log p` is the logits up to a constant per row, so this is the textbook
    `softmax(logits / T)`; for probabilities averaged over the 8 dihedral views (TTA) it scales their average.
    """
    scaled = log_probabilities(probabilities) / float(temperature)
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean `-log p(true class)` in nats: what temperature scaling minimises, a proper scoring rule."""
    labels = np.asarray(labels, dtype=np.int64)
    return float(-log_probabilities(probabilities)[np.arange(len(labels)), labels].mean())


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """Group images by their top-label confidence into `n_bins` equal-width bins `((m-1)/M, m/M]`.

    Returns:
        One `ReliabilityBin` per bin: its edges, how many images fall in it, their mean confidence and the fraction
        of them predicted correctly (None for an empty bin).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probabilities.ndim != 2 or len(probabilities) != len(labels) or not len(labels):
        raise HfgalError(
            f"probabilities of shape {probabilities.shape} for {len(labels)} labels; pass one row per image"
        )
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)  # right-closed bins
    bins = []
    for m in range(n_bins):
        members = index == m
        count = int(members.sum())
        bins.append(
            ReliabilityBin(
                lower=float(edges[m]),
                upper=float(edges[m + 1]),
                count=count,
                confidence=float(confidence[members].mean()) if count else None,
                accuracy=float(correct[members].mean()) if count else None,
            )
        )
    return bins


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top label (Naeini et al. 2015, AAAI; Guo et al. 2017, eq. 3).

    `ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|` over `n_bins` equal-width bins of the confidence (the
    highest probability of each image): 0 for a calibrated model, at most 1.

    Args:
        probabilities: `(N, C)` rows summing to 1.
        labels: `(N,)` true class ids.
        n_bins: number of bins (15, as Guo et al.).

    Returns:
        The ECE as a fraction in [0, 1].
    """
    bins = reliability_bins(probabilities, labels, n_bins)
    n = sum(b.count for b in bins)
    return float(sum(b.count / n * abs(b.accuracy - b.confidence) for b in bins if b.count))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature `T` minimising the negative log-likelihood of `softmax(log p / T)` on these images.

    The NLL is convex in `1 / T`, so a bounded one-dimensional search (scipy's Brent method on `log T`) finds the
    optimum; the result is deterministic. Fit on validation, never on the split you report.

    Raises:
        HfgalError: fewer than two images, or a single class (nothing to calibrate against).
    """
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) < 2 or len(np.unique(labels)) < 2:
        raise HfgalError(f"cannot fit a temperature on {len(labels)} image(s) of one class; use a larger split")
    log_p = log_probabilities(probabilities)
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        scaled = log_p / np.exp(log_t)
        top = scaled.max(axis=1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
        return float((log_z - scaled[rows, labels]).mean())

    low, high = np.log(TEMPERATURE_RANGE)
    return float(np.exp(minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-6}).x))


def calibration_scores(probabilities: np.ndarray, labels: np.ndarray, temperature: float) -> CalibrationScores:
    """ECE and NLL of one split before and after the temperature."""
    tempered = temper(probabilities, temperature)
    return CalibrationScores(
        num_examples=len(labels),
        ece_before=expected_calibration_error(probabilities, labels),
        ece_after=expected_calibration_error(tempered, labels),
        nll_before=negative_log_likelihood(probabilities, labels),
        nll_after=negative_log_likelihood(tempered, labels),
    )


def plot_reliability_diagram(
    panels: list[tuple[str, list[ReliabilityBin], float]], path: str | os.PathLike, title: str | None = None
) -> Path:
    """Draw reliability diagrams side by side (accuracy against confidence per bin, with the share of images per
    bin below) to a PNG, atomically.

    Args:
        panels: `(label, bins, ECE)` per diagram, e.g. the model's probabilities and the calibrated ones.
        path: where to write the PNG.
        title: the figure's title.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6 * len(panels), 5.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # a bare Figure on the Agg canvas: no pyplot state, safe on clusters
    axes = fig.subplots(2, len(panels), squeeze=False, height_ratios=(3, 1), sharex=True)
    n = max(1, sum(b.count for b in panels[0][1]))
    for column, (label, bins, ece) in enumerate(panels):
        top, bottom = axes[0][column], axes[1][column]
        filled = [b for b in bins if b.count]
        centres = [(b.lower + b.upper) / 2 for b in filled]
        width = bins[0].upper - bins[0].lower
        accuracy = [b.accuracy for b in filled]
        top.bar(centres, accuracy, width=width, color="#4C72B0", edgecolor="black", label="accuracy")
        top.bar(
            centres,
            [b.confidence - b.accuracy for b in filled],
            bottom=accuracy,
            width=width,
            color="#DD8452",
            alpha=0.45,
            edgecolor="#DD8452",
            hatch="//",
            label="gap to confidence",
        )
        top.plot([0, 1], [0, 1], "k--", linewidth=1, label="calibrated")
        top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{label}\nECE {100 * ece:.2f} %")
        top.legend(loc="upper left", fontsize=8)
        bottom.bar([(b.lower + b.upper) / 2 for b in bins], [b.count / n for b in bins], width=width, color="grey")
        bottom.set(xlim=(0, 1), xlabel="confidence (top-class probability)", ylabel="share of images")
    if title:
        fig.suptitle(title)
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png")
    return Path(path)
