"""Zero-shot tab: several images, typed labels, a prompt template -> ranked labels and a bar chart; with several
images an image x label matrix; optionally a second model side by side, an open set ("none of these"),
multi-label scores, and where in the image each label is.

A click runs a check step first (an input error is one toast), then the handlers; the check decodes the uploads
once and hands them on (``Uploads`` in a ``gr.State``), so each image is decoded once per click."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image

from clipdemo import charts
from clipdemo.api import threshold_for
from clipdemo.images import load_image
from clipdemo.names import is_local
from clipdemo.relevancy import relevancy
from clipdemo.serving import Served
from clipdemo.ui.common import MODEL_QUEUE, gallery_paths, user_errors
from clipdemo.zeroshot import (
    DEFAULT_THRESHOLD,
    MAX_IMAGES,
    SIGMOID,
    SOFTMAX,
    LabelError,
    ZeroShotResult,
    parse_labels,
    resolve_templates,
    shorten,
)
from clipdemo.zeroshot import (
    zero_shot as score,
)

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
TEMPLATE_CHOICES = [
    ("a photo of a {}. (single template)", "photo"),
    ("label only", "label"),
    ("OpenAI's 80 ImageNet templates (ensembled)", "imagenet-80"),
    ("the 8 Stanford Cars templates (ensembled)", "cars-8"),
    ("custom (type it below, with {})", "custom"),
]
MODE_CHOICES = [("one label per image (ranked)", "single"), ("several labels per image (independent scores)", "multi")]
NO_COMPARE = "none"
NONE_OF_THESE = "none of these"
THRESHOLD_INFO = (
    f"0: the family's default (SigLIP: probability {DEFAULT_THRESHOLD[SIGMOID]:g}; "
    f"CLIP: cosine {DEFAULT_THRESHOLD[SOFTMAX]:g})"
)
INTRO = (
    "**Which of your labels fits each picture?** Add images, type a few labels, press Classify: the model compares "
    "each picture with each label's text, no training needed."
)
DETAILS = """- **Templates**: each label is put into a sentence ("a photo of a {label}."), which is what the model was
  trained on; with several templates the label's sentences are averaged (**ensembling**), usually a bit better.
- **Scores**: CLIP models compare the labels with each other (**softmax**: the scores sum to 100%, so some label
  always wins); SigLIP models score each label on its own (**sigmoid**: each 0–100%, none has to win). In CLIP's
  *several labels* mode the score is the **cosine similarity** between picture and text (−1 to 1; matching pairs
  sit around 0.25–0.35).
- **Threshold** (open set): below it no label is given and the answer is "none of these". It is a probability for
  SigLIP and a cosine similarity for CLIP, and each chart says which.
- **Compare**: the same images, labels and templates through a second model, each on its own scale."""
UPLOADS_TTL = 300  # seconds decoded uploads may wait in a visitor's session (after a click that failed part-way)


@dataclass(frozen=True)
class Uploads:
    """A request's images, decoded once by its check step and passed along to the handlers after it in a
    ``gr.State`` (cleared when the click is done)."""

    paths: tuple[str, ...]
    images: tuple[Image.Image, ...]


def uploaded_only(event: gr.EventData):
    """The files of this upload alone (the gallery's upload event carries them), which then replace the gallery."""
    return [item["image"]["path"] if isinstance(item, dict) and "image" in item else item for item in event._data]


def decoded(paths: list[str], uploads: Uploads | None = None) -> list[Image.Image]:
    """The images at ``paths``: those in ``uploads`` when they are these very files (Gradio names an upload by its
    content), else decoded now (an API call that skipped the check step, or a newer click in the same session)."""
    if uploads is not None and uploads.paths == tuple(paths):
        return list(uploads.images)
    return [load_image(p) for p in paths]


def checked_inputs(images, labels: str, template: str, custom: str, uploads: Uploads | None = None):
    """(paths, labels, templates, decoded images), or a ``UserError`` saying what to fix."""
    paths = gallery_paths(images)
    if not paths:
        raise LabelError("Add at least one image.")
    if len(paths) > MAX_IMAGES:
        raise LabelError(f"Too many images: {len(paths)} given, at most {MAX_IMAGES} per call.")
    label_list = parse_labels(labels)
    templates = resolve_templates(custom if template == "custom" else template)
    return paths, label_list, templates, decoded(paths, uploads)


def check(images, labels, template, custom, *_) -> Uploads:
    """Run first, with no visible output and no progress: an input error is one toast, no "Error" badge per
    panel. Returns the decoded images for the handlers after it."""
    paths, _, _, images = checked_inputs(images, labels, template, custom)
    return Uploads(tuple(paths), tuple(images))


def check_where(images, labels, template, custom, model, label) -> Uploads:
    paths, label_list, _, images = checked_inputs(images, labels, template, custom)
    where_label(label, label_list)
    return Uploads(tuple(paths), tuple(images))


def where_label(label: str | None, labels: list[str]) -> str:
    """The label to locate, one of ``labels`` exactly; empty: each image's top label."""
    label = (label or "").strip()
    if label and label not in labels:
        raise LabelError(f"'{label[:40]}' is not one of the labels: type one of them exactly.")
    return label


def _model(served: Served, key: str | None, progress=None):
    """The chosen model; says "loading…" (with the Hub download's own progress) when it isn't in memory yet."""
    if progress is not None and not served.loaded(key):
        name, spec = served.models().get(key or "default", ("the model", ""))
        # only a Hub model is downloaded on first use; a local folder is read from disk
        progress(
            0,
            desc=f"Loading {name}"
            + ("…" if is_local(spec) else ": the first use downloads it, this can take a minute…"),
        )
    return served.zero_shot(key)


def _threshold(scoring: str, open_set: bool, threshold: float) -> float | None:
    """The slider's reading of ``api.threshold_for``: off unless open set is ticked, and 0 means the default."""
    return threshold_for(scoring, open_set, float(threshold) if open_set and threshold else None)


def _rule(result: ZeroShotResult) -> str:
    if result.scoring == "sigmoid":
        return "each label scored on its own (sigmoid with the model's scale and bias, as SigLIP was trained)"
    if result.multi_label:
        return "each label scored on its own by its cosine similarity, −1 to 1 (CLIP has no per-label probability)"
    return "softmax over the labels (as CLIP was trained): the scores sum to 100%"


def _threshold_note(result: ZeroShotResult) -> str:
    if result.threshold is None:
        return ""
    return f' "None of these" when no label reaches {charts.threshold_words(result)}.'


def _short(choice) -> str:
    """A model's name without where it runs ("tiny-clip", not "local model 'tiny-clip' on cpu (fp32, ONNX …)")."""
    name = choice.description.split(" on ")[0]
    return name.removeprefix("local model '").removesuffix("'") if name.startswith("local model '") else name


def _image_line(i: int, panels, top_k: int | None) -> str:
    """One image's verdict, for each model: its top three, or "none of these" and why."""
    parts = []
    for name, result in panels:
        predictions = result.ranked(top_k)[i]
        words = charts.verdict(result, i)
        if words:
            best = result.bars(1)[i][0]
            text = f"**{words}** (best: {shorten(best.label, 60)}, {charts.shown(result, best.score)})"
        elif not predictions:
            text = f"no label reaches {charts.threshold_words(result)}"
        else:
            text = ", ".join(f"**{shorten(p.label, 60)}** ({charts.shown(result, p.score)})" for p in predictions[:3])
        parts.append(f"{name}: {text}" if len(panels) > 1 else text)
    return f"- image {i + 1}: " + "; ".join(parts)


def _ranked_value(result: ZeroShotResult, top_k: int | None):
    """The ranked-labels panel for the first image. It speaks in percent only, so a cosine (CLIP's several-labels
    mode) is said in words, with the chart's signed values beside it."""
    words = charts.verdict(result)
    if words:
        return NONE_OF_THESE
    ranked = result.ranked(top_k)[0]
    if not ranked:
        return f"no label reaches {charts.threshold_words(result)}"
    if charts.unit(result) == charts.COSINE:
        return f"{shorten(ranked[0].label, 60)} (cosine {charts.shown(result, ranked[0].score)})"
    return {p.label: p.score for p in ranked}  # whole labels (the API's answer); the CSS cuts a long heading


def _chart_update(chart: charts.BarChart) -> dict:
    return gr.update(
        value=chart.table,
        caption=chart.caption,  # a caption, not a title: Gradio's plot block clips a title's top
        y_title=chart.y_title,
        y_lim=chart.y_lim,
        sort=chart.order,
        color_map=chart.colours,
        colors_in_legend=None if chart.legend else [],
        color_title=chart.legend_title,
    )


def _scored(served, images, labels, template, custom, model, mode, open_set, threshold, compare, progress, uploads):
    """The checked inputs and (model name, result) for the model and, in compare mode, the second one."""
    paths, label_list, templates, loaded = checked_inputs(images, labels, template, custom, uploads)
    if mode not in ("single", "multi"):
        raise LabelError("Mode must be 'single' or 'multi'.")
    runs = []
    for key in [model] + ([compare] if compare and compare != NO_COMPARE else []):
        choice = _model(served, key, progress)
        result = score(
            choice.encoder,
            loaded,
            label_list,
            templates,
            multi_label=mode == "multi",
            threshold=_threshold(choice.encoder.scoring, open_set, threshold),
        )
        runs.append((choice, result))
    return paths, templates, runs


def zero_shot(
    served: Served,
    images,
    labels: str,
    template: str,
    custom: str,
    top_k: float,
    model: str | None = None,
    mode: str = "single",
    open_set: bool = False,
    threshold: float = 0.0,
    compare: str | None = NO_COMPARE,
    progress=None,
    uploads: Uploads | None = None,
):
    """The first image's labels, its bar chart (both models' bars side by side in compare mode, drawn by the
    browser) and a status line with every image's verdict for each model."""
    args = (model, mode, open_set, threshold, compare, progress, uploads)
    paths, templates, runs = _scored(served, images, labels, template, custom, *args)
    k = int(top_k) or None
    panels = [(_short(c), r) for c, r in runs]
    choice, result = runs[0]
    lines = [
        f"Model: {choice.description}; {len(templates)} template(s) per label. Scores: {_rule(result)}."
        + _threshold_note(result)
    ]
    if choice.warning:  # the banner above gives the why: here, once, which model answered
        lines.append(f"⚠️ {choice.warning}")
    for c, r in runs[1:]:
        lines.append(f"Compared with: {c.description}. Scores: {_rule(r)}." + _threshold_note(r))
    notes = list(dict.fromkeys(n for _, r in runs for n in r.notices()))
    if notes:
        lines.append("✂️ Longer than the model's text context: " + " ".join(notes))
    if len(paths) > 1 or len(runs) > 1 or any(charts.verdict(r) for _, r in runs):
        lines.append("Per image:\n" + "\n".join(_image_line(i, panels, k) for i in range(len(paths))))
    return _ranked_value(result, k), _chart_update(charts.bar_chart(panels, k)), "\n\n".join(lines)


def matrix(
    served: Served,
    images,
    labels: str,
    template: str,
    custom: str,
    top_k: float,
    model: str | None = None,
    mode: str = "single",
    open_set: bool = False,
    threshold: float = 0.0,
    compare: str | None = NO_COMPARE,
    uploads: Uploads | None = None,
):
    """With several images: every image x every label (a table per model, each image's best in bold) and each
    image's top-k, one column per model."""
    paths = gallery_paths(images)
    if len(paths) < 2:
        return gr.update(value="", visible=False), gr.update(value="", visible=False)
    args = (model, mode, open_set, threshold, compare, None, uploads)
    paths, _, runs = _scored(served, images, labels, template, custom, *args)
    panels = [(_short(c), r) for c, r in runs]
    k = max(1, min(int(top_k) or 1, len(runs[0][1].labels), 3))
    names = [f"{i + 1}: {Path(p).name}" for i, p in enumerate(paths)]
    return (
        gr.update(value=charts.matrix_html(panels, names), visible=True),
        gr.update(value=charts.top_table_html(panels, names, k), visible=True),
    )


def where(
    served: Served,
    images,
    labels: str,
    template: str,
    custom: str,
    model: str | None,
    label: str | None,
    uploads: Uploads | None = None,
):
    """A relevancy map per image for ``label`` (empty: each image's top label), laid over the photo."""
    paths, label_list, templates, loaded = checked_inputs(images, labels, template, custom, uploads)
    label = where_label(label, label_list)
    encoder = served.zero_shot(model).encoder
    tops = [r[0].label for r in score(encoder, loaded, label_list, templates).ranked(1)] if not label else []
    maps = []
    for i, image in enumerate(loaded):
        chosen = label or tops[i]
        maps.append(
            (
                relevancy(encoder, image, label_list, templates, chosen).picture,
                f"image {i + 1}: where '{chosen}' matches (red: most, blue: least)",
            )
        )
    return maps


def model_choices(served: Served, choice=None) -> list[tuple[str, str]]:
    """The Model dropdown's entries, naming what actually answers (offline: the scratch model standing in)."""
    choices = served.model_choices()
    if choice is not None and choice.stand_in:
        choices = [
            (f"{choice.stand_in} (in place of {name})" if key == "default" else name, key) for name, key in choices
        ]
    return choices


def model_status(served: Served):
    """The status line, the Model and Compare menus and the fallback banner, once the default model has been
    resolved (on page load)."""
    try:
        choice = served.zero_shot()
    except Exception as e:  # ModelUnavailable and friends: say it, keep serving
        choice, text = None, f"⚠️ {e}"
    else:  # after a fallback, the banner says why
        text = f"Model: {choice.description}"
    choices = model_choices(served, choice)
    menus = gr.update(choices=choices), gr.update(choices=[("none", NO_COMPARE)] + choices)
    return text, *menus, fallback_banner(choice), where_button(choice)


def fallback_banner(choice) -> dict:
    """The banner above the results: shown while a stand-in model answers, hidden otherwise."""
    banner = choice.banner if choice is not None else None
    return gr.update(value=f"⚠️ {banner}" if banner else "", visible=bool(banner))


def where_button(choice) -> dict:
    """ "Show where" is offered only for a model with relevancy maps (HF CLIP, SigLIP): said before the click."""
    can = choice is not None and hasattr(choice.encoder, "encode_patches")
    return gr.update(interactive=can, value="Show where" if can else "Show where: not with this model")


def banner_for(served: Served, key: str | None):
    """The banner and "Show where" for the model picked in the menu (a stand-in only when it can't be had)."""
    try:
        choice = served.zero_shot(key)
    except Exception:  # the pick itself fails: its requests say why, one sentence each
        choice = None
    return fallback_banner(choice), where_button(choice)


@dataclass
class Inputs:
    """The tab's input components and its two buttons."""

    images: gr.Gallery
    labels: gr.Textbox
    template: gr.Dropdown
    custom: gr.Textbox
    top_k: gr.Slider
    model: gr.Dropdown
    mode: gr.Radio
    open_set: gr.Checkbox
    threshold: gr.Slider
    compare: gr.Dropdown
    run: gr.Button
    where_label: gr.Textbox
    where_run: gr.Button


def build(served: Served):
    """The tab: a fallback banner on top, inputs on the left, ranked labels on the right, the matrix and relevancy
    maps below. Returns what the page load refreshes (``model_status``'s outputs)."""
    gr.Markdown(INTRO, elem_id="zs-intro")
    with gr.Accordion("Details", open=False, elem_id="zs-details"):
        gr.Markdown(DETAILS)
    banner = gr.Markdown(visible=False, elem_id="zs-fallback", elem_classes=["fallback-banner"])
    with gr.Row():
        with gr.Column(scale=1):
            inputs = _inputs(served)
        with gr.Column(scale=1):
            status = gr.Markdown("Loading model…", elem_id="zs-status")
            label = gr.Label(label="Ranked labels (first image, first model)", elem_id="zs-label")
            # drawn by the browser from a small table (nothing drawn on the server per request); no label badge
            # over the title; the list above is its text equivalent, the tooltip has each full label and score
            chart = gr.BarPlot(
                x="label",
                y="score",
                color="series",
                tooltip=["full label", "score (text)"],
                x_title="label",
                x_label_angle=-30,
                show_label=False,
                elem_id="zs-chart",
            )
    heatmap = gr.HTML(elem_id="zs-matrix", visible=False)  # a table per model: every image x every label
    top_table = gr.HTML(elem_id="zs-topk", visible=False)
    maps = gr.Gallery(
        label="Where in the image (red: matches the label most, blue: least)",
        elem_id="zs-maps",
        columns=4,
        height="auto",
        object_fit="contain",
        interactive=False,
    )
    _examples(inputs)
    uploads = gr.State(None, time_to_live=UPLOADS_TTL)  # one click's decoded images (see Uploads)
    _wire_classify(served, inputs, uploads, [label, chart, status], [heatmap, top_table])
    _wire_where(served, inputs, uploads, maps)
    picked = [banner, inputs.where_run]
    inputs.model.change(lambda key: banner_for(served, key), inputs.model, picked, api_visibility="private")
    return [status, inputs.model, inputs.compare, *picked]


def _inputs(served: Served) -> Inputs:
    # the Classify button right under the images and labels: visible without scrolling on a laptop
    images = gr.Gallery(
        label=f"Images (up to {MAX_IMAGES})",
        type="filepath",
        file_types=["image"],
        interactive=True,
        columns=4,
        height=200,
        elem_id="zs-images",
    )
    # a new upload replaces the images shown (Gradio's gallery adds to them)
    images.upload(uploaded_only, None, images, show_progress="hidden", api_visibility="private")
    labels = gr.Textbox(
        label="Labels (comma- or newline-separated)", value="cat, dog, a red sports car", lines=2, elem_id="zs-labels"
    )
    run = gr.Button("Classify", variant="primary", elem_id="zs-run")
    with gr.Row():
        template = gr.Dropdown(TEMPLATE_CHOICES, value="photo", label="Prompt template")
        top_k = gr.Slider(1, 20, value=5, step=1, label="Top-k")
    custom = gr.Textbox("", label="Custom template", placeholder="a blurry photo of a {}.", visible=True)
    model = gr.Dropdown(served.model_choices(), value="default", label="Model", elem_id="zs-model")
    with gr.Accordion("Compare two models, open set, multi-label", open=False, elem_id="zs-more"):
        compare = gr.Dropdown(
            [("none", NO_COMPARE)] + served.model_choices(),
            value=NO_COMPARE,
            label="Compare with (same images, labels and templates)",
            elem_id="zs-compare",
        )
        mode = gr.Radio(MODE_CHOICES, value="single", label="Mode", elem_id="zs-mode")
        with gr.Row():
            open_set = gr.Checkbox(
                False, label='Say "none of these" when no label reaches the threshold', elem_id="zs-open"
            )
            threshold = gr.Slider(
                0, 1, value=0, step=0.01, elem_id="zs-threshold", label="Threshold", info=THRESHOLD_INFO
            )
    with gr.Row():
        where_label = gr.Textbox(
            "", label="Where in the image is… (a label; empty: each image's top label)", elem_id="zs-where", scale=3
        )
        where_run = gr.Button("Show where", elem_id="zs-where-run", scale=1)
    return Inputs(
        images, labels, template, custom, top_k, model, mode, open_set, threshold, compare, run, where_label, where_run
    )


# what each example image shows: its button's text, which a screen reader says (a thumbnail alone says nothing)
EXAMPLE_CAPTIONS = {
    "china.jpg": "A temple",
    "flower.jpg": "A flower",
    "grace_hopper.jpg": "Grace Hopper in uniform",
    "unseen_red_star.png": "A red star, never seen in training",
    "yellow_star.png": "A yellow star",
}


def example_caption(path: Path, labels: str) -> str:
    """ "A temple + 4 labels": short enough that Gradio shows it whole (it cuts example labels at 60 characters)."""
    what = EXAMPLE_CAPTIONS.get(path.name, path.stem.replace("_", " "))
    return f"{what} + {len(parse_labels(labels))} labels"


def _examples(inputs: Inputs) -> None:
    photo_labels = "a woman in uniform, a temple, a flower, a red sports car"
    photos = [(p, photo_labels) for p in sorted(EXAMPLES_DIR.glob("*.jpg"))]
    # for the built-in scratch model (the offline fallback): shapes, one a combination it never saw
    shape_labels = "yellow star, red star, red circle, blue triangle, green square"
    shapes = [(p, shape_labels) for p in sorted((EXAMPLES_DIR / "shapes").glob("*.png"))[-2:]]
    if photos or shapes:
        gr.Examples(
            [[[str(p)], labels] for p, labels in photos + shapes],
            [inputs.images, inputs.labels],
            example_labels=[example_caption(p, labels) for p, labels in photos + shapes],
        )


def _click_handlers(served: Served):
    """The Classify click's two endpoints, /zero_shot and /zero_shot_matrix."""

    # each handler takes the click's inputs, then the decoded uploads (see Uploads); their parameter names and
    # docstrings are the HTTP API's argument names and descriptions (its defaults are the components' values)
    def classify_handler(
        images,
        labels: str,
        template: str,
        custom: str,
        top_k: float,
        model: str,
        mode: str,
        open_set: bool,
        threshold: float,
        compare: str,
        uploads=None,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio's progress tracker
    ):
        """The Zero-shot tab's Classify: the first image's ranked labels, its bar chart and a status line.
        Args:
            images: 1 to 16 images (a gallery).
            labels: comma- or newline-separated labels.
            template: photo, label, imagenet-80, cars-8, or custom (then the custom template is used).
            custom: a template with {} where the label goes (used when template is custom).
            top_k: labels to show per image.
            model: "default", "extra-1", ... or "scratch".
            mode: single (ranked) or multi (each label on its own).
            open_set: say "none of these" when no label reaches the threshold.
            threshold: 0 to 1; 0: the family's default.
            compare: a second model's key, or "none".
        """
        args = (images, labels, template, custom, top_k, model, mode, open_set, threshold, compare)
        return zero_shot(served, *args, progress, uploads=uploads)

    def matrix_handler(
        images,
        labels: str,
        template: str,
        custom: str,
        top_k: float,
        model: str,
        mode: str,
        open_set: bool,
        threshold: float,
        compare: str,
        uploads=None,
    ):
        """The Zero-shot tab's image x label heatmap and top-k table (with two or more images; same arguments as
        /zero_shot)."""
        args = (images, labels, template, custom, top_k, model, mode, open_set, threshold, compare)
        return (*matrix(served, *args, uploads=uploads), None)  # the click is done: let go of the images

    return classify_handler, matrix_handler


def _wire_classify(served: Served, ui: Inputs, uploads: gr.State, ranked_outputs: list, matrix_outputs: list):
    """Classify (and Enter in the labels): check and decode -> ranked labels -> the matrix, which clears the
    decoded images. Only the button's events are public API endpoints."""

    classify_handler, matrix_handler = _click_handlers(served)

    inputs = [
        *(ui.images, ui.labels, ui.template, ui.custom, ui.top_k, ui.model),
        *(ui.mode, ui.open_set, ui.threshold, ui.compare),
    ]
    for trigger, public in ((ui.run.click, True), (ui.labels.submit, False)):
        names = lambda name: dict(api_name=name) if public else dict(api_visibility="private")  # noqa: B023
        checked = trigger(user_errors(check), inputs, uploads, show_progress="hidden", api_visibility="private")
        ranked = checked.success(
            user_errors(classify_handler), [*inputs, uploads], ranked_outputs, **names("zero_shot"), **MODEL_QUEUE
        )
        ranked.success(
            user_errors(matrix_handler),
            [*inputs, uploads],
            [*matrix_outputs, uploads],
            **names("zero_shot_matrix"),
            **MODEL_QUEUE,
        )


def _wire_where(served: Served, ui: Inputs, uploads: gr.State, maps: gr.Gallery) -> None:
    """Show where: check and decode -> one relevancy map per image (then the decoded images are let go)."""
    inputs = [ui.images, ui.labels, ui.template, ui.custom, ui.model, ui.where_label]

    def where_handler(images, labels: str, template: str, custom: str, model: str, label: str, uploads=None):
        """The Zero-shot tab's Show where: one relevancy map per image, for label (empty: each image's top label).
        Args:
            images: 1 to 16 images (a gallery).
            labels: comma- or newline-separated labels.
            template: photo, label, imagenet-80, cars-8, or custom (then the custom template is used).
            custom: a template with {} where the label goes (used when template is custom).
            model: "default", "extra-1", ... (HF CLIP and SigLIP).
            label: one of the labels, exactly; empty: each image's top label.
        """
        maps = where(served, images, labels, template, custom, model, label, uploads=uploads)
        return maps, None  # the click is done: let go of the images

    checked = ui.where_run.click(
        user_errors(check_where), inputs, uploads, show_progress="hidden", api_visibility="private"
    )
    checked.success(
        user_errors(where_handler), [*inputs, uploads], [maps, uploads], api_name="relevancy", **MODEL_QUEUE
    )
