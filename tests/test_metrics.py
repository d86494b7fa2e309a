"""GZ10 metrics: hand-computed cases, the Wilson interval, the confusion-matrix figure, scikit-learn parity."""

from __future__ import annotations

import numpy as np
import pytest

from hfgal.constants import GZ10_CLASSES
from hfgal.errors import HfgalError
from hfgal.runs import most_confused_pairs, plot_confusion_matrix
from hfgal.train.metrics import GZ10Metrics, accuracy_interval, compute_gz10_metrics, compute_metrics_fn

METRIC_KEYS = {
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "accuracy_ci95",
    "num_examples",
    "per_class",
    "confusion_matrix",
}


def test_perfect_predictions():
    labels = np.repeat(np.arange(10), 3)
    m = compute_gz10_metrics(labels, labels)
    assert set(m) == METRIC_KEYS
    assert m["accuracy"] == m["balanced_accuracy"] == m["macro_f1"] == 1.0
    assert m["accuracy_ci95"] == pytest.approx([30 / (30 + 1.959964**2), 1.0])  # Wilson's lower bound at p = 1
    assert m["num_examples"] == 30
    assert list(m["per_class"]) == list(GZ10_CLASSES)
    for stats in m["per_class"].values():
        assert stats == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3}
    assert m["confusion_matrix"] == (3 * np.eye(10, dtype=int)).tolist()


def test_known_confusion_by_hand():
    # true a a a b b c / predicted a a b b c c
    m = compute_gz10_metrics([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 2], num_classes=3, class_names=["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_absent_classes_count_as_zero_and_are_left_out_of_averages():
    refs = [0, 0, 1, 1]
    preds = [0, 2, 1, 1]  # class 2 is predicted but never true; classes 3-9 never appear
    m = compute_gz10_metrics(preds, refs)
    names = GZ10_CLASSES
    assert m["per_class"][names[2]] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"][names[7]] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"][names[0]] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    # balanced accuracy over the classes present in the references (0 and 1)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    # macro F1 over the classes seen in references or predictions (0, 1, 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert m["accuracy"] == 0.75


@pytest.mark.parametrize(
    ("correct", "n", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (score interval without continuity
        # correction), to the 4 decimals it prints.
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (86, 100, 0.7786, 0.9147),
    ],
)
def test_accuracy_interval_is_the_wilson_score_interval(correct, n, low, high):
    assert accuracy_interval(correct, n) == pytest.approx([low, high], abs=5e-5)
    # The closed form: centre (p + z^2/2n) / (1 + z^2/n), half-width z / (1 + z^2/n) sqrt(p(1-p)/n + z^2/4n^2).
    p, z = correct / n, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert accuracy_interval(correct, n) == pytest.approx([centre - half, centre + half], abs=1e-12)


@pytest.mark.parametrize("n", [1, 7, 200, 10_000])
def test_accuracy_interval_edges_stay_in_0_1_and_bracket_the_accuracy(n):
    none_right, all_right = accuracy_interval(0, n), accuracy_interval(n, n)
    assert none_right[0] == 0.0 and 0.0 < none_right[1] < 1.0
    assert all_right[1] == 1.0 and 0.0 < all_right[0] < 1.0
    assert all_right == pytest.approx([1 - none_right[1], 1.0])  # symmetric under correct <-> wrong
    for correct in range(0, n + 1, max(1, n // 10)):
        low, high = accuracy_interval(correct, n)
        assert 0.0 <= low <= correct / n <= high <= 1.0


def test_metrics_interval_is_the_wilson_interval_of_the_test_accuracy():
    rng = np.random.default_rng(3)
    refs = rng.integers(0, 10, 400)
    preds = np.where(rng.random(400) < 0.7, refs, (refs + 1) % 10)
    m = compute_gz10_metrics(preds, refs)
    correct = int((preds == refs).sum())
    assert m["accuracy"] == correct / 400
    assert m["accuracy_ci95"] == accuracy_interval(correct, 400)
    lo, hi = m["accuracy_ci95"]
    # a binomial 95 % interval for n=400 is about +-1.96 * sqrt(p(1-p)/n) = +-0.045
    assert lo < m["accuracy"] < hi and 0.06 < hi - lo < 0.12
    assert compute_gz10_metrics(preds, refs)["accuracy_ci95"] == m["accuracy_ci95"]  # no randomness


def test_metric_accumulates_batches_like_any_evaluate_module():
    metric = GZ10Metrics(keep_in_memory=True)
    metric.add_batch(predictions=[0, 1], references=[0, 1])
    metric.add_batch(predictions=[2, 2], references=[2, 3])
    m = metric.compute()
    assert m["num_examples"] == 4
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"][3][2] == 1


def test_in_memory_metric_writes_no_cache(tmp_path, monkeypatch):
    import evaluate

    cache = tmp_path / "hf_metrics_cache"
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", str(cache))
    compute_gz10_metrics([0, 1], [0, 1])
    assert not cache.exists()


@pytest.mark.parametrize(
    ("preds", "refs", "message"),
    [
        ([0, 1], [0, 1, 2], "2 predictions for 3 references"),
        ([0, 10], [0, 1], "class id 10 outside 0..9"),
        ([0, -1], [0, 1], "class id -1"),
        ([], [], "no examples"),
        (np.zeros((2, 10)), [0, 1], "1-D sequence"),
        ([0.5, 1.0], [0, 1], "not integer class ids"),
    ],
)
def test_bad_inputs_are_one_line_errors(preds, refs, message):
    with pytest.raises(HfgalError, match=message):
        compute_gz10_metrics(preds, refs)


def test_compute_metrics_fn_for_trainer():
    from transformers import EvalPrediction

    logits = np.full((4, 10), -1.0)
    logits[[0, 1, 2, 3], [0, 1, 2, 3]] = 5.0  # predicts 0 1 2 3
    out = compute_metrics_fn(EvalPrediction(predictions=logits, label_ids=np.array([0, 1, 2, 2])))
    assert out == pytest.approx(
        {"accuracy": 0.75, "balanced_accuracy": (1 + 1 + 0.5) / 3, "macro_f1": (1 + 1 + 2 / 3 + 0) / 4}
    )
    assert all(type(v) is float for v in out.values())
    # model outputs as a tuple (logits, hidden states) and already-argmaxed ids give the same scores
    assert compute_metrics_fn(EvalPrediction(predictions=(logits, np.zeros((4, 2))), label_ids=[0, 1, 2, 2])) == out
    assert compute_metrics_fn((logits.argmax(-1), np.array([0, 1, 2, 2]))) == out


def test_most_confused_pairs():
    confusion = np.diag([10] * 4)
    confusion[1, 2] = 5  # 5 of 15 true "b" predicted "c"
    confusion[2, 1] = 2
    confusion[3, 0] = 5  # 5 of 15 true "d" predicted "a": ties on count and rate, "b" row comes first
    confusion[0, 3] = 1
    pairs = most_confused_pairs(confusion, ["a", "b", "c", "d"], k=3)
    assert pairs == [
        {"true": "b", "predicted": "c", "count": 5, "rate": pytest.approx(5 / 15)},
        {"true": "d", "predicted": "a", "count": 5, "rate": pytest.approx(5 / 15)},
        {"true": "c", "predicted": "b", "count": 2, "rate": pytest.approx(2 / 12)},
    ]
    assert len(most_confused_pairs(confusion, ["a", "b", "c", "d"], k=10)) == 4  # zero-count pairs never listed
    assert most_confused_pairs(np.eye(3, dtype=int), ["a", "b", "c"]) == []
    with pytest.raises(HfgalError, match="3 classes but 2 class names"):
        most_confused_pairs(np.eye(3, dtype=int), ["a", "b"])


def test_confusion_matrix_png(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    refs = rng.integers(0, 10, 300)
    preds = np.where(rng.random(300) < 0.8, refs, rng.integers(0, 10, 300))
    confusion = compute_gz10_metrics(preds, refs)["confusion_matrix"]
    out = tmp_path / "figs" / "confusion_matrix.png"
    assert plot_confusion_matrix(confusion, GZ10_CLASSES, out, title="test") == out
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (900, 800)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert len(colours) > 100  # cells, labels and colourbar drawn, not a blank canvas
    assert sorted(p.name for p in out.parent.iterdir()) == ["confusion_matrix.png"]  # no temporary file left
    # a class with no examples (an all-zero row) is drawn as zeros, not NaN
    plot_confusion_matrix(np.zeros((3, 3), dtype=int), ["a", "b", "c"], out, dpi=50)
    with Image.open(out) as image:
        assert image.size == (450, 400)


def test_matches_scikit_learn():
    pytest.importorskip("sklearn")
    import warnings

    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    rng = np.random.default_rng(11)
    for _ in range(50):
        n = int(rng.integers(1, 80))
        present = rng.choice(10, size=int(rng.integers(1, 11)), replace=False)
        refs = rng.choice(present, size=n)
        preds = np.where(rng.random(n) < 0.6, refs, rng.integers(0, 10, n))
        m = compute_gz10_metrics(preds, refs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            precision, recall, f1, support = precision_recall_fscore_support(
                refs, preds, labels=list(range(10)), zero_division=0
            )
            assert m["accuracy"] == pytest.approx(accuracy_score(refs, preds))
            assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(refs, preds))
            assert m["macro_f1"] == pytest.approx(f1_score(refs, preds, average="macro", zero_division=0))
        per_class = [m["per_class"][name] for name in GZ10_CLASSES]
        assert [c["precision"] for c in per_class] == pytest.approx(precision.tolist())
        assert [c["recall"] for c in per_class] == pytest.approx(recall.tolist())
        assert [c["f1"] for c in per_class] == pytest.approx(f1.tolist())
        assert [c["support"] for c in per_class] == support.tolist()
        assert m["confusion_matrix"] == confusion_matrix(refs, preds, labels=list(range(10))).tolist()
