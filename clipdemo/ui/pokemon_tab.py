"""Pokemon tab: the served scratch CLIP (trained from scratch, by default on the built-in shapes data)
ranks its classes for an uploaded image: top-5 bar chart, label list, and the checkpoint's card."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from clipdemo.checkpoints import CheckpointError
from clipdemo.encoders import load_encoder
from clipdemo.images import load_image
from clipdemo.plots import ranked_bars
from clipdemo.serving import Served
from clipdemo.ui.common import MODEL_QUEUE, image_upload, user_errors
from clipdemo.zeroshot import classify

INTRO = (
    "**A CLIP trained from scratch on this server**: it names, for any image, the closest of the classes it was "
    "trained on (what it knows is said below); try the examples."
)
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples" / "shapes"
NO_CHECKPOINT = (
    "No scratch CLIP is served yet. Train and serve one with `python -m clipdemo train scratch --data shapes "
    "--promote` (or train it from the Admin tab and promote it there)."
)


def scratch_encoder(served: Served):
    folder = served.checkpoint("scratch")
    if folder is None:
        raise CheckpointError(NO_CHECKPOINT)
    return load_encoder(str(folder))


def card_markdown(served: Served) -> str:
    try:
        encoder = scratch_encoder(served)
    except CheckpointError as e:
        return f"⚠️ {e}"
    card = encoder.card
    warnings = [n for n in card.get("notes", []) if "WARNING" in n or "overlap" in n.lower()]
    clean = "⚠️ " + " ".join(warnings) if warnings else "Held-out split is clean (no image shared with training)."
    source = str((card.get("dataset") or {}).get("source", ""))
    return (
        f"{knows(encoder.class_names, source)}\n\n**Served model:** {encoder.describe()}\n\n"
        f"**Split:** {card.get('split', 'unknown')}\n\n{clean}"
    )


def knows(class_names: list[str], source: str = "", shown: int = 8) -> str:
    """What the served model can answer, said before anyone uploads: it ranks its own classes for any image."""
    kind = ", all of them coloured shapes, not Pokemon" if "shapes" in source else ""
    names = ", ".join(class_names[:shown]) + (
        f", … ({len(class_names) - shown} more)" if len(class_names) > shown else ""
    )
    return (
        f"**This model knows {len(class_names)} classes** ({names}){kind}. It answers with one of them for any "
        "image: a photo of something else still gets its closest class."
    )


def check_upload(path: str | None):
    """Run first, with no outputs: a missing or unreadable image is one toast, no "Error" badge on the chart and
    the list, and the last result stays. Returns the decoded image for the classify step."""
    if not path:
        raise CheckpointError("Upload an image first.")
    return load_image(path)


def top_classes(served: Served, image, top_k: int = 5):
    """The served scratch CLIP's ``top_k`` classes for a decoded image (the tab and the MCP tool)."""
    encoder = scratch_encoder(served)
    return classify(encoder, [image], encoder.class_names, encoder.templates, top_k=top_k)[0]


def classify_upload(served: Served, path: str | None, top_k: int = 5, image=None):
    ranked = top_classes(served, image if image is not None else check_upload(path), top_k)
    return top_chart(ranked), {p.label: p.score for p in ranked}


def top_chart(ranked):
    """The ranked bars drawn at about a phone's width, so their 9 to 11 pt text stays legible there (a wider
    figure is shrunk to fit a phone, text and all); the title on the right, clear of Gradio's label badge."""
    fig = ranked_bars(ranked)
    fig.set_size_inches(4.2, fig.get_figheight())
    fig.axes[0].set_title("Top-5 (scratch CLIP)", loc="right", fontsize=11)
    return fig


def example_label(path: Path) -> str:
    """``unseen_red_star.png`` -> "red star (never seen in training)"."""
    name = path.stem.removeprefix("unseen_").replace("_", " ")
    return f"{name} (never seen in training)" if path.stem.startswith("unseen_") else name


def build(served: Served) -> gr.Markdown:
    gr.Markdown(INTRO, elem_id="pk-intro")
    with gr.Row():
        with gr.Column(scale=1):
            image = image_upload(label="Image to classify", elem_id="pk-image", height=300)
            run = gr.Button("Classify", variant="primary", elem_id="pk-run")
            examples = sorted(EXAMPLES_DIR.glob("*.png"))
            if examples:  # named buttons: a thumbnail alone gives a screen reader nothing to say
                gr.Examples([str(p) for p in examples], [image], example_labels=[example_label(p) for p in examples])
        with gr.Column(scale=1):
            # no label badge on the chart: on a phone it covers the chart's title. The list below is the chart's
            # text equivalent, and its label says so (Gradio's alt text for a chart is generic)
            chart = gr.Plot(label="Top-5 chart", show_label=False, elem_id="pk-chart")
            label = gr.Label(num_top_classes=5, label="Top-5 (the chart's figures)", elem_id="pk-label")
    card = gr.Markdown(elem_id="pk-card")

    def pokemon(image, decoded=None):
        """The Pokemon tab's Classify: the served scratch CLIP's top-5 classes as a bar chart and a label list.
        Args:
            image: an image.
        """
        return classify_upload(served, image, image=decoded)

    decoded = gr.State(None, time_to_live=60)  # the checked upload, decoded once for the classify step
    checked = run.click(user_errors(check_upload), image, decoded, show_progress="hidden", api_visibility="private")
    checked.success(user_errors(pokemon), [image, decoded], [chart, label], api_name="pokemon", **MODEL_QUEUE)
    return card
