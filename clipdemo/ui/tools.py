"""The app's tools: what a program or an LLM agent can do in one call, as public endpoints with structured results.

Each is an HTTP API endpoint (``gradio_client``: ``client.predict(image=handle_file(path_or_url), labels="a cat,
a dog", api_name="/zero_shot_classify")``) and, with ``CLIPDEMO_MCP`` on (the default), an MCP tool at
``/gradio_api/mcp/``. Gradio describes a tool from its handler's name, docstring (``Args:``, one line per
argument) and the inputs' defaults, so each handler here is a named function with one.

Only these are MCP tools (``TOOLS``): ``hide_other_endpoints_from_mcp`` marks every other event (the tabs' own
endpoints, whose outputs are charts for the page, the admin events and the per-session teach and search events)
so Gradio's MCP server doesn't list them; they stay HTTP endpoints as before.
"""

from __future__ import annotations

import warnings

import gradio as gr
from PIL import Image

from clipdemo.api import entries, threshold_for
from clipdemo.errors import ModelUnavailable, UserError
from clipdemo.images import load_image
from clipdemo.relevancy import relevancy
from clipdemo.serving import Served
from clipdemo.ui.common import MODEL_QUEUE, user_errors
from clipdemo.zeroshot import TEMPLATE_SETS, LabelError, parse_labels, resolve_templates
from clipdemo.zeroshot import zero_shot as score

TOOLS = ("zero_shot_classify", "where_in_image", "classify_car", "classify_pokemon")
# Gradio warns at launch about public endpoints with a gr.State input as if they were tools; ours with one (the tabs'
# own, teach, search) are not tools (hide_other_endpoints_from_mcp), so the warning would only mislead the log.
warnings.filterwarnings("ignore", message="This MCP server includes a tool that has a gr.State input")
NOT_A_TOOL = "clipdemo: not an MCP tool"  # see hide_other_endpoints_from_mcp
TEMPLATES_INFO = f"{', '.join(TEMPLATE_SETS)}, or a custom template with {{}} where the label goes"


def _path(image) -> str:
    """One image per tool call: Gradio 6's MCP server turns a URL into a file for a single file input only."""
    if not image:
        raise LabelError("Add an image.")
    return str(image)


def _ranked(predictions) -> list[dict]:
    return [{"label": p.label, "score": round(p.score, 6)} for p in predictions]


class ToolHandlers:
    """The four tools' handlers over ``served`` (named, documented: Gradio builds the tool descriptions from them)."""

    def __init__(self, served: Served):
        self.served = served

    def zero_shot_classify(
        self,
        image: str,
        labels: str,
        templates: str = "photo",
        top_k: float = 5,
        mode: str = "single",
        open_set: bool = False,
        threshold: float = 0,
        model: str = "default",
    ) -> dict:
        """Zero-shot image classification with CLIP or SigLIP: rank your own labels for an image (one image per
        call).
        Args:
            image: the image (an http(s) URL, or a file uploaded to this app): JPEG, PNG, GIF, WebP, BMP or TIFF.
            labels: the candidate labels, comma- or newline-separated, e.g. "a cat, a dog, a red sports car".
            templates: the prompt each label is put in: photo ("a photo of a {}."), label (the label alone), imagenet-80 or cars-8 (OpenAI's ensembles), or a custom template with {} for the label.
            top_k: how many labels to return, best first (0: all).
            mode: single (one label for the image; CLIP scores sum to 1) or multi (each label scored on its own).
            open_set: if true, answer none_of_these=true when no label reaches the threshold.
            threshold: the open-set threshold from 0 to 1; 0 uses the model family's default (SigLIP: probability 0.1; CLIP: cosine similarity 0.2).
            model: which of this app's models answers: "default", "extra-1", ... or "scratch".
        Returns:
            {"scoring": "softmax" or "sigmoid", "independent": whether scores are per label, "predictions":
            [{"label", "score" from 0 to 1}, ...] best first; with open_set also "none_of_these" and "threshold";
            "warning" when the model asked for can't be loaded and a stand-in answered}.
        """
        path = _path(image)
        label_list, template_tuple = parse_labels(labels), resolve_templates(templates)
        if mode not in ("single", "multi"):
            raise LabelError("Mode must be 'single' or 'multi'.")
        loaded = [load_image(path)]
        choice = self.served.zero_shot(model or "default")
        encoder = choice.encoder
        result = score(
            encoder,
            loaded,
            label_list,
            template_tuple,
            multi_label=mode == "multi",
            threshold=threshold_for(encoder.scoring, open_set, threshold or None),
        )
        entry = entries(result, int(top_k or 0) or None)[0]
        return {**entry, "warning": choice.warning} if choice.warning else entry

    def where_in_image(
        self, image: str, labels: str, label: str = "", templates: str = "photo", model: str = "default"
    ) -> Image.Image:
        """Where in the image: a heat map over the photo of where it matches one label best, against the other labels.
        Args:
            image: one image (an http(s) URL, or a file uploaded to this app).
            labels: the candidate labels, comma- or newline-separated, e.g. "a cat, a dog, grass".
            label: the label to locate, exactly as written in labels; empty: the image's top label.
            templates: photo, label, imagenet-80, cars-8, or a custom template with {} for the label.
            model: which of this app's models answers: "default", "extra-1", ... (HF CLIP and SigLIP only).
        Returns:
            the photo with the heat laid over it (red: matches the label most, blue: least).
        """
        path = _path(image)
        label_list, template_tuple = parse_labels(labels), resolve_templates(templates)
        from clipdemo.ui.zeroshot_tab import where_label

        label = where_label(label, label_list)
        photo = load_image(path)
        encoder = self.served.zero_shot(model or "default").encoder
        chosen = label or score(encoder, [photo], label_list, template_tuple).ranked(1)[0][0].label
        return relevancy(encoder, photo, label_list, template_tuple, chosen).picture

    def classify_car(self, image: str, top_k: float = 5) -> dict:
        """Stanford Cars: the car's make, model and year from a photo, by the trained head this app serves
        (196 classes), with zero-shot CLIP's answer beside it.
        Args:
            image: a photo of a car (an http(s) URL, or a file uploaded to this app).
            top_k: how many classes to return, best first.
        Returns:
            {"predictions": the head's [{"label", "score"}, ...], "zero_shot": zero-shot CLIP's,
            "agree": whether their top classes agree}.
        """
        from clipdemo.checkpoints import CheckpointError
        from clipdemo.ui.cars_tab import served_classifier

        photo = load_image(_path(image))
        try:
            classifier = served_classifier(self.served)
        except (ModelUnavailable, CheckpointError):
            raise UserError("The served Cars head can't run right now (the app's Cars tab says why).") from None
        if classifier is None:
            raise UserError("No Cars head is served yet.")
        head, zeroshot = classifier.predict(photo, k=max(1, int(top_k or 5)))
        return {
            "predictions": _ranked(head),
            "zero_shot": _ranked(zeroshot),
            "agree": head[0].label == zeroshot[0].label,
        }

    def classify_pokemon(self, image: str, top_k: float = 5) -> list[dict]:
        """The tiny CLIP trained from scratch that this app serves (by default on its built-in shapes: a colour
        and a shape, e.g. "red circle"): its classes ranked for an image.
        Args:
            image: one image (an http(s) URL, or a file uploaded to this app).
            top_k: how many classes to return, best first.
        Returns:
            [{"label", "score" from 0 to 1}, ...] best first.
        """
        from clipdemo.ui.pokemon_tab import top_classes

        return _ranked(top_classes(self.served, load_image(_path(image)), max(1, int(top_k or 5))))


def tool_handlers(served: Served):
    """The four tools' handlers, as bound methods of ``ToolHandlers``."""
    tools = ToolHandlers(served)
    return tools.zero_shot_classify, tools.where_in_image, tools.classify_car, tools.classify_pokemon


def build(served: Served) -> None:
    """The tools' endpoints, on components that are never shown (the tabs have their own)."""
    zero_shot_classify, where_in_image, classify_car, classify_pokemon = tool_handlers(served)
    models = served.model_choices()
    with gr.Group(visible=False):
        image = gr.File(file_types=["image"], type="filepath", label="image")
        labels = gr.Textbox(label="labels")
        label = gr.Textbox("", label="label")
        templates = gr.Textbox("photo", label="templates", info=TEMPLATES_INFO)
        top_k = gr.Number(5, precision=0, minimum=0, label="top_k")
        mode = gr.Radio(["single", "multi"], value="single", label="mode")
        open_set = gr.Checkbox(False, label="open_set")
        threshold = gr.Number(0, minimum=0, maximum=1, label="threshold")
        model = gr.Dropdown(models, value="default", allow_custom_value=True, label="model")
        ranked = gr.JSON(label="result")
        where_map = gr.Image(type="pil", format="png", label="where")
        # never clicked: each button only gives its tool an event to hang on (gr.api's endpoints take no files)
        buttons = {name: gr.Button(name) for name in TOOLS}
    wiring = {
        "zero_shot_classify": (
            zero_shot_classify,
            [image, labels, templates, top_k, mode, open_set, threshold, model],
        ),
        "where_in_image": (where_in_image, [image, labels, label, templates, model]),
        "classify_car": (classify_car, [image, top_k]),
        "classify_pokemon": (classify_pokemon, [image, top_k]),
    }
    for name, (handler, inputs) in wiring.items():
        # one output each: Gradio 6.31's MCP server hands a tool's several outputs back as one text
        outputs = where_map if name == "where_in_image" else ranked
        buttons[name].click(user_errors(handler), inputs, outputs, api_name=name, **MODEL_QUEUE)


def hide_other_endpoints_from_mcp(app: gr.Blocks) -> None:
    """Only ``TOOLS`` are MCP tools. Gradio 6 lists every public endpoint as a tool (``gradio/mcp.py``,
    ``list_tools``) unless its function carries an ``_mcp_type`` other than "tool" (what ``gr.mcp.resource`` and
    ``gr.mcp.prompt`` set); this marks every other event that way, so an endpoint added later is not a tool until
    it is named in ``TOOLS``. ``api_visibility="undocumented"`` would hide them too, but also from
    ``gradio_client``'s keyword arguments and defaults. (Not a permission: the admin events check the token.)"""
    for block_fn in app.fns.values():
        if block_fn.fn is not None and block_fn.api_name not in TOOLS:
            try:
                block_fn.fn._mcp_type = NOT_A_TOOL
            except AttributeError:  # a bound method: hide it the documented way
                block_fn.api_visibility = (
                    "undocumented" if block_fn.api_visibility == "public" else block_fn.api_visibility
                )
