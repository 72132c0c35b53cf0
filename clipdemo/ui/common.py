"""Pieces every tab shares: a safe image drop zone and the mapping of library errors to short messages."""

from __future__ import annotations

import functools
import logging

import gradio as gr

from clipdemo.errors import UserError

log = logging.getLogger("clipdemo.ui")

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


def gallery_paths(gallery) -> list[str]:
    """File paths from a ``gr.Gallery(type="filepath")`` value: a list of (path, caption) or paths."""
    return [item[0] if isinstance(item, (tuple, list)) else item for item in (gallery or [])]
