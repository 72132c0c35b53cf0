"""Pieces every tab shares: a safe image drop zone and the mapping of library errors to short messages."""

from __future__ import annotations

import functools
import logging

import gradio as gr

from clipdemo.checkpoints import CheckpointError
from clipdemo.encoders import ModelUnavailable
from clipdemo.images import ImageError
from clipdemo.zeroshot import LabelError

log = logging.getLogger("clipdemo.ui")

# Errors whose message is written for users; anything else is logged and answered generically.
USER_ERRORS = (ImageError, LabelError, ModelUnavailable, CheckpointError)


class ImageUpload(gr.Image):
    """gr.Image, but the upload reaches the handler as a file path undecoded: only ``clipdemo.images`` opens
    it (format allow-list, pixel cap), never Gradio's own PIL call."""

    is_template = True  # rendered by the frontend as a plain Image

    def __init__(self, **kwargs):
        super().__init__(type="filepath", **kwargs)

    def preprocess(self, payload):
        return None if payload is None else payload.path


def user_errors(handler):
    """Turn library errors into ``gr.Error`` with their (safe) message; hide everything else."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception:
            log.exception("unexpected error in %s", handler.__name__)
            raise gr.Error("Something went wrong on our side; the error was logged.", print_exception=False) from None

    return wrapper


def gallery_paths(gallery) -> list[str]:
    """File paths from a ``gr.Gallery(type="filepath")`` value: a list of (path, caption) or paths."""
    return [item[0] if isinstance(item, (tuple, list)) else item for item in (gallery or [])]
