"""Zero-shot tab: several images, typed labels, a prompt template -> ranked labels and a bar chart."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from clipdemo.images import load_image
from clipdemo.plots import ranked_bars
from clipdemo.serving import Served
from clipdemo.ui.common import gallery_paths, user_errors
from clipdemo.zeroshot import LabelError, MAX_IMAGES, classify, parse_labels, resolve_templates

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
TEMPLATE_CHOICES = [
    ("a photo of a {}. (single template)", "photo"),
    ("label only", "label"),
    ("OpenAI's 80 ImageNet templates (ensembled)", "imagenet-80"),
    ("the 8 Stanford Cars templates (ensembled)", "cars-8"),
    ("custom (type it below, with {})", "custom"),
]


def zero_shot(served: Served, images, labels: str, template: str, custom: str, top_k: float, model: str | None = None):
    """Returns the top image's label dict, a bar chart per image (first one shown) and a status line."""
    paths = gallery_paths(images)
    if not paths:
        raise LabelError("Add at least one image.")
    if len(paths) > MAX_IMAGES:
        raise LabelError(f"Too many images: {len(paths)} given, at most {MAX_IMAGES} per call.")
    label_list = parse_labels(labels)
    templates = resolve_templates(custom if template == "custom" else template)
    loaded = [load_image(p) for p in paths]
    choice = served.zero_shot(model)
    ranked = classify(choice.encoder, loaded, label_list, templates, top_k=int(top_k) or None)
    first = {p.label: p.score for p in ranked[0]}
    # a title always: it also keeps the top bar's label clear of Gradio's "Probabilities" badge
    title = f"top {len(ranked[0])} of {len(label_list)} labels"
    figure = ranked_bars(ranked[0], f"image 1 of {len(ranked)}: {title}" if len(ranked) > 1 else title)
    others = "".join(
        f"\n- image {i + 1}: **{r[0].label}** ({100 * r[0].score:.1f}%)" for i, r in enumerate(ranked) if i
    )
    status = f"Model: {choice.description}; {len(templates)} template(s) per label." + (
        f"\n\n⚠️ {choice.notice}" if choice.notice else ""
    ) + (f"\n\nOther images:{others}" if others else "")
    return first, figure, status


def model_status(served: Served) -> str:
    try:
        choice = served.zero_shot()
    except Exception as e:  # ModelUnavailable and friends: say it, keep serving
        return f"⚠️ {e}"
    return f"Model: {choice.description}" + (f"\n\n⚠️ {choice.notice}" if choice.notice else "")


def model_list(served: Served) -> gr.Dropdown:
    """The model choices as they are now (on every page load: a model promoted since start-up shows up)."""
    return gr.Dropdown(choices=served.model_choices())


def build(served: Served) -> tuple[gr.Markdown, gr.Dropdown]:
    with gr.Row():
        with gr.Column(scale=1):
            images = gr.Gallery(
                label=f"Images (up to {MAX_IMAGES})", type="filepath", file_types=["image"], interactive=True,
                columns=4, height=260, elem_id="zs-images",
            )
            labels = gr.Textbox(
                label="Labels (comma- or newline-separated)", value="cat, dog, a red sports car", lines=2,
                elem_id="zs-labels",
            )
            with gr.Row():
                template = gr.Dropdown(TEMPLATE_CHOICES, value="photo", label="Prompt template")
                top_k = gr.Slider(1, 20, value=5, step=1, label="Top-k")
            custom = gr.Textbox(label="Custom template", placeholder="a blurry photo of a {}.", visible=True)
            model = gr.Dropdown(served.model_choices(), value="default", label="Model", elem_id="zs-model")
            run = gr.Button("Classify", variant="primary", elem_id="zs-run")
        with gr.Column(scale=1):
            status = gr.Markdown("Loading model…", elem_id="zs-status")
            label = gr.Label(label="Ranked labels (first image)", elem_id="zs-label")
            chart = gr.Plot(label="Probabilities", elem_id="zs-chart")
    photos = [[[str(p)], "a woman in uniform, a temple, a flower, a red sports car"] for p in sorted(EXAMPLES_DIR.glob("*.jpg"))]
    # for the built-in scratch model (the offline fallback): shapes, one a combination it never saw
    shapes = [[[str(p)], "yellow star, red star, red circle, blue triangle, green square"]
              for p in sorted((EXAMPLES_DIR / "shapes").glob("*.png"))[-2:]]
    if photos or shapes:
        gr.Examples(photos + shapes, [images, labels])

    handler = user_errors(lambda *a: zero_shot(served, *a))
    run.click(handler, [images, labels, template, custom, top_k, model], [label, chart, status], api_name="zero_shot")
    gr.on([labels.submit], handler, [images, labels, template, custom, top_k, model], [label, chart, status],
          api_visibility="private")
    return status, model
