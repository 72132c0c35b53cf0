"""A broad corpus of good and bad image files, built with Pillow in a few hundred milliseconds.

``image_cases(tmp_dir)`` writes every file under ``tmp_dir`` and returns one :class:`Case` per file. It is
shared: ``tests/test_images.py`` sends each case through ``clipdemo.images.load_image``; the bad-input
suite sends the same files through the app's HTTP API. No tests live here.

A case with ``ok=True`` must load; ``size`` and ``pixel`` (the top-left RGB, within ``tolerance``) say what
the result must be, and ``expect`` says the same in words. A case with ``ok=False`` must be refused with an
``ImageError`` whose message contains ``expect``. Cases with ``upload=False`` are not files one can upload
(a missing path, a folder). Every refusal holds at the default caps: no per-call override is needed.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)

# Substrings of clipdemo.images' messages, one per kind of refusal.
NOT_IMAGE, DAMAGED, TRUNCATED, EMPTY = "not an image", "damaged", "truncated", "empty"
TOO_MANY_PIXELS, TOO_BIG, NOT_FOUND, FOLDER = "too many pixels", "too big", "not found", "folder"


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    ok: bool
    expect: str  # ok=False: a substring of the error message; ok=True: what is checked, in words
    size: tuple[int, int] | None = None  # ok=True: the (width, height) of the loaded image
    pixel: tuple[int, int, int] | None = None  # ok=True: its top-left RGB ...
    tolerance: int = 0  # ... within this much per band (lossy formats)
    upload: bool = True  # False: not a file one could upload (missing path, folder)


def image_cases(tmp_dir: Path) -> list[Case]:
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def save(name: str, image: Image.Image, **params) -> Path:
        path = tmp_dir / name
        image.save(path, **params)
        return path

    def write(name: str, data: bytes) -> Path:
        path = tmp_dir / name
        path.write_bytes(data)
        return path

    def good(name, path, size, pixel, expect, tolerance=0):
        cases.append(Case(name, path, True, expect, size, pixel, tolerance))

    def bad(name, path, expect, upload=True):
        cases.append(Case(name, path, False, expect, upload=upload))

    # --- ordinary files in every allowed format -------------------------------------------------------
    good("png_rgb", save("rgb.png", _solid("RGB", (32, 24), RED)), (32, 24), RED, "red 32x24")
    good("jpeg_rgb", save("rgb.jpg", _solid("RGB", (32, 24), BLUE), quality=95), (32, 24), BLUE, "blue", 12)
    good(
        "jpeg_progressive",
        save("progressive.jpg", _solid("RGB", (40, 30), GREEN), progressive=True),
        (40, 30),
        GREEN,
        "green",
        12,
    )
    good("jpeg_grey", save("grey.jpg", _solid("L", (16, 16), 100)), (16, 16), (100, 100, 100), "grey 100", 4)
    good("bmp", save("image.bmp", _solid("RGB", (10, 7), GREEN)), (10, 7), GREEN, "green")
    good("gif", save("image.gif", _solid("RGB", (9, 9), BLUE)), (9, 9), BLUE, "blue")
    good("tiff", save("image.tiff", _solid("RGB", (12, 5), RED), compression="tiff_lzw"), (12, 5), RED, "red")
    good("webp_lossless", save("lossless.webp", _solid("RGB", (20, 10), BLUE), lossless=True), (20, 10), BLUE, "blue")
    good("webp_lossy", save("lossy.webp", _solid("RGB", (20, 10), RED), quality=90), (20, 10), RED, "red", 16)
    good(
        "mpo_two_pictures",
        save(
            "phone.jpg",
            _solid("RGB", (16, 8), RED),
            format="MPO",
            save_all=True,
            append_images=[_solid("RGB", (16, 8), BLUE)],
        ),
        (16, 8),
        RED,
        "first: red",
        12,
    )
    good(
        "jpeg_named_png",
        save("really_a_jpeg.png", _solid("RGB", (8, 8), GREEN), format="JPEG"),
        (8, 8),
        GREEN,
        "format judged by content",
        12,
    )
    good("unicode_name", save("ünïcødé näme 写真.png", _solid("RGB", (3, 3), BLUE)), (3, 3), BLUE, "blue")

    # --- sizes: tiny and extreme aspect ratios, under the caps -------------------------------------------
    good("one_pixel", save("1x1.png", _solid("RGB", (1, 1), RED)), (1, 1), RED, "1x1 red")
    good("wide_10000x1", save("wide.png", _solid("RGB", (10000, 1), GREEN)), (10000, 1), GREEN, "10000x1")
    good("tall_1x8000", save("tall.png", _solid("RGB", (1, 8000), BLUE)), (1, 8000), BLUE, "1x8000")

    # --- animations and multi-page files: the first frame --------------------------------------------
    frames = [_solid("RGB", (16, 16), colour) for colour in (RED, GREEN, BLUE)]
    good(
        "gif_animated",
        save("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=50, loop=0),
        (16, 16),
        RED,
        "first frame red",
    )
    good(
        "webp_animated",
        save("animated.webp", frames[1], save_all=True, append_images=[frames[0]], duration=50, lossless=True),
        (16, 16),
        GREEN,
        "first frame green",
    )
    good(
        "png_animated_apng",
        save("animated.png", frames[2], save_all=True, append_images=frames[:2], duration=50),
        (16, 16),
        BLUE,
        "first frame blue",
    )
    good(
        "tiff_multipage",
        save("pages.tiff", frames[1], save_all=True, append_images=[frames[0]]),
        (16, 16),
        GREEN,
        "first page green",
    )

    # --- modes that convert("RGB") gets wrong: transparency onto white, high bit depths scaled ---------
    good(
        "png_rgba_transparent",
        save("transparent.png", _solid("RGBA", (8, 8), (0, 0, 0, 0))),
        (8, 8),
        WHITE,
        "fully transparent -> white",
    )
    good(
        "png_rgba_half",
        save("half.png", _solid("RGBA", (8, 8), (255, 0, 0, 128))),
        (8, 8),
        (255, 127, 127),
        "50% red over white",
        1,
    )
    good("png_la_transparent", save("la.png", _solid("LA", (8, 8), (0, 0))), (8, 8), WHITE, "LA transparent")
    good(
        "png_palette_transparent",
        save("palette.png", _palette_with_hole(), transparency=0),
        (8, 8),
        WHITE,
        "transparent index -> white; others red",
    )
    good(
        "png_palette_alpha_table",
        save("palette_alpha.png", _palette_with_hole(), transparency=bytes([128, 255])),
        (8, 8),
        (127, 127, 127),
        "black at alpha 128 over white",
        1,
    )
    good(
        "png_rgb_colour_key",
        save("colour_key.png", _rgb_with_key(), transparency=BLACK),
        (8, 8),
        WHITE,
        "tRNS colour key -> white",
    )
    good(
        "gif_transparent",
        save("transparent.gif", _palette_with_hole(), transparency=0),
        (8, 8),
        WHITE,
        "GIF transparent index -> white",
    )
    good(
        "webp_transparent",
        save("transparent.webp", _solid("RGBA", (8, 8), (0, 255, 0, 0)), lossless=True),
        (8, 8),
        WHITE,
        "WebP alpha -> white",
    )
    good("png_1bit", save("one_bit.png", _one_bit()), (8, 8), BLACK, "1-bit: black top-left, white elsewhere")
    good(
        "png_16bit",
        save("sixteen.png", _high_bit("I;16", 25700, 65535)),
        (8, 8),
        (100, 100, 100),
        "I;16 25700 -> 100 (not clipped to 255); 65535 -> 255",
    )
    good(
        "tiff_16bit_big_endian",
        save("sixteen_be.tiff", _high_bit("I;16B", 25700, 65535)),
        (8, 8),
        (100, 100, 100),
        "I;16B 25700 -> 100",
    )
    good(
        "tiff_int32",
        save("int32.tiff", _high_bit("I", 51400, 65535)),
        (8, 8),
        (200, 200, 200),
        "I holding 16-bit data: 51400 -> 200",
    )
    good(
        "tiff_int32_signed",
        save("int32_signed.tiff", _high_bit("I", -1000, 1000)),
        (8, 8),
        BLACK,
        "I with negatives: stretched, min -> 0",
    )
    good(
        "tiff_float_unit", save("float.tiff", _high_bit("F", 0.25, 1.0)), (8, 8), (64, 64, 64), "F in 0..1: 0.25 -> 64"
    )
    good(
        "tiff_float_wide",
        save("float_wide.tiff", _high_bit("F", 500.0, 1000.0, 0.0)),
        (8, 8),
        (128, 128, 128),
        "F in 0..1000: stretched, 500 -> 128",
    )
    good(
        "jpeg_cmyk", save("cmyk.jpg", _solid("CMYK", (8, 8), (0, 255, 255, 0)), quality=95), (8, 8), RED, "CMYK red", 12
    )
    good("tiff_cmyk", save("cmyk.tiff", _solid("CMYK", (8, 8), (255, 0, 255, 0))), (8, 8), GREEN, "CMYK green")

    # --- EXIF orientation: stored 40x20 (top half red, bottom half blue) ----------------------------
    good(
        "jpeg_exif_rotate_6",
        save("rotated6.jpg", _halves(), exif=_orientation(6), quality=95),
        (20, 40),
        BLUE,
        "orientation 6 (90° clockwise): 20x40, top-left was bottom-left",
        12,
    )
    good(
        "png_exif_rotate_8",
        save("rotated8.png", _halves(), exif=_orientation(8)),
        (20, 40),
        RED,
        "orientation 8 (90° anticlockwise): 20x40, top-left was top-right",
    )
    good(
        "jpeg_exif_rotate_3",
        save("rotated3.jpg", _halves(), exif=_orientation(3), quality=95),
        (40, 20),
        BLUE,
        "orientation 3 (180°): same size, upside down",
        12,
    )

    # --- not images, or images in formats we do not decode ----------------------------------------------
    bad("zero_bytes", write("empty.png", b""), EMPTY)
    bad("text_renamed_png", write("notes.png", b"just some text, not a picture\n" * 4), NOT_IMAGE)
    bad("html", write("page.html", b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"), NOT_IMAGE)
    bad(
        "svg",
        write(
            "drawing.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            b'<rect width="10" height="10" fill="red"/></svg>',
        ),
        NOT_IMAGE,
    )
    bad(
        "svg_renamed_png",
        write("drawing.png", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>'),
        NOT_IMAGE,
    )
    bad("random_bytes", write("noise.jpg", bytes((i * 7919 + 13) % 251 for i in range(4096))), NOT_IMAGE)
    bad("zip_archive", write("archive.png", _zip_bytes()), NOT_IMAGE)
    bad("ico", save("icon.ico", _solid("RGB", (16, 16), RED)), NOT_IMAGE)
    bad("eps", save("image.eps", _solid("RGB", (8, 8), RED)), NOT_IMAGE)
    bad(
        "psd_header",
        write("image.psd", b"8BPS\x00\x01" + b"\x00" * 6 + struct.pack(">HIIHH", 3, 8, 8, 8, 3) + b"\x00" * 64),
        NOT_IMAGE,
    )
    bad("ppm", save("image.ppm", _solid("RGB", (8, 8), RED)), NOT_IMAGE)
    bad("tga", save("image.tga", _solid("RGB", (8, 8), RED)), NOT_IMAGE)
    bad("pcx", save("image.pcx", _solid("RGB", (8, 8), RED)), NOT_IMAGE)
    bad("pdf", save("document.pdf", _solid("RGB", (8, 8), RED)), NOT_IMAGE)

    # --- damaged or incomplete files in allowed formats ------------------------------------------------
    photo = _noise((64, 48))
    jpeg, png = _encode(photo, "JPEG", quality=90), _encode(photo, "PNG")
    bad("jpeg_truncated", write("truncated.jpg", jpeg[: len(jpeg) // 2]), TRUNCATED)
    bad("png_truncated", write("truncated.png", png[: len(png) // 2]), TRUNCATED)
    bad("gif_truncated", write("truncated.gif", _cut(_encode(photo, "GIF"))), TRUNCATED)
    bad("tiff_truncated", write("truncated.tiff", _cut(_encode(photo, "TIFF"))), TRUNCATED)
    bad("bmp_truncated", write("truncated.bmp", _cut(_encode(photo, "BMP"))), TRUNCATED)
    bad("webp_truncated", write("truncated.webp", _cut(_encode(photo, "WEBP"))), DAMAGED)
    bad("png_signature_only", write("signature.png", png[:8]), NOT_IMAGE)
    bad("png_signature_then_garbage", write("garbage.png", png[:8] + b"\xde\xad\xbe\xef" * 64), NOT_IMAGE)
    bad("png_corrupt_zlib_stream", write("corrupt_zlib.png", _corrupt_idat(png)), DAMAGED)
    bad("jpeg_soi_only", write("soi.jpg", b"\xff\xd8\xff"), NOT_IMAGE)

    # --- too big: decompression bombs (refused from the header, before decoding) and huge files -------
    # Three bands: under Pillow's own guard (89 Mpx), in its warning band, and over its error limit (179 Mpx).
    bad("bomb_gif_7000x7000", write("bomb.gif", _gif_claiming(7000, 7000)), TOO_MANY_PIXELS)
    bad("bomb_png_10000x10000", write("bomb_100mpx.png", _png_claiming(10000, 10000)), TOO_MANY_PIXELS)
    bad("bomb_png_20000x20000", write("bomb.png", _png_claiming(20000, 20000)), TOO_MANY_PIXELS)
    bad("bomb_png_65535x65535", write("bomb_max.png", _png_claiming(65535, 65535)), TOO_MANY_PIXELS)
    bad("just_over_pixel_cap_8000x5001", write("over_cap.png", _png_claiming(8000, 5001)), TOO_MANY_PIXELS)
    bad("file_over_20_mib", _sparse_file(tmp_dir / "huge.png", png, 20 * 1024 * 1024 + 1), TOO_BIG)

    # --- not files at all -------------------------------------------------------------------------------
    bad("missing_path", tmp_dir / "no_such_image.png", NOT_FOUND, upload=False)
    folder = tmp_dir / "folder.png"
    folder.mkdir(exist_ok=True)
    bad("folder", folder, FOLDER, upload=False)
    return cases


def _solid(mode: str, size: tuple[int, int], colour) -> Image.Image:
    return Image.new(mode, size, colour)


def _noise(size: tuple[int, int]) -> Image.Image:
    """Incompressible pixels, so that cutting the file in half really cuts the pixel data."""
    data = bytes((i * 2654435761 >> 7) & 0xFF for i in range(size[0] * size[1] * 3))
    return Image.frombytes("RGB", size, data)


def _encode(image: Image.Image, format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **params)
    return buffer.getvalue()


def _cut(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


def _palette_with_hole() -> Image.Image:
    """8x8 palette image: index 0 (black) at the top-left, index 1 (red) everywhere else."""
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.putpixel((0, 0), 0)
    return image


def _rgb_with_key() -> Image.Image:
    image = Image.new("RGB", (8, 8), RED)
    image.putpixel((0, 0), BLACK)
    return image


def _one_bit() -> Image.Image:
    image = Image.new("1", (8, 8), 1)
    image.putpixel((0, 0), 0)
    return image


def _high_bit(mode: str, top_left, elsewhere, bottom_right=None) -> Image.Image:
    image = Image.new(mode, (8, 8), elsewhere)
    image.putpixel((0, 0), top_left)
    if bottom_right is not None:
        image.putpixel((7, 7), bottom_right)
    return image


def _halves() -> Image.Image:
    """40x20 as stored: top half red, bottom half blue."""
    image = Image.new("RGB", (40, 20), RED)
    image.paste(BLUE, (0, 10, 40, 20))
    return image


def _orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value  # Orientation
    return exif


def _png_claiming(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose header claims width x height: a bomb as far as any size check can tell."""
    data = _encode(Image.new("1", (1, 1)), "PNG")
    chunk = data[12:16] + struct.pack(">II", width, height) + data[24:29]  # b"IHDR" + 13 bytes of fields
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def _gif_claiming(width: int, height: int) -> bytes:
    """A tiny GIF whose logical screen (bytes 6-9, little-endian) is width x height."""
    data = _encode(Image.new("P", (1, 1)), "GIF")
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def _corrupt_idat(png: bytes) -> bytes:
    """Break the zlib header at the start of the pixel data. (Pillow skips IDAT CRCs when decoding, so a
    bad checksum alone would still load.)"""
    at = png.index(b"IDAT") + 4
    return png[:at] + bytes([png[at] ^ 0xFF]) + png[at + 1 :]


def _zip_bytes() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


def _sparse_file(path: Path, head: bytes, size: int) -> Path:
    """A real PNG followed by zeros up to ``size`` bytes; truncate() keeps it sparse, so it costs no disk."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path
