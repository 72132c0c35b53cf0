"""What the Zero-shot tab shows, as data the browser draws: the bars as a table for Gradio's native bar plot (no
figure drawn and encoded on the server per request) and the image x label matrix and top-k table as HTML tables.
Every display speaks in the score it shows (``unit``); the CLI's PNGs stay in ``clipdemo.plots`` (matplotlib).

A panel is ``(model name, ZeroShotResult)``: one, or two in compare mode, which every display carries."""

from __future__ import annotations

import html
from dataclasses import dataclass

from clipdemo.zeroshot import SIGMOID, ZeroShotResult, shorten

PERCENT, COSINE = "%", "cosine"
# per model: (bars that reach the threshold or no threshold, bars below it); colour-blind-safe blue and orange
COLOURS = (("#4c72b0", "#b3c6e6"), ("#dd8452", "#f5cfb3"))
THRESHOLD_COLOURS = ("#c44e52", "#8c1c1f")
ZERO_WIDTH = "\u200b"  # an invisible axis category: two models' bars of one label side by side, not stacked
NONE_OF_THESE = "none of these"
KINDS = {  # (scoring, unit): the score's name in short, for a chart's axis (whose title is cut beyond ~35 characters)
    ("softmax", PERCENT): "softmax %",
    ("sigmoid", PERCENT): "sigmoid %",
    ("softmax", COSINE): "cosine",
}


def unit(result: ZeroShotResult) -> str:
    """A CLIP model's several-labels mode shows the signed cosine; everything else a probability in %."""
    return COSINE if result.score_name == "cosine similarity" else PERCENT


def shown(result: ZeroShotResult, score: float) -> str:
    """A score as the display says it: "23.1%" or a signed cosine "+0.23" / "−0.05"."""
    return f"{100 * score:.1f}%" if unit(result) == PERCENT else f"{score:+.2f}".replace("-", "−")


def axis(result: ZeroShotResult) -> str:
    if result.scoring == SIGMOID:
        return "probability (%), each label on its own (sigmoid)"
    if unit(result) == COSINE:
        return "cosine similarity, each label on its own"
    return "probability (%), softmax over the labels"


def threshold_words(result: ZeroShotResult) -> str:
    """The threshold in the unit it is compared in: "probability 10%" or "cosine 0.20"."""
    if result.threshold_name == "probability":
        return f"probability {100 * result.threshold:g}%"
    return f"cosine {result.threshold:.2f}"


def verdict(result: ZeroShotResult, image: int = 0, short: bool = False) -> str:
    """Why an image is "none of these", on the scale that decided it; empty when it isn't."""
    if not result.none_of_these()[image]:
        return ""
    if result.drawn_threshold is not None:
        return f"{NONE_OF_THESE}: no label reaches {threshold_words(result)}"
    best = float(result.similarity[image].max())
    why = "" if short else " (decided on the cosine, not on the probabilities)"
    return f"{NONE_OF_THESE}: best cosine {best:.2f} < {result.threshold:.2f}{why}"


@dataclass(frozen=True)
class BarChart:
    """A native bar plot's value and settings: ``table`` has the columns label (x), score (y), series (colour),
    full label and score text (tooltip); ``caption`` (under the chart) says what it shows and the verdict."""

    table: object  # pandas.DataFrame
    caption: str
    y_title: str
    y_lim: list[float]
    order: list[str]  # the x categories, left to right
    colours: dict[str, str]
    legend: bool
    legend_title: str


def _series(name: str, result: ZeroShotResult, index: int, score: float, compare: bool) -> tuple[str, str]:
    """(series name, colour) of a bar: the model (and its kind of score) in compare mode, and which side of a drawn
    threshold it is on."""
    name = f"{shorten(name, 28)} ({KINDS[(result.scoring, unit(result))]})"
    prefix = f"{name}: " if compare else ""
    strong, pale = COLOURS[index % len(COLOURS)]
    if result.drawn_threshold is None:
        return (name if compare else "score"), strong
    if score >= result.drawn_threshold:
        return f"{prefix}reaches {threshold_words(result)}", strong
    return f"{prefix}below {threshold_words(result)}", pale


def bar_chart(panels: list[tuple[str, ZeroShotResult]], top_k: int | None, image: int = 0) -> BarChart:
    """Image ``image``'s top-k labels of each panel, grouped by label (the first model's order), every bar drawn
    even when none reaches the threshold (the title then says so)."""
    import pandas as pd

    compare, units = len(panels) > 1, {unit(r) for _, r in panels}
    scale = 100.0 if units != {COSINE} else 1.0  # mixed units: cosines x 100 beside the percentages
    labels = list(dict.fromkeys(p.label for _, r in panels for p in r.bars(top_k)[image]))
    names = _categories(labels)
    rows, order, colours = [], [], {}
    for label in labels:
        for index, (name, result) in enumerate(panels):
            score = float(result.shown[image, result.labels.index(label)])
            series, colour = _series(name, result, index, score, compare)
            colours[series] = colour
            # the second model's bar sits beside the first's with no text of its own (its tooltip names it)
            category = names[label] if index == 0 else ZERO_WIDTH * (len(order) + 1)
            order.append(category)
            value = round(score * (scale if unit(result) == COSINE else 100), 3)
            rows.append((category, value, series, label, shown(result, score)))
    rows += _threshold_bars(panels, scale, order, colours)
    table = pd.DataFrame(rows, columns=["label", "score", "series", "full label", "score (text)"])
    values = list(table["score"]) + [_drawn(r, scale) for _, r in panels if r.drawn_threshold is not None]
    margin = 0.05 if units == {COSINE} else 5.0  # room under a negative cosine, above the highest one
    low = 0.0 if min(values) >= 0 else round(min(values) - margin, 2)
    y_lim = [low, round(max(values) + margin, 2) if units == {COSINE} else 100.0]
    legend = compare or any(r.drawn_threshold is not None for _, r in panels)  # it names the threshold
    caption = _caption(panels, top_k, image)
    legend_title = "model" if compare else "threshold"
    return BarChart(table, caption, _y_title(panels, scale), y_lim, order, colours, legend, legend_title)


def _threshold_bars(panels, scale: float, order: list[str], colours: dict[str, str]) -> list[tuple]:
    """A native plot draws no rule line: each drawn threshold is a red bar of its own, last, on the same axis."""
    rows = []
    for index, (name, result) in enumerate(panels):
        if result.drawn_threshold is None:
            continue
        category = "threshold" if not order or "threshold" not in order else ZERO_WIDTH * (len(order) + 1)
        series = (f"{shorten(name, 28)}: " if len(panels) > 1 else "") + f"threshold {_threshold_value(result)}"
        colours[series] = THRESHOLD_COLOURS[index % len(THRESHOLD_COLOURS)]
        order.append(category)
        words = f'the threshold: "{NONE_OF_THESE}" when no label reaches it'
        rows.append((category, round(_drawn(result, scale), 3), series, words, threshold_words(result)))
    return rows


def _categories(labels: list[str], width: int = 28) -> dict[str, str]:
    """Each label's axis text: shortened (the full label is in the tooltip), and distinct."""
    names, seen = {}, set()
    for label in labels:
        name = shorten(label, width)
        while name in seen:
            name += " "
        seen.add(name)
        names[label] = name
    return names


def _drawn(result: ZeroShotResult, scale: float) -> float:
    return result.drawn_threshold * (scale if unit(result) == COSINE else 100)


def _kind(result: ZeroShotResult, scale: float) -> str:
    return KINDS[(result.scoring, unit(result))] + (" ×100" if unit(result) == COSINE and scale != 1 else "")


def _y_title(panels, scale: float) -> str:
    """The axis in the score it shows (short: the chart cuts a long one), with the threshold where it is drawn on
    it; in compare mode each model's kind of score (the legend says which model has which)."""
    if len(panels) == 1:
        result = panels[0][1]
        name = {PERCENT: "probability (%)", COSINE: "cosine similarity"}[unit(result)]
        name += f" · {result.scoring}" if unit(result) == PERCENT else ""
        return name + (f" · threshold {_threshold_value(result)}" if result.drawn_threshold is not None else "")
    return "score: " + " / ".join(dict.fromkeys(_kind(r, scale) for _, r in panels))


def _threshold_value(result: ZeroShotResult) -> str:
    return threshold_words(result).split(" ", 1)[1]  # "10%", "0.20": the axis already names the score


def _caption(panels, top_k: int | None, image: int) -> str:
    first = panels[0][1]
    n_images, n_labels = len(first.scores), len(first.labels)
    shown_k = len(first.bars(top_k)[image])
    head = f"image {image + 1} of {n_images}: " if n_images > 1 else ""
    if len(panels) > 1:
        text = head + " vs ".join(shorten(name, 24) for name, _ in panels) + f": top {shown_k} of {n_labels} labels"
        verdicts = [f"{shorten(name, 24)}: {verdict(r, image, short=True)}" for name, r in panels if verdict(r, image)]
        text += "".join(f"; {v}" for v in verdicts) + ". Each model on its own scale."
    else:
        words = verdict(first, image, short=True)
        text = head + f"top {shown_k} of {n_labels} labels" + (f" — {words}" if words else "") + "."
    if any(r.drawn_threshold is not None for _, r in panels):
        text += " Pale bars: below the threshold (red)."
    return text


# --- HTML tables -----------------------------------------------------------------------------------------------

TABLE = "border-collapse:collapse;font-size:0.9em;margin:0 0 1em 0"
NAME = "white-space:nowrap;text-align:left;padding:4px 8px;font-weight:normal"  # file names never wrap mid-word
HEAD = "padding:4px 6px;max-width:8em;white-space:normal;word-break:normal;overflow-wrap:normal;vertical-align:bottom"


def _cell(text: str, full: str | None = None, style: str = "", tag: str = "td") -> str:
    title = f' title="{html.escape(full, quote=True)}"' if full and full != text else ""
    return f'<{tag} style="{style}"{title}>{html.escape(text)}</{tag}>'


def matrix_html(panels: list[tuple[str, ZeroShotResult]], image_names: list[str]) -> str:
    """Every image x every label, one table per model: each cell's score in the model's unit, shaded by it, each
    image's best in bold and outlined; an image with no label over the threshold says "none of these"."""
    return "".join(_matrix_table(name, result, image_names, len(panels) > 1) for name, result in panels)


def _matrix_table(name: str, result: ZeroShotResult, image_names: list[str], compare: bool) -> str:
    values = result.shown
    low, high = min(0.0, float(values.min())), max(1e-9, float(values.max()))
    caption = (f"{name}: " if compare else "") + axis(result) + "; bold: each image's best"
    rows = [f'<caption style="text-align:left;padding:4px 0">{html.escape(caption)}</caption>']
    head = "".join(_cell(shorten(label, 24), label, HEAD, "th") for label in result.labels)
    rows.append(f"<tr>{_cell('image', None, NAME, 'th')}{head}</tr>")
    for i, (image, none) in enumerate(zip(image_names, result.none_of_these())):
        best = int(values[i].argmax())
        cells = []
        for j in range(len(result.labels)):
            v = float(values[i, j])
            shade = 0.08 + 0.8 * (v - low) / (high - low)
            style = f"padding:4px 6px;text-align:right;background:rgba(76,114,176,{shade:.2f})"
            style += ";color:white" if shade > 0.55 else ""
            style += ";font-weight:bold;outline:2px solid #dd8452;outline-offset:-2px" if j == best else ""
            cells.append(_cell(shown(result, v), f"{result.labels[j]}: {shown(result, v)}", style))
        mark = f' <span style="color:#c44e52">({NONE_OF_THESE})</span>' if none else ""
        rows.append(f'<tr><th style="{NAME}">{html.escape(image)}{mark}</th>{"".join(cells)}</tr>')
    return f'<div style="overflow-x:auto"><table class="zs-table" style="{TABLE}">{"".join(rows)}</table></div>'


def top_table_html(panels: list[tuple[str, ZeroShotResult]], image_names: list[str], top_k: int) -> str:
    """Each image's top-k labels, one column per model (labels shortened, the full text on hover)."""
    head = _cell("image", None, NAME, "th") + "".join(
        _cell(f"{shorten(name, 32)}: top {top_k}" if len(panels) > 1 else f"top {top_k}", name, NAME, "th")
        for name, _ in panels
    )
    rows = [f"<tr>{head}</tr>"]
    ranked = [(r, r.ranked(top_k), r.none_of_these()) for _, r in panels]
    for i, image in enumerate(image_names):
        cells = []
        for result, rows_k, none in ranked:
            items = [
                f'<span title="{html.escape(p.label, quote=True)}">{html.escape(shorten(p.label, 40))}</span> '
                f"({shown(result, p.score)})"
                for p in rows_k[i]
            ]
            text = ", ".join(items) or "no label reaches the threshold"
            lead = f"<b>{NONE_OF_THESE}</b> · " if none[i] else ""
            cells.append(f'<td style="padding:4px 8px">{lead}{text}</td>')
        rows.append(f'<tr><th style="{NAME}">{html.escape(image)}</th>{"".join(cells)}</tr>')
    return f'<div style="overflow-x:auto"><table class="zs-table" style="{TABLE}">{"".join(rows)}</table></div>'
