"""Matplotlib figures for the UI and reports. Figures are built with the object API (no pyplot state), so
handlers on several threads can draw at once."""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.figure import Figure


def ranked_bars(predictions, title: str = "", max_label_chars: int = 48) -> Figure:
    """Horizontal bars of (label, score) pairs, best on top, with percentages; long labels wrapped."""
    predictions = list(predictions)
    height = 0.9 + 0.45 * max(1, len(predictions))
    fig = Figure(figsize=(6.4, height), layout="constrained")
    ax = fig.add_subplot()
    labels = [textwrap.shorten(p.label, max_label_chars, placeholder="…") for p in predictions][::-1]
    scores = np.array([p.score for p in predictions][::-1]) * 100
    bars = ax.barh(range(len(scores)), scores, color="#4c72b0")
    if len(bars):
        bars[-1].set_color("#dd8452")  # the top prediction
    ax.set_yticks(range(len(scores)), labels)
    ax.set_xlim(0, 100 * 1.15)
    ax.set_xlabel("probability (%)")
    for i, s in enumerate(scores):
        ax.text(s + 1, i, f"{s:.1f}%", va="center", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=11)
    return fig


def confusion_figure(matrix, class_names, title: str = "Confusion matrix (held-out split)") -> Figure:
    matrix = np.asarray(matrix)
    n = len(class_names)
    size = min(12, 3 + 0.35 * n)
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    if n <= 40:  # beyond that, names are unreadable anyway
        names = [textwrap.shorten(c, 24, placeholder="…") for c in class_names]
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
    if n <= 15:
        for (i, j), v in np.ndenumerate(matrix):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=11)
    return fig


def training_curves(history: list[dict], title: str = "Training") -> Figure:
    """Loss per step and validation accuracy per epoch, from a job's progress events."""
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    steps = [h for h in history if "loss" in h and "step" in h]
    loss_ax.plot([h["step"] for h in steps], [h["loss"] for h in steps], color="#4c72b0")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("training loss")
    evals = [h for h in history if h.get("val_acc") is not None]
    acc_ax.plot([h["epoch"] for h in evals], [100 * h["val_acc"] for h in evals], marker="o", color="#dd8452")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("validation accuracy (%)")
    acc_ax.set_ylim(0, 100)
    fig.suptitle(title, fontsize=11)
    return fig
