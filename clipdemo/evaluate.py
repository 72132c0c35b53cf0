"""Classification metrics as the field reports them (scikit-learn underneath)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score


def classification_metrics(labels, scores, num_classes: int | None = None) -> dict:
    """acc1, acc5, mean per-class recall, weighted F1, n and the confusion matrix.

    ``labels``: [N] true class indices; ``scores``: [N, C] class scores (logits or probabilities).
    Mean per-class recall averages over the classes present in ``labels`` (sklearn's balanced accuracy).
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.size == 0:
        raise ValueError("no samples to evaluate")
    c = num_classes or s.shape[1]
    classes = np.arange(c)
    pred = s.argmax(axis=1)
    top5 = np.argsort(-s, axis=1, kind="stable")[:, :5]
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected on small splits
        warnings.simplefilter("ignore", UserWarning)
        recall = float(balanced_accuracy_score(y, pred))
    return {
        "acc1": float((pred == y).mean()),
        "acc5": float((top5 == y[:, None]).any(axis=1).mean()),
        "mean_per_class_recall": recall,
        "weighted_f1": float(f1_score(y, pred, average="weighted", labels=np.unique(y), zero_division=0)),
        "n": int(y.size),
        "confusion": confusion_matrix(y, pred, labels=classes).tolist(),
    }
