"""Matplotlib figures for the UI and reports. Figures are built with the object API (no pyplot state), so
handlers on several threads can draw at once."""

from __future__ import annotations

import functools
import textwrap

import numpy as np
from matplotlib import font_manager
from matplotlib.figure import Figure

# Labels and class names come in any script. Matplotlib falls back from font to font glyph by glyph, so
# text that carries them gets this chain (the installed ones; packages.txt installs them on Spaces and
# Debian). Short on purpose: all 172 Noto families would cost 2.5 s a chart.
FONT_FALLBACKS = (
    "DejaVu Sans",  # Latin, Greek, Cyrillic
    "Droid Sans Fallback",  # Chinese, Japanese, Korean
    "Noto Sans Devanagari", "Noto Sans Bengali", "Noto Sans Tamil", "Noto Sans Arabic", "Noto Sans Hebrew",
    "Noto Sans Thai", "Noto Sans Georgian", "Noto Sans Armenian",
    "Symbola",  # emoji (in monochrome) and symbols
)


@functools.cache
def user_text_fonts() -> list[str]:
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return [name for name in FONT_FALLBACKS if name in installed] or ["sans-serif"]


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
    ax.set_yticks(range(len(scores)), labels, fontfamily=user_text_fonts())
    ax.set_xlim(0, 100 * 1.15)
    ax.set_xlabel("probability (%)")
    for i, s in enumerate(scores):
        ax.text(s + 1, i, f"{s:.1f}%", va="center", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=11, fontfamily=user_text_fonts())
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
        ax.set_xticks(range(n), names, rotation=90, fontsize=7, fontfamily=user_text_fonts())
        ax.set_yticks(range(n), names, fontsize=7, fontfamily=user_text_fonts())
    if n <= 15:
        dark = matrix.max() / 2  # white counts on the dark cells, as scikit-learn's ConfusionMatrixDisplay does
        for (i, j), v in np.ndenumerate(matrix):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > dark else "black")
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


def embedding_map(xy, groups, query_xy=None, title: str = "", query_label: str = "query") -> Figure:
    """A 2-D map of a set of images (one dot each, coloured by ``groups``), the query marked with a star."""
    xy = np.asarray(xy, dtype=float)
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    names = list(dict.fromkeys(groups))
    colours = matplotlib_colours(len(names))
    for name, colour in zip(names, colours):
        rows = [i for i, g in enumerate(groups) if g == name]
        ax.scatter(xy[rows, 0], xy[rows, 1], s=36, color=colour, alpha=0.85,
                   label=textwrap.shorten(str(name), 28, placeholder="…"))  # fmt: skip
    if query_xy is not None:
        ax.scatter([query_xy[0]], [query_xy[1]], marker="*", s=420, color="black", edgecolor="white",
                   linewidth=1.2, zorder=5, label=query_label)  # fmt: skip
    if len(names) <= 12 or query_xy is not None:
        ax.legend(loc="best", fontsize=8, prop={"family": user_text_fonts(), "size": 8}, framealpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontfamily=user_text_fonts())
    return fig


def matplotlib_colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
