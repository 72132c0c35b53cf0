"""Classification metrics as the field reports them (scikit-learn underneath), and the one zero-shot evaluator.

``Scores`` is what every evaluation in clipdemo returns: top-1 and top-5 accuracy, mean per-class recall,
weighted F1, the number of images and the confusion matrix. ``zero_shot_scores`` is how every zero-shot
number is made, for a HF CLIP, a SigLIP, a scratch CLIP or a head's backbone: each image embedding against each
ensembled class embedding, by the family's rule (``clipdemo.scoring``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

from clipdemo.scoring import Rule

SUMMARY_KEYS = ("acc1", "acc5", "mean_per_class_recall", "weighted_f1", "n")


@dataclass(frozen=True)
class Scores:
    acc1: float
    acc5: float
    mean_per_class_recall: float  # averaged over the classes present (scikit-learn's balanced accuracy)
    weighted_f1: float
    n: int  # images scored
    confusion: list[list[int]] = field(default_factory=list, repr=False)  # rows: true class, columns: predicted

    def summary(self) -> dict:
        """The headline numbers, without the confusion matrix (what a CLI line or a card's table shows)."""
        return {k: getattr(self, k) for k in SUMMARY_KEYS}

    def to_dict(self) -> dict:
        return {**self.summary(), "confusion": [list(row) for row in self.confusion]}  # asdict: 0.15 s at 196 classes

    @classmethod
    def from_dict(cls, data: dict) -> Scores:
        return cls(**{k: data[k] for k in (*SUMMARY_KEYS, "confusion") if k in data})


def classification_metrics(labels, scores, num_classes: int | None = None) -> Scores:
    """``labels``: [N] true class indices; ``scores``: [N, C] class scores (logits or probabilities)."""
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.size == 0:
        raise ValueError("no samples to evaluate")
    c = num_classes or s.shape[1]
    pred = s.argmax(axis=1)
    top5 = np.argsort(-s, axis=1, kind="stable")[:, :5]
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected on small splits
        warnings.simplefilter("ignore", UserWarning)
        recall = float(balanced_accuracy_score(y, pred))
    return Scores(
        acc1=float((pred == y).mean()),
        acc5=float((top5 == y[:, None]).any(axis=1).mean()),
        mean_per_class_recall=recall,
        weighted_f1=float(f1_score(y, pred, average="weighted", labels=np.unique(y), zero_division=0)),
        n=int(y.size),
        confusion=confusion_matrix(y, pred, labels=np.arange(c)).tolist(),
    )


def zero_shot_scores(image_features, labels, class_embeddings: torch.Tensor, rule: Rule) -> Scores:
    """Zero-shot metrics of L2-normalised image embeddings against the ensembled class embeddings, ranked by the
    family's ``rule`` (``clipdemo.scoring``)."""
    logits = rule.logits(torch.as_tensor(image_features), class_embeddings)
    return classification_metrics(torch.as_tensor(labels).numpy(), logits.numpy(), class_embeddings.shape[0])
