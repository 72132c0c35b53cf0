"""The one safe way to open an image: ``load_image(source) -> RGB PIL image``.

Every image the app touches (a browser upload, a CLI argument, a dataset row) comes through here, because
Pillow's defaults are not safe for files from strangers:

- ``Image.open`` tries every decoder Pillow has (EPS would run Ghostscript, PSD, ICO, PCX, ... each one
  more parser to trust). We pass ``formats=`` so only the six formats people actually upload are parsed.
- Pillow's own decompression-bomb guard is a process-wide setting (``Image.MAX_IMAGE_PIXELS``, about 89
  megapixels, and only a warning below twice that). We check ``width * height`` from the header against our
  own, per-call cap before any pixel is decoded, and read the file size before reading the file.
- A truncated upload must be an error, not half a picture: ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False.
- Pillow raises OSError, SyntaxError, ValueError, struct.error, EOFError, ... on malformed files. Callers
  see exactly one exception type, :class:`ImageError`, whose message is a short sentence fit for a user
  (it never names a server path); the original exception is kept as ``__cause__`` for logs.
- Models want RGB, and ``Image.convert("RGB")`` gets several modes wrong: transparent pixels come out black
  (or as whatever colour hides under the alpha), and 16-bit/float images are clipped, not scaled, so a
  16-bit photo turns white. :func:`to_rgb` handles every mode Pillow decodes.

The caps default to 40 megapixels and 20 MiB and can be changed with the environment variables
``CLIPDEMO_MAX_PIXELS`` and ``CLIPDEMO_MAX_BYTES``, or per call. Pillow's global guard still applies on top:
a cap above ``2 * Image.MAX_IMAGE_PIXELS`` does not let larger images through.
"""

from __future__ import annotations

import io
import os
import stat
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from clipdemo.errors import UserError
from clipdemo.settings import image_caps

__all__ = ["ALLOWED_FORMATS", "ImageError", "load_image", "load_thumbnail", "to_rgb"]


class ImageError(UserError):
    """An image was refused. ``str(error)`` is one short sentence that is safe to show a user."""


# Pillow format names. MPO (multi-picture JPEG, what many phones write) is read by the JPEG decoder itself,
# so it is accepted as JPEG rather than listed.
ALLOWED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"})
_DECODED_ALIASES = {"MPO": "JPEG"}
_OPEN_FORMATS = tuple(sorted(ALLOWED_FORMATS))
_FORMATS_TEXT = "JPEG, PNG, GIF, WebP, BMP, TIFF"


_NOT_AN_IMAGE = f"This file is not an image (allowed: {_FORMATS_TEXT})."


def load_image(source: Any, *, max_pixels: int | None = None, max_bytes: int | None = None) -> Image.Image:
    """Open ``source`` safely and return a fully loaded RGB image, detached from any file.

    ``source`` may be a path (``str`` / ``os.PathLike``), encoded bytes, a binary file object, an already
    decoded ``PIL.Image.Image`` or a uint8 numpy array (HxW, HxWx3 or HxWx4, as Gradio may hand over).
    Encoded input must be one of :data:`ALLOWED_FORMATS` (judged by content, not by file name); EXIF
    orientation is applied and animated images give their first frame. Decoded input (PIL or numpy) is only
    checked against the pixel cap and converted with :func:`to_rgb`: it is taken as already oriented.

    Raises :class:`ImageError` (a ``ValueError``) with a short user-facing message for anything refused.
    """
    if max_pixels is None or max_bytes is None:
        default_pixels, default_bytes = image_caps()  # CLIPDEMO_MAX_PIXELS / CLIPDEMO_MAX_BYTES
        max_pixels = default_pixels if max_pixels is None else max_pixels
        max_bytes = default_bytes if max_bytes is None else max_bytes

    if source is None:
        raise ImageError("No image was given.")
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels)
        return _wrap_decode(to_rgb, source)
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, (str, os.PathLike)):
        with _open_path(source, max_bytes) as fp:
            return _decode(fp, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(_check_bytes(bytes(source), max_bytes)), max_pixels)
    if hasattr(source, "read"):
        # Read at most one byte past the cap: enough to know it is too big, never the whole stream.
        try:
            data = source.read(max_bytes + 1)
        except Exception as exc:
            raise ImageError("The uploaded file could not be read.") from exc
        if not isinstance(data, bytes):
            raise ImageError("The file must be opened in binary mode.")
        return _decode(io.BytesIO(_check_bytes(data, max_bytes)), max_pixels)
    raise ImageError("Unsupported image input.")


def load_thumbnail(source: Any, size: int = 64) -> Image.Image:
    """``source`` (a path or encoded bytes) opened as safely as by :func:`load_image` (same formats, caps and
    errors), decoded at a reduced scale where the format allows it (JPEG's DCT scaling: about 1/8 of the work)
    and returned as an RGB image at most ``size`` pixels on its longer side: for looking at an image, not for a
    model (``clipdemo.data.phash``)."""
    default_pixels, default_bytes = image_caps()
    if isinstance(source, (str, os.PathLike)):
        with _open_path(source, default_bytes) as fp:
            image = _decode(fp, default_pixels, draft=size)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        image = _decode(io.BytesIO(_check_bytes(bytes(source), default_bytes)), default_pixels, draft=size)
    else:
        image = load_image(source)
    image.thumbnail((size, size), Image.Resampling.BOX)
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to a new, fully loaded RGB image (never the object passed in).

    Transparency (an alpha band, palette or colour-key transparency) is composited onto white, so transparent
    pixels do not turn black. 16-bit, 32-bit and float images are scaled to 8 bits, not clipped (see
    :func:`_scale_to_8bit`). Everything else (1, L, P, CMYK, YCbCr, LAB, HSV, RGBX) uses Pillow's conversion.
    """
    image.load()
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        return Image.fromarray(_scale_to_8bit(np.asarray(image), mode)).convert("RGB")
    if mode in ("La", "RGBa"):
        # Premultiplied alpha (Pillow has no direct conversion from La): over white, band + (255 - alpha).
        array = np.asarray(image).astype(np.uint16)
        out = np.minimum(array[..., :-1] + (255 - array[..., -1:]), 255).astype(np.uint8)
        return Image.fromarray(out[..., 0]).convert("RGB") if mode == "La" else Image.fromarray(out)
    if mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # convert("RGBA") first turns palette and colour-key transparency into a real alpha band.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.copy() if mode == "RGB" else image.convert("RGB")


def _scale_to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """Map high-bit-depth values to 0..255 by the range they actually use, scaling rather than clipping.

    ``I;16*`` is 16-bit by definition: 65535 -> 255, 257 -> 1. Mode ``I`` is a 32-bit container: values
    within 0..255 are taken as 8-bit, within 0..65535 as 16-bit. ``F`` within 0..1 is scaled by 255, within
    0..255 kept. Anything else (negative values, wider ranges) is stretched from its minimum to its maximum.
    """
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    full_scales = [65535.0] if mode.startswith("I;16") else [255.0, 65535.0] if mode == "I" else [1.0, 255.0]
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    top = next((scale for scale in full_scales if low >= 0 and high <= scale), None)
    if top is None:
        values, top = values - low, max(high - low, 1e-12)
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


def _check_bytes(data: bytes, max_bytes: int) -> bytes:
    if len(data) == 0:
        raise ImageError("The file is empty.")
    if len(data) > max_bytes:
        raise ImageError(f"The file is too big (the limit is {_format_bytes(max_bytes)}).")
    return data


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError("The image has no pixels.")
    if width * height > max_pixels:
        limit = _format_pixels(max_pixels)
        raise ImageError(f"The image has too many pixels ({width}x{height}; the limit is {limit}).")


def _open_path(path: str | os.PathLike, max_bytes: int):
    """Open a regular file for reading after checking, from its metadata, that it exists and is not too big."""
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise ImageError("The image file was not found.") from exc
    except (OSError, ValueError) as exc:  # permissions, a NUL byte in the name, a name too long, ...
        raise ImageError("The image file could not be opened.") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ImageError("This is a folder, not an image file.")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or a device (/dev/zero) would block or never end.
        raise ImageError("This is not a regular file.")
    if info.st_size == 0:
        raise ImageError("The file is empty.")
    if info.st_size > max_bytes:
        raise ImageError(f"The file is too big (the limit is {_format_bytes(max_bytes)}).")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ImageError("The image file could not be opened.") from exc


def _decode(fp, max_pixels: int, draft: int | None = None) -> Image.Image:
    """Identify (allowed decoders only), check the header size, then decode (with ``draft``: at a reduced scale
    still at least ``draft`` pixels on each side, where the format can), orient and convert."""
    try:
        image = Image.open(fp, formats=_OPEN_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired while reading the header (only for sizes far above our default cap).
        raise ImageError(f"The image has too many pixels (the limit is {_format_pixels(max_pixels)}).") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError(_NOT_AN_IMAGE) from exc
    except Exception as exc:
        raise ImageError("The image file is damaged and could not be read.") from exc
    with image:
        if _DECODED_ALIASES.get(image.format, image.format) not in ALLOWED_FORMATS:
            raise ImageError(_NOT_AN_IMAGE)
        _check_pixels(image.size, max_pixels)
        if draft and image.format == "JPEG":
            _wrap_decode(image.draft, "RGB", (draft, draft))
        # Image.open leaves animated files on their first frame; that is the one we decode.
        _wrap_decode(image.load)
        try:
            ImageOps.exif_transpose(image, in_place=True)
        except Exception:
            pass  # a broken EXIF block should not cost the user their picture: keep it as stored
        return _wrap_decode(to_rgb, image)


def _wrap_decode(function, *args):
    """Run a decoding step, turning whatever Pillow raises on a malformed file into an ImageError."""
    try:
        return function(*args)
    except ImageError:
        raise
    except MemoryError as exc:
        raise ImageError("The image is too large to open.") from exc
    except Exception as exc:
        if "truncated" in str(exc):
            raise ImageError("The image file is incomplete (truncated).") from exc
        raise ImageError("The image file is damaged and could not be read.") from exc


def _from_array(array: np.ndarray, max_pixels: int) -> Image.Image:
    """Gradio hands over uint8 arrays: HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA)."""
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageError("Unsupported image array (expected uint8 with shape HxW, HxWx3 or HxWx4).")
    _check_pixels((array.shape[1], array.shape[0]), max_pixels)
    return to_rgb(Image.fromarray(np.ascontiguousarray(array)))  # L, RGB or RGBA, from the shape


def _format_bytes(n: int) -> str:
    for unit, size in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def _format_pixels(n: int) -> str:
    return f"{n / 1e6:.3g} megapixels" if n >= 1_000_000 else f"{n} pixels"
