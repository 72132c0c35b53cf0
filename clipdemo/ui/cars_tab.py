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
from clipdemo.data.cars_names import CLASS_NAMES
from clipdemo.errors import ModelUnavailable
from clipdemo.families import CARS_HEAD
from clipdemo.fingerprints import backbone_folder
from clipdemo.heads import HeadClassifier
from clipdemo.images import ImageError, load_image
from clipdemo.names import looks_like_path, model_name, source_name
from clipdemo.serving import Served
from clipdemo.ui.common import BLEND_WORDS, MODEL_QUEUE, image_upload, user_errors
from clipdemo.zeroshot import CARS_TEMPLATES
from clipdemo.zeroshot import classify as zero_shot_classify

INTRO = "**Name a car's make, model and year from a photo** (one of the 196 Stanford Cars models, 2012 or older)."
TRAIN_HINT = (
    "Train a head from the admin tab, or from the command line:\n\n"
    "```\npython -m clipdemo train head --data … --backbone … --promote\n```\n\n"
    "(or promote a version later: `python -m clipdemo promote cars-head VERSION_OR_FOLDER`), then reload this page."
)


def for_the_operator(text: str) -> str:
    """Commands and fixes meant for whoever runs the server, folded away under the visitor's sentence."""
    return f"<details><summary>For the operator</summary>\n\n{text}\n\n</details>"


NO_HEAD = (
    "**Zero-shot CLIP ranks the 196 car names for your photo** (the “Zero-shot CLIP” list). No head trained on "
    "Stanford Cars' photos is served here yet: one would add a second opinion in the “Trained head” list, usually "
    "right about the exact model and year far more often, and say whether the two agree.\n\n"
    + for_the_operator(TRAIN_HINT)
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
        "its folder), or train and promote a head on a backbone you have. " + for_the_operator(TRAIN_HINT)
    )


def tab_status(served: Served) -> str:
    """What the tab can do right now, cheaply (no model is loaded here): shown on every page load."""
    folder = served.checkpoint(CARS_HEAD)
    if folder is None:
        return no_head_status(served) if served.loaded() else NO_HEAD  # a banner only once it costs no model load
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
        f"changed since it was trained (the server log says which).\n\n{for_the_operator(TRAIN_HINT)}"
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


GLOSSARY = (
    "*What the words mean*: the head is a small classifier trained on top of CLIP's picture features. "
    + BLEND_WORDS
    + " **random_state** is the seed of the random split (the same seed, the same held-out photos)."
)


def describe_card(card: dict, version: str = "") -> str:
    """The head's card as Markdown: a sentence, head vs zero-shot accuracy, and the jargon folded in a Details."""
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
    details = [
        f"- **Head**: `{card.get('head', '?')}`: {card.get('head_description', '')}",
        f"- **Backbone**: {model_name(str(card.get('backbone', '?')))}",
        f"- **Trained on**: {source_name(source or 'unknown data')}, {len(card.get('classes') or [])} classes, seed "
        f"{card.get('seed', '?')}, {str(card.get('created', ''))[:19].replace('T', ' ')} UTC",
        f"- **Split**: {card.get('split', '?')}",
        *([f"- **Chosen**: {card['selection']}"] if card.get("selection") else []),
    ]
    summary = (
        f"A classifier trained on photos of {len(card.get('classes') or [])} car models, on top of "
        f"{model_name(str(card.get('backbone', '?')))}: on {head.get('n', '?')} photos it never saw, it names the "
        f"right model {_pct(head, 'acc1')} of the time; zero-shot CLIP alone {_pct(zs, 'acc1')}."
    )
    return "\n".join(
        [
            f"### Served head {version}".rstrip(),
            summary,
            "",
            *rows,
            "",
            "<details><summary>Details: how it was trained, and what the words mean</summary>",
            "",
            *details,
            "",
            GLOSSARY,
            "",
            "</details>",
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


def zeroshot_cars(served: Served, image, k: int = 5):
    """The zero-shot model's top ``k`` of the 196 Stanford Cars names (OpenAI's eight car templates) for an image."""
    encoder = served.zero_shot().encoder
    return zero_shot_classify(encoder, [load_image(image)], list(CLASS_NAMES), CARS_TEMPLATES, top_k=k)[0]


def no_head_status(served: Served) -> str:
    """NO_HEAD, after the banner that says a stand-in model answers when the configured one can't be loaded."""
    try:
        banner = served.zero_shot().banner
    except ModelUnavailable:
        banner = None
    return f"⚠️ {banner}\n\n{NO_HEAD}" if banner else NO_HEAD


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
    if classifier is None:  # zero-shot alone, over the shipped class names
        return None, _labels(zeroshot_cars(served, image)), no_head_status(served), ""
    head, zeroshot = classifier.predict(image, k=5)
    card = describe_card(classifier.card, classifier.path.name)
    return _labels(head), _labels(zeroshot), verdict(head, zeroshot), card


def build(served: Served):
    """The tab's components and events; returns the status Markdown (refreshed on every page load)."""
    gr.Markdown(INTRO, elem_id="cars-intro")
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
