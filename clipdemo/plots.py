"""Matplotlib figures for the UI and reports. Figures are built with the object API (no pyplot state), so
handlers on several threads can draw at once."""

from __future__ import annotations

import functools
import logging
import textwrap
from pathlib import Path

import numpy as np
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

log = logging.getLogger(__name__)

# Labels and class names come in any script. Matplotlib falls back from font to font glyph by glyph, so
# text that carries them gets this chain (the installed ones; packages.txt installs them on Spaces and
# Debian). Short on purpose: all 172 Noto families would cost 2.5 s a chart.
FONT_FALLBACKS = (
    "DejaVu Sans",  # Latin, Greek, Cyrillic
    "Droid Sans Fallback",  # Chinese, Japanese, Korean
    "Noto Sans Devanagari",
    "Noto Sans Bengali",
    "Noto Sans Tamil",
    "Noto Sans Arabic",
    "Noto Sans Hebrew",
    "Noto Sans Thai",
    "Noto Sans Georgian",
    "Noto Sans Armenian",
    "Symbola",  # emoji (in monochrome) and symbols
)


@functools.cache
def user_text_fonts() -> list[str]:
    installed = {font.name for font in font_manager.fontManager.ttflist}
    if not set(FONT_FALLBACKS) <= installed and refresh_font_cache():
        installed = {font.name for font in font_manager.fontManager.ttflist}
    return [name for name in FONT_FALLBACKS if name in installed] or ["sans-serif"]


def fonts_for(texts) -> list[str]:
    """The fallback chain only where a text needs it: plain Latin text drawn with DejaVu Sans alone (bundled with
    matplotlib) skips a font lookup per family per label, which was most of a 16 x 20 matrix's drawing time."""
    if all(ord(ch) < 0x250 for text in texts for ch in text):
        return ["DejaVu Sans"]
    return user_text_fonts()


def refresh_font_cache() -> int:
    """Add the system fonts matplotlib's cached font list doesn't know; returns how many were added.

    Matplotlib scans the system fonts once and caches the list (``fontlist-*.json`` in its cache dir). A process
    that imported it before ``packages.txt``'s fonts were installed (``python app.py`` on a fresh machine, then
    the install) left a list without them, and every later chart would miss their glyphs for good. The repaired
    list is written back, so the next process starts right.
    """
    manager = font_manager.fontManager
    known = {font.fname for font in manager.ttflist} | {font.fname for font in manager.afmlist}
    added = 0
    for path in font_manager.findSystemFonts():
        if path not in known:
            try:
                manager.addfont(path)
                added += 1
            except Exception:  # a broken font file: matplotlib's own scan skips those too
                log.debug("skipping font %s", path)
    if added:
        log.info("matplotlib's font cache missed %d installed fonts; added and saved", added)
        try:
            font_manager.json_dump(manager, Path(matplotlib_cache_dir(), f"fontlist-v{manager.__version__}.json"))
        except OSError:
            pass  # a read-only cache dir: this process still has the fonts
    return added


def matplotlib_cache_dir() -> str:
    import matplotlib

    return matplotlib.get_cachedir()


def _bars(ax, predictions, xlabel: str, threshold: float | None = None, max_label_chars: int = 48) -> None:
    labels = [textwrap.shorten(p.label, max_label_chars, placeholder="…") for p in predictions][::-1]
    scores = np.array([p.score for p in predictions][::-1]) * 100
    bars = ax.barh(range(len(scores)), scores, color="#4c72b0")
    if len(bars):
        bars[-1].set_color("#dd8452")  # the top prediction
    ax.set_yticks(range(len(scores)), labels, fontfamily=user_text_fonts())
    ax.set_xlim(0, 100 * 1.15)
    ax.set_xlabel(xlabel)
    for i, s in enumerate(scores):
        ax.text(s + 1, i, f"{s:.1f}%", va="center", fontsize=9)
    if threshold is not None:
        ax.axvline(
            100 * threshold,
            color="#c44e52",
            linestyle="--",
            linewidth=1.2,
            label=f'"none of these" below {100 * threshold:g}%',
        )
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)


def ranked_bars(
    predictions,
    title: str = "",
    max_label_chars: int = 48,
    xlabel: str = "probability (%)",
    threshold: float | None = None,
) -> Figure:
    """Horizontal bars of (label, score) pairs, best on top, with percentages; long labels wrapped. A
    ``threshold`` (open set) is drawn as a dashed line."""
    predictions = list(predictions)
    height = 0.9 + 0.45 * max(1, len(predictions))
    fig = Figure(figsize=(6.4, height), layout="constrained")
    _bars(fig.add_subplot(), predictions, xlabel, threshold, max_label_chars)
    if title:
        fig.axes[0].set_title(title, fontsize=11, fontfamily=user_text_fonts())
    return fig


def compare_bars(panels, title: str = "") -> Figure:
    """Two (or more) models on the same image, one panel each, stacked (they stay readable in a narrow column):
    ``panels`` is a list of (model name, predictions, x label, threshold). Each panel ranks by its own model;
    scores are on each family's own scale, said under each panel."""
    heights = [0.9 + 0.45 * max(1, len(p[1])) for p in panels]
    fig = Figure(figsize=(6.4, 0.4 + sum(heights)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (name, predictions, xlabel, threshold) in zip(axes, panels):
        _bars(ax, list(predictions), xlabel, threshold)
        ax.set_title(
            textwrap.shorten(name, 60, placeholder="…"), fontsize=10, fontfamily=user_text_fonts(), loc="right"
        )
    if title:
        fig.suptitle(title, fontsize=10, fontfamily=user_text_fonts(), x=0.99, ha="right")  # clear of Gradio's badge
    return fig


MATRIX_NUMBERS = 150  # cells up to which each shows its value; beyond, colour alone reads faster (and draws 3x faster)


def score_matrix(scores, image_names, labels, title: str = "", none_of_these=None, top_k: int = 1) -> Figure:
    """Image x label heatmap of scores in [0, 1] (rows: images, columns: labels), the value in each cell (up to
    ``MATRIX_NUMBERS`` cells) and each image's top ``top_k`` outlined; images with nothing above the threshold are
    marked "none of these". Margins are set from the label lengths, not by a layout solver: with 320 cells the
    solver cost more than drawing."""
    scores = np.asarray(scores, dtype=float) * 100
    n, m = scores.shape
    names = [textwrap.shorten(c, 28, placeholder="…") for c in labels]
    none_of_these = list(none_of_these or [False] * n)
    rows = [
        textwrap.shorten(name, 24, placeholder="…") + ("  (none of these)" if none else "")
        for name, none in zip(image_names, none_of_these)
    ]
    rotate = m > 4
    left = 0.3 + 0.075 * max(len(r) for r in rows)  # inches, 9 pt text
    bottom = 0.5 + (0.075 * 0.6 * max(len(c) for c in names) if rotate else 0.2)
    cell_w, cell_h = (0.75, 0.5) if n * m <= MATRIX_NUMBERS else (0.5, 0.36)
    width, height = left + cell_w * m + 1.3, bottom + cell_h * n + 0.45  # 1.3: the colour bar; 0.45: the title
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((left / width, bottom / height, cell_w * m / width, cell_h * n / height))
    bar = fig.add_axes(((left + cell_w * m + 0.2) / width, bottom / height, 0.15 / width, cell_h * n / height))
    image = ax.imshow(scores, cmap="Blues", vmin=0, vmax=max(1e-9, scores.max()), aspect="auto")
    ax.set_xticks(
        range(m),
        names,
        rotation=35 if rotate else 0,
        ha="right" if rotate else "center",
        fontsize=9,
        fontfamily=fonts_for(names),
    )
    ax.set_yticks(range(n), rows, fontsize=9, fontfamily=fonts_for(rows))
    for tick, none in zip(ax.get_yticklabels(), none_of_these):
        if none:
            tick.set_color("#c44e52")
    if n * m <= MATRIX_NUMBERS:
        dark = scores.max() * 0.6
        for (i, j), v in np.ndenumerate(scores):
            ax.text(
                j,
                i,
                f"{v:.0f}" if v >= 9.5 else f"{v:.1f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if v > dark else "black",
            )
    k = max(1, min(top_k, m))
    for i, row in enumerate(scores):
        for j in np.argsort(-row, kind="stable")[:k]:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#f28e2b", linewidth=3))
    # white lines between cells: two line collections (minor ticks would be one artist per tick)
    ax.hlines(np.arange(0.5, n - 1), -0.5, m - 0.5, color="white", linewidth=1)
    ax.vlines(np.arange(0.5, m - 1), -0.5, n - 0.5, color="white", linewidth=1)
    fig.colorbar(image, cax=bar, label="score (%)")
    if title:
        ax.set_title(title, fontsize=10, fontfamily=fonts_for([title]), loc="right")  # clear of Gradio's badge
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
    """Loss per step and validation accuracy per epoch, from a job's progress events. Events with no epoch (a
    head's search scores a candidate per fit) plot their accuracy per step; with no loss reported, that alone."""
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    steps = [h for h in history if "loss" in h and "step" in h]
    loss_ax, acc_ax = fig.subplots(1, 2) if steps else (None, fig.subplots(1, 1))
    if loss_ax is not None:
        loss_ax.plot([h["step"] for h in steps], [h["loss"] for h in steps], color="#4c72b0")
        loss_ax.set_xlabel("step")
        loss_ax.set_ylabel("training loss")
    evals = [h for h in history if h.get("val_acc") is not None]
    x = "epoch" if all(h.get("epoch") is not None for h in evals) else "step"
    acc_ax.plot([h.get(x) for h in evals], [100 * h["val_acc"] for h in evals], marker="o", color="#dd8452")
    acc_ax.set_xlabel(x)
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
        ax.scatter(
            xy[rows, 0],
            xy[rows, 1],
            s=36,
            color=colour,
            alpha=0.85,
            label=textwrap.shorten(str(name), 28, placeholder="…"),
        )
    if query_xy is not None:
        ax.scatter(
            [query_xy[0]],
            [query_xy[1]],
            marker="*",
            s=420,
            color="black",
            edgecolor="white",
            linewidth=1.2,
            zorder=5,
            label=query_label,
        )
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
