"""Cars tab: one photo -> the trained head's top-5 beside zero-shot CLIP's top-5, with the head's card.

The head is the promoted ``cars-head`` checkpoint, looked up on every request; its ``HeadClassifier`` is
loaded once per checkpoint folder and kept, so a promote swaps it without a restart. When nothing is
promoted, or the backbone the head needs can't be loaded, the tab says so and how to fix it. Texts shown
here name local folders by their last component only: server paths stay on the server (details go to the log).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import gradio as gr

from clipdemo import hub_access
from clipdemo.checkpoints import CheckpointError, folder_stamp, read_card
from clipdemo.errors import ModelUnavailable
from clipdemo.families import CARS_HEAD
from clipdemo.fingerprints import backbone_folder
from clipdemo.heads import HeadClassifier
from clipdemo.images import ImageError
from clipdemo.names import looks_like_path, model_name, source_name
from clipdemo.serving import Served
from clipdemo.ui.common import MODEL_QUEUE, image_upload, user_errors

TRAIN_HINT = (
    "Train a head from the admin tab, or from the command line:\n\n"
    "```\npython -m clipdemo train head --data … --backbone … --promote\n```\n\n"
    "(or promote a version later: `python -m clipdemo promote cars-head VERSION_OR_FOLDER`), then reload this page."
)
NO_HEAD = (
    "**No Cars head is served yet.** Once one is, this tab names a car's make, model and year (one of the 196 "
    "Stanford Cars classes) from a photo, beside what zero-shot CLIP says, and whether the two agree. Until then the "
    "**Zero-shot** tab classifies your photo with labels you type (try `a sedan, a pickup truck, a sports car`).\n\n"
    "For the operator: " + TRAIN_HINT
)

log = logging.getLogger("clipdemo.ui")
_lock = threading.Lock()
_loaded: dict[tuple, HeadClassifier] = {}  # (folder, its files' stamp) -> classifier; holds the served one only


def served_classifier(served: Served) -> HeadClassifier | None:
    """The classifier of the promoted head (loaded once per checkpoint folder), or None when none is promoted.

    Raises ``ModelUnavailable`` when its backbone can't be loaded and ``CheckpointError`` when the folder
    is damaged or the backbone changed since training."""
    folder = served.checkpoint(CARS_HEAD)
    if folder is None:
        return None
    stamp = folder_stamp(folder)  # changes when the folder is replaced or rewritten in place
    if stamp is None:
        raise CheckpointError(f"The served Cars head '{folder.name}' can't be read.")
    key = (str(folder.resolve()), stamp)
    with _lock:  # loads are rare; one at a time keeps two requests from loading the same model twice
        if key not in _loaded:
            classifier = HeadClassifier(folder)
            _loaded.clear()  # the previous head is no longer served
            _loaded[key] = classifier
        return _loaded[key]


def backbone_problem(spec: str) -> str:
    return (
        f"**The served Cars head can't run: its backbone {model_name(spec)} can't be loaded** (it is neither a "
        "folder on this server nor in its Hugging Face cache, and can't be downloaded now).\n\n"
        "Fix: make that model available on this machine (download it into the Hugging Face cache, or restore "
        "its folder), or train and promote a head on a backbone you have. " + TRAIN_HINT
    )


def tab_status(served: Served) -> str:
    """What the tab can do right now, cheaply (no model is loaded here): shown on every page load."""
    folder = served.checkpoint(CARS_HEAD)
    if folder is None:
        return NO_HEAD
    try:
        card = read_card(folder)
    except CheckpointError:
        log.exception("served Cars head %s", folder)
        return unusable(folder)
    spec = str(card.get("backbone") or "")
    local = backbone_folder(spec) is not None
    if not local and (looks_like_path(spec) or not hub_access.hub_reachable()):  # a lost folder, or no Hub
        return backbone_problem(spec)
    return f"Upload a photo of a car: head `{card.get('head', '?')}` on {model_name(spec)}."


def unusable(folder: Path) -> str:
    return (
        f"**The served Cars head (version {folder.name}) can't be used**: it is damaged, or its backbone "
        f"changed since it was trained (the server log says which).\n\n{TRAIN_HINT}"
    )


def card_text(served: Served) -> str:
    folder = served.checkpoint(CARS_HEAD)
    if folder is None:
        return ""
    try:
        return describe_card(read_card(folder), folder.name)
    except CheckpointError:
        return ""


METRICS = ("acc1", "acc5", "mean_per_class_recall", "weighted_f1")


def _pct(metrics: dict, key: str) -> str:
    return f"{100 * metrics[key]:.1f}%" if isinstance(metrics.get(key), (int, float)) else "–"


def describe_card(card: dict, version: str = "") -> str:
    """The head's card as Markdown: what it is, what it was trained on, and head vs zero-shot accuracy."""
    head, zs = card.get("metrics") or {}, card.get("zeroshot_metrics") or {}
    data = card.get("dataset")
    source = data.get("source") if isinstance(data, dict) else data
    rows = [
        f"| held-out images: {head.get('n', '?')} | acc@1 | acc@5 | mean per-class recall | weighted F1 |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | " + " | ".join(_pct(m, k) for k in METRICS) + " |"
            for name, m in ((f"head ({card.get('head', '?')})", head), ("zero-shot CLIP (8 templates)", zs))
        ),
    ]
    return "\n".join(
        [
            f"### Served head {version}".rstrip(),
            f"- **Head**: `{card.get('head', '?')}`: {card.get('head_description', '')}",
            f"- **Backbone**: {model_name(str(card.get('backbone', '?')))}",
            f"- **Trained on**: {source_name(source or 'unknown data')}, "
            f"{len(card.get('classes') or [])} classes, seed "
            f"{card.get('seed', '?')}, {str(card.get('created', ''))[:19].replace('T', ' ')} UTC",
            f"- **Split**: {card.get('split', '?')}",
            *([f"- **Chosen**: {card['selection']}"] if card.get("selection") else []),
            "",
            *rows,
        ]
    )


def _labels(predictions) -> dict[str, float]:
    return {p.label: p.score for p in predictions}


def verdict(head, zeroshot) -> str:
    h, z = head[0], zeroshot[0]
    if h.label == z.label:
        return (
            f"**They agree**: the head and zero-shot CLIP both say **{h.label}** "
            f"(head {100 * h.score:.1f}%, zero-shot {100 * z.score:.1f}%)."
        )
    return (
        f"**They disagree**: the head says **{h.label}** ({100 * h.score:.1f}%), "
        f"zero-shot CLIP says **{z.label}** ({100 * z.score:.1f}%)."
    )


def classify(served: Served, image):
    """Handler: (head top-5, zero-shot top-5, verdict or how-to-fix, card) for one uploaded image path."""
    if image is None:
        raise ImageError("Upload a photo of a car first.")
    try:
        classifier = served_classifier(served)
    except ModelUnavailable as e:
        folder = served.checkpoint(CARS_HEAD)
        log.warning("backbone of the served Cars head %s: %s", folder, e)
        return None, None, backbone_problem(str(read_card(folder).get("backbone", "?"))), card_text(served)
    except CheckpointError:
        folder = served.checkpoint(CARS_HEAD)
        log.exception("served Cars head %s", folder)
        return None, None, unusable(folder), card_text(served)
    if classifier is None:
        return None, None, NO_HEAD, ""
    head, zeroshot = classifier.predict(image, k=5)
    card = describe_card(classifier.card, classifier.path.name)
    return _labels(head), _labels(zeroshot), verdict(head, zeroshot), card


def build(served: Served):
    """The tab's components and events; returns the status Markdown (refreshed on every page load)."""
    with gr.Row():
        with gr.Column(scale=2):
            image = image_upload(
                label="A photo of a car", sources=["upload", "clipboard"], height=300, elem_id="cars-image"
            )
            run = gr.Button("Classify", variant="primary", elem_id="cars-run")
        with gr.Column(scale=3):
            status = gr.Markdown(lambda: tab_status(served), elem_id="cars-status")
            with gr.Row():
                head = gr.Label(num_top_classes=5, label="Trained head: top 5", elem_id="cars-head-label")
                zeroshot = gr.Label(num_top_classes=5, label="Zero-shot CLIP: top 5", elem_id="cars-zs-label")
    card = gr.Markdown(lambda: card_text(served), elem_id="cars-card")

    def cars_classify(image):
        """The Cars tab's Classify: the served head's top 5 and zero-shot CLIP's top 5 for a photo of a car, a
        verdict (or how to fix the tab) and the head's card.
        Args:
            image: a photo of a car.
        """
        return classify(served, image)

    handler = user_errors(cars_classify)
    outputs = [head, zeroshot, status, card]
    run.click(handler, [image], outputs, api_name="cars_classify", **MODEL_QUEUE)
    image.upload(handler, [image], outputs, api_visibility="private")
    return status
