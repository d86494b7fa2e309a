"""GZ10 classification metrics as an offline `evaluate.Metric`, and the Trainer hook (figures: `.confusion`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

from ..constants import GZ10_CLASSES, NUM_CLASSES
from ..errors import HfgalError

_DESCRIPTION = """\
Galaxy10 DECaLS classification metrics: accuracy with its 95 % Wilson score interval, balanced accuracy, macro F1,
per-class precision / recall / F1 / support and the confusion matrix (rows = true class, columns = predicted).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids.
    num_classes (`int`): number of classes (10 for GZ10).
    class_names (`list` of `str`): one name per class id, used as keys of `per_class`.
Returns:
    accuracy, balanced_accuracy, macro_f1, accuracy_ci95 ([lo, hi]), num_examples, per_class, confusion_matrix.
Examples:
    >>> metric = GZ10Metrics(keep_in_memory=True)
    >>> metric.compute(predictions=[0, 1, 2], references=[0, 1, 1])["accuracy"]
    0.6666666666666666
"""

_CITATION = """\
@article{Leung2019, title = {Galaxy10 DECaLS}, author = {Leung, Henry W. and Bovy, Jo}, year = {2019}}
"""


class GZ10Metrics(evaluate.Metric):
    """All GZ10 test-set numbers in one `evaluate` module that needs no Hub download.

    Build it with `keep_in_memory=True` (as `compute_gz10_metrics` does) so nothing is cached on disk.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            format="numpy",
            reference_urls=["https://github.com/henrysky/Galaxy10"],
        )

    def _build_data_dir(self) -> str:
        # evaluate creates ~/.cache/huggingface/metrics/<name>/ even for in-memory metrics, which never use it:
        # keep in-memory runs from touching the user's home.
        path = os.path.join(self._data_dir_root, self.name, self.config_name)
        if not self.keep_in_memory:
            os.makedirs(path, exist_ok=True)
        return path

    def _compute(
        self,
        predictions,
        references,
        num_classes: int = NUM_CLASSES,
        class_names: Sequence[str] = GZ10_CLASSES,
    ) -> dict[str, Any]:
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        class_names = list(class_names)
        if len(class_names) != num_classes:
            raise HfgalError(f"{len(class_names)} class names for num_classes={num_classes}; pass one name per class")
        n = len(references)
        if n == 0:
            raise HfgalError("no examples to score; evaluate on a non-empty split")
        for what, ids in (("predictions", predictions), ("references", references)):
            bad = ids[(ids < 0) | (ids >= num_classes)]
            if bad.size:
                raise HfgalError(f"{what} hold class id {int(bad[0])} outside 0..{num_classes - 1}; check the labels")

        confusion = np.bincount(references * num_classes + predictions, minlength=num_classes**2).reshape(
            num_classes, num_classes
        )
        tp = np.diag(confusion).astype(np.float64)
        support = confusion.sum(axis=1)
        predicted = confusion.sum(axis=0)
        # zero_division=0 as in scikit-learn: a class never predicted has precision 0, one never seen recall 0.
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
        # scikit-learn's defaults: macro F1 over the classes seen in references or predictions, balanced accuracy
        # over the classes seen in references, so a small split missing a class is not scored as if it failed it.
        seen = (support > 0) | (predicted > 0)
        correct = int(tp.sum())
        return {
            "accuracy": correct / n,
            "balanced_accuracy": float(recall[support > 0].mean()),
            "macro_f1": float(f1[seen].mean()),
            "accuracy_ci95": accuracy_interval(correct, n),
            "num_examples": int(n),
            "per_class": {
                name: {
                    "precision": float(precision[i]),
                    "recall": float(recall[i]),
                    "f1": float(f1[i]),
                    "support": int(support[i]),
                }
                for i, name in enumerate(class_names)
            },
            "confusion_matrix": confusion.tolist(),
        }


def accuracy_interval(correct: int, n: int) -> list[float]:
    """The 95 % Wilson score interval of an accuracy of `correct` out of `n` test images.

    Test images are scored independently, so the number correct is binomial; Wilson's interval keeps its nominal
    coverage near 0 and 1 and at small n, where the normal approximation does not, and it is closed-form (the
    same numbers on every machine, no resampling seed).

    Args:
        correct: images classified correctly.
        n: images scored (at least 1).

    Returns:
        [low, high], within [0, 1].
    """
    from scipy.stats import binomtest

    interval = binomtest(int(correct), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(interval.low), float(interval.high)]


def compute_gz10_metrics(predictions, references, **kwargs) -> dict[str, Any]:
    """Score predicted GZ10 class ids against the true ones, entirely in memory.

    Args:
        predictions: predicted class ids, any 1-D int sequence / array / tensor.
        references: true class ids, same length.
        **kwargs: `num_classes` (default 10), `class_names` (default the GZ10 names).

    Returns:
        The METRICS dict of results.json: accuracy, balanced_accuracy, macro_f1, accuracy_ci95, num_examples,
        per_class {name: {precision, recall, f1, support}}, confusion_matrix (rows = true class).

    Raises:
        HfgalError: if lengths differ, nothing is given, or an id is outside 0..num_classes-1.
    """
    predictions = _as_ids(predictions, "predictions")
    references = _as_ids(references, "references")
    if len(predictions) != len(references):
        raise HfgalError(
            f"{len(predictions)} predictions for {len(references)} references; pass one prediction per example"
        )
    metric = GZ10Metrics(keep_in_memory=True)
    return metric.compute(predictions=predictions, references=references, **kwargs)


def _as_ids(values, what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensors, possibly on an accelerator
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise HfgalError(f"{what} have shape {array.shape}; pass a 1-D sequence of class ids (argmax the logits)")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(array == np.round(array)):
            raise HfgalError(f"{what} are not integer class ids (dtype {array.dtype}); pass class ids")
    return array.astype(np.int64)


def compute_metrics_fn(eval_pred) -> dict[str, float]:
    """`compute_metrics` for `transformers.Trainer`: the scalar GZ10 metrics of one evaluation.

    Args:
        eval_pred: an `EvalPrediction` (or `(predictions, label_ids)` tuple) whose predictions are logits
            `(N, C)` or class ids `(N,)`; a tuple of model outputs uses its first element.

    Returns:
        {"accuracy", "balanced_accuracy", "macro_f1"} as floats; Trainer logs scalars only, so the full
        METRICS dict is computed separately on the final test predictions.
    """
    if hasattr(eval_pred, "predictions"):
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
    else:
        predictions, labels = eval_pred
    if isinstance(predictions, (tuple, list)) and predictions and not np.isscalar(predictions[0]):
        predictions = predictions[0]
    predictions = np.asarray(predictions)
    num_classes = NUM_CLASSES
    if predictions.ndim == 2:
        # A tiny test model may have another head size; its classes then get their ids as names.
        num_classes = max(predictions.shape[1], 1)
        predictions = predictions.argmax(axis=-1)
    class_names = GZ10_CLASSES if num_classes == NUM_CLASSES else tuple(str(i) for i in range(num_classes))
    metrics = compute_gz10_metrics(
        predictions, np.asarray(labels).reshape(-1), num_classes=num_classes, class_names=class_names
    )
    return {key: metrics[key] for key in ("accuracy", "balanced_accuracy", "macro_f1")}
