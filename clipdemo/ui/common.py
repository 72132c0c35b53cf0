"""Pieces every tab shares: a safe image drop zone and the mapping of library errors to short messages."""

from __future__ import annotations

import functools
import logging

import gradio as gr
import pydantic

from clipdemo.errors import UserError

log = logging.getLogger("clipdemo.ui")

# Said wherever a head is blended with zero-shot CLIP (the Cars card, Your classes): for a curious visitor.
BLEND_WORDS = (
    "The **blend weight** (α) is how much the trained head counts against zero-shot CLIP: 0 is zero-shot alone, 1 "
    "the head alone; mixing the two this way is known as **WiSE-FT**. A blend can beat both ends: the two make "
    "different mistakes, and where the head is unsure, zero-shot's knowledge of the names tips it the right way. "
    "**C** says how simple the head is kept (smaller: simpler, less fitted to the training photos)."
)

# Events that run the model share one queue slot group (2 at once: the machine's cores), whichever tab they are on.
MODEL_QUEUE = dict(concurrency_id="model", concurrency_limit=2)
STATE_TTL = 3600  # seconds a visitor's taught head or search set lives after its last update (then dropped)


def image_upload(**kwargs) -> gr.Image:
    """A gr.Image whose upload reaches the handler as an undecoded file path: only ``clipdemo.images`` opens
    it (format allow-list, pixel cap), never Gradio's own PIL call. Patched on the instance: a subclass of a
    Gradio component makes Gradio write a ``.pyi`` stub next to this module at import."""
    kwargs.setdefault("alt_text", f"Your upload: {kwargs.get('label') or 'an image'}")  # said by screen readers
    image = gr.Image(type="filepath", **kwargs)
    image.preprocess = lambda payload: None if payload is None else payload.path
    return image


def user_errors(handler):
    """Turn ``UserError``s into ``gr.Error`` with their (safe) message; log everything else and say only that."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception:
            log.exception("unexpected error in %s", handler.__name__)
            raise gr.Error("Something went wrong on our side; the error was logged.", print_exception=False) from None

    return wrapper


def check_first(trigger, check, inputs):
    """Input mistakes as one toast, with no "Error" badge on any output and the last result kept: ``check`` (cheap,
    no model) runs first with no outputs; chain the work on the returned event with ``.success``."""
    return trigger(user_errors(check), inputs, None, show_progress="hidden", api_visibility="private")


def gallery_paths(gallery) -> list[str]:
    """File paths from a ``gr.Gallery(type="filepath")`` value: a list of (path, caption) or paths."""
    return [item[0] if isinstance(item, (tuple, list)) else item for item in (gallery or [])]


# What a caller must send for each kind of input, said when an API call sends something else (gradio_client).
SHAPES = {
    "Gallery": "a list of images, each {'image': handle_file(path or URL)}",
    "Image": "one image: handle_file(path or URL)",
    "File": "handle_file(path or URL), or a list of them where several files are taken",
}


def guard_api_inputs(app: gr.Blocks) -> None:
    """Malformed API input (a bare path where a file is expected, a string for a list, a dict without a file) is
    one sentence for the caller saying what the input takes, and no traceback in the server's log: each input
    component's validation and preprocessing raise ``gr.Error`` instead of pydantic's or Gradio's own errors."""
    for fn in app.fns.values():
        for block in fn.inputs:
            if not getattr(block, "_guarded", False) and type(block).__name__ in SHAPES:
                _guard(block)


def _guard(block) -> None:
    sentence = f"'{block.label or 'input'}' must be {SHAPES[type(block).__name__]} (see the app's 'Use via API' page)."
    model, preprocess = block.data_model, block.preprocess

    def model_validate(cls, obj, *args, **kwargs):
        try:
            return model.model_validate(obj, *args, **kwargs)
        except pydantic.ValidationError:
            raise gr.Error(sentence, print_exception=False) from None

    def checked_preprocess(payload):
        try:
            return preprocess(payload)
        except gr.Error as e:  # Gradio's own ("Invalid file type…"): the same words, without a traceback
            raise gr.Error(str(e.message), print_exception=False) from None
        except (TypeError, ValueError, AttributeError, KeyError):
            raise gr.Error(sentence, print_exception=False) from None

    # a subclass named as the model, so the API schema Gradio publishes stays the same
    attrs = {"__module__": model.__module__, "__qualname__": model.__qualname__, "__doc__": model.__doc__}
    block.data_model = type(model.__name__, (model,), {**attrs, "model_validate": classmethod(model_validate)})
    block.preprocess, block._guarded = checked_preprocess, True
