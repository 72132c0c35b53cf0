"""Tests for clipdemo.images: every file of the shared bad-input corpus, every input type, every mode."""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from clipdemo import settings
from clipdemo.errors import ConfigError
from clipdemo.images import ALLOWED_FORMATS, ImageError, load_image, to_rgb
from clipdemo.testing import BLUE, GREEN, RED, WHITE, encoded, image_cases, png_claiming

with tempfile.TemporaryDirectory() as _names_dir:  # names only, for parametrize; the files are rebuilt below
    CASE_NAMES = [case.name for case in image_cases(Path(_names_dir))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    return {case.name: case for case in image_cases(tmp_path_factory.mktemp("corpus"))}


def _close(actual, expected, tolerance=0) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(actual, expected, strict=True))


# --- the corpus ------------------------------------------------------------------------------------------


def test_corpus_is_broad_and_cheap(corpus):
    cases = list(corpus.values())
    assert len(cases) >= 30 and len(CASE_NAMES) == len(set(CASE_NAMES))
    assert sum(c.ok for c in cases) >= 15 and sum(not c.ok for c in cases) >= 15
    for case in cases:
        if case.upload and case.name != "file_over_20_mib":
            assert case.path.stat().st_size < 64 * 1024, case.name
    assert all(corpus[name].path.stat().st_size < 1024 for name in CASE_NAMES if name.startswith("bomb_"))
    assert corpus["file_over_20_mib"].path.stat().st_size > settings.DEFAULT_MAX_BYTES


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", CASE_NAMES)
def test_corpus_case(corpus, name):
    case = corpus[name]
    if case.ok:
        image = load_image(case.path)
        assert image.mode == "RGB" and image.size == case.size
        assert _close(image.getpixel((0, 0)), case.pixel, case.tolerance), image.getpixel((0, 0))
    else:
        with pytest.raises(ImageError) as caught:
            load_image(case.path)
        message = str(caught.value)
        assert case.expect in message
        # One short sentence that tells a stranger nothing about the server.
        assert len(message) < 120 and message.endswith(".") and "\n" not in message
        assert str(case.path.parent) not in message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_corpus_through_bytes_and_file_objects(corpus):
    """Uploads arrive as bytes or streams, not only paths: same answers."""
    for case in corpus.values():
        if not case.upload or case.name == "file_over_20_mib":
            continue
        data = case.path.read_bytes()
        for source in (data, io.BytesIO(data)):
            if case.ok:
                assert load_image(source).size == case.size, case.name
            else:
                with pytest.raises(ImageError, match=case.expect):
                    load_image(source)


# --- pixel-level checks beyond the top-left corner ------------------------------------------------------


def test_transparency_and_bit_depth_details(corpus):
    assert load_image(corpus["png_palette_transparent"].path).getpixel((1, 1)) == RED  # opaque stays red
    assert load_image(corpus["png_rgb_colour_key"].path).getpixel((1, 1)) == RED
    assert load_image(corpus["png_1bit"].path).getpixel((1, 1)) == WHITE
    assert load_image(corpus["png_16bit"].path).getpixel((1, 1)) == (255, 255, 255)  # 65535 -> 255
    assert load_image(corpus["tiff_int32"].path).getpixel((1, 1)) == (255, 255, 255)
    assert load_image(corpus["tiff_int32_signed"].path).getpixel((1, 1)) == (255, 255, 255)
    assert load_image(corpus["tiff_float_wide"].path).getpixel((7, 7)) == (0, 0, 0)


def test_exif_orientation_moves_every_half(corpus):
    # Stored 40x20: top half red, bottom half blue.
    cw = load_image(corpus["jpeg_exif_rotate_6"].path)  # 90° clockwise: blue left, red right
    assert _close(cw.getpixel((2, 20)), BLUE, 12) and _close(cw.getpixel((17, 20)), RED, 12)
    ccw = load_image(corpus["png_exif_rotate_8"].path)  # 90° anticlockwise: red left, blue right
    assert ccw.getpixel((2, 20)) == RED and ccw.getpixel((17, 20)) == BLUE
    flipped = load_image(corpus["jpeg_exif_rotate_3"].path)  # 180°: blue on top
    assert _close(flipped.getpixel((20, 2)), BLUE, 12) and _close(flipped.getpixel((20, 17)), RED, 12)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow warns; as an error it would refuse the file
def test_broken_exif_keeps_the_picture():
    data = encoded(Image.new("RGB", (40, 20), RED), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    assert load_image(data).size == (40, 20)


# --- caps ----------------------------------------------------------------------------------------------


def test_byte_cap_is_inclusive_for_every_source(tmp_path):
    data = encoded(Image.new("RGB", (4, 4), GREEN), "PNG")
    path = tmp_path / "small.png"
    path.write_bytes(data)
    for make_source in (lambda: path, lambda: str(path), lambda: data, lambda: io.BytesIO(data)):
        assert load_image(make_source(), max_bytes=len(data)).getpixel((0, 0)) == GREEN
        with pytest.raises(ImageError, match=rf"too big \(the limit is {len(data) - 1} bytes\)"):
            load_image(make_source(), max_bytes=len(data) - 1)


def test_pixel_cap_is_inclusive_and_checked_for_decoded_input_too():
    image = Image.new("RGB", (10, 10), BLUE)
    data = encoded(image, "PNG")
    array = np.zeros((10, 10, 3), np.uint8)
    for source in (data, image, array):
        assert load_image(source, max_pixels=100).size == (10, 10)
        with pytest.raises(ImageError, match=r"too many pixels \(10x10; the limit is 99 pixels\)"):
            load_image(source, max_pixels=99)


def test_pixel_cap_refuses_before_decoding(monkeypatch):
    # A bomb header with no valid pixel data: only a header check can give "too many pixels".
    def no_load(self):
        raise AssertionError("decoded a refused image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(png_claiming(5000, 5000), max_pixels=1_000_000)


def test_pillow_bomb_warning_as_error_is_still_a_short_refusal():
    # In Pillow's warning band (89-179 Mpx) with warnings turned into errors, as some servers run.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="too many pixels"):
            load_image(png_claiming(10000, 10000), max_pixels=500_000_000)


def test_caps_come_from_the_environment_at_call_time(monkeypatch):
    monkeypatch.setenv("CLIPDEMO_MAX_PIXELS", "50")
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(Image.new("RGB", (10, 10)))
    monkeypatch.setenv("CLIPDEMO_MAX_PIXELS", "40_000_000")
    monkeypatch.setenv("CLIPDEMO_MAX_BYTES", "10")
    with pytest.raises(ImageError, match="too big"):
        load_image(encoded(Image.new("RGB", (10, 10)), "PNG"))
    monkeypatch.delenv("CLIPDEMO_MAX_PIXELS")
    monkeypatch.delenv("CLIPDEMO_MAX_BYTES")
    assert settings.image_caps() == (40_000_000, 20 * 1024 * 1024)


@pytest.mark.parametrize("value", ["0", "-5", "lots", "1.5"])
def test_a_bad_environment_value_is_one_sentence(monkeypatch, value):
    monkeypatch.setenv("CLIPDEMO_MAX_PIXELS", value)
    with pytest.raises(ConfigError, match="CLIPDEMO_MAX_PIXELS must be a positive whole number"):
        load_image(Image.new("RGB", (10, 10)))


def test_per_call_caps_do_not_interfere_across_threads():
    data = encoded(Image.new("RGB", (20, 20), RED), "PNG")

    def attempt(i: int) -> str:
        try:
            return "ok" if load_image(data, max_pixels=400 if i % 2 else 399) else "?"
        except ImageError:
            return "refused"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, range(40)))
    assert results == ["refused", "ok"] * 20


def test_global_pillow_settings_are_left_alone(corpus):
    before = Image.MAX_IMAGE_PIXELS
    load_image(corpus["png_rgb"].path)
    with pytest.raises(ImageError):
        load_image(corpus["just_over_pixel_cap_8000x5001"].path)
    assert Image.MAX_IMAGE_PIXELS == before
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- input types ----------------------------------------------------------------------------------------


def test_every_source_type_gives_the_same_image(tmp_path):
    data = encoded(Image.new("RGB", (6, 4), BLUE), "PNG")
    path = tmp_path / "blue.png"
    path.write_bytes(data)
    with open(path, "rb") as stream:
        sources = [path, str(path), data, bytearray(data), memoryview(data), io.BytesIO(data), stream]
        for source in sources:
            image = load_image(source)
            assert (image.mode, image.size, image.getpixel((5, 3))) == ("RGB", (6, 4), BLUE), type(source)


def test_bad_sources_are_short_errors(tmp_path):
    text_file = tmp_path / "t.png"
    text_file.write_bytes(encoded(Image.new("RGB", (2, 2)), "PNG"))
    with open(text_file, encoding="latin-1") as stream, pytest.raises(ImageError, match="binary"):
        load_image(stream)
    with pytest.raises(ImageError, match="No image"):
        load_image(None)
    with pytest.raises(ImageError, match="Unsupported"):
        load_image(12345)
    with pytest.raises(ImageError, match="could not be opened"):
        load_image("bad\x00name.png")
    with pytest.raises(ImageError, match="not a regular file"):
        load_image("/dev/null")


def test_pil_input_is_converted_not_reoriented():
    rgba = Image.new("RGBA", (3, 2), (0, 0, 0, 0))
    out = load_image(rgba)
    assert out is not rgba and out.mode == "RGB" and out.getpixel((0, 0)) == WHITE
    assert rgba.mode == "RGBA"  # the caller's image is untouched

    lazy = Image.open(io.BytesIO(encoded(Image.new("RGB", (5, 3), GREEN), "JPEG")))  # not yet decoded
    assert _close(load_image(lazy).getpixel((4, 2)), GREEN, 12)

    broken = Image.open(io.BytesIO(encoded(Image.new("RGB", (64, 64), GREEN), "PNG")[:80]))
    with pytest.raises(ImageError, match="truncated"):
        load_image(broken)


@pytest.mark.parametrize(
    "array, pixel",
    [
        (np.full((3, 5), 77, np.uint8), (77, 77, 77)),
        (np.full((3, 5, 1), 77, np.uint8), (77, 77, 77)),
        (np.tile(np.array([10, 20, 30], np.uint8), (3, 5, 1)), (10, 20, 30)),
        (np.zeros((3, 5, 4), np.uint8), WHITE),  # transparent RGBA
        (np.ones((3, 5), bool), WHITE),
        (np.tile(np.array([10, 20, 30], np.uint8), (5, 3, 1)).transpose(1, 0, 2), (10, 20, 30)),  # strided
    ],
)
def test_numpy_arrays(array, pixel):
    image = load_image(array)
    assert image.mode == "RGB" and image.size == (5, 3) and image.getpixel((4, 2)) == pixel


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((3, 5, 3), np.float32),
        np.zeros((3, 5, 2), np.uint8),
        np.zeros(5, np.uint8),
        np.zeros((2, 2, 2, 3), np.uint8),
    ],
)
def test_unsupported_arrays(array):
    with pytest.raises(ImageError, match="Unsupported image array"):
        load_image(array)


# --- to_rgb, mode by mode ------------------------------------------------------------------------------


def _palette(mode: str, value) -> Image.Image:
    image = Image.new(mode, (2, 2), value)
    image.putpalette([0, 0, 0, 255, 0, 0])
    return image


@pytest.mark.parametrize(
    "image, expected, tolerance",
    [
        (Image.new("1", (2, 2), 1), WHITE, 0),
        (Image.new("L", (2, 2), 77), (77, 77, 77), 0),
        (_palette("P", 1), RED, 0),
        (_palette("PA", (1, 0)), WHITE, 0),  # fully transparent palette pixel
        (_palette("PA", (1, 255)), RED, 0),
        (Image.new("LA", (2, 2), (10, 255)), (10, 10, 10), 0),
        (Image.new("LA", (2, 2), (0, 128)), (127, 127, 127), 1),
        (Image.new("La", (2, 2), (0, 0)), WHITE, 0),
        (Image.new("La", (2, 2), (50, 128)), (177, 177, 177), 0),  # premultiplied: 50 + (255 - 128)
        (Image.new("RGBa", (2, 2), (0, 0, 0, 0)), WHITE, 0),
        (Image.new("RGBA", (2, 2), (0, 0, 255, 0)), WHITE, 0),
        (Image.new("RGBA", (2, 2), (0, 0, 255, 255)), BLUE, 0),
        (Image.new("RGBX", (2, 2), (1, 2, 3, 0)), (1, 2, 3), 0),
        (Image.new("CMYK", (2, 2), (0, 255, 255, 0)), RED, 0),
        (Image.new("CMYK", (2, 2), (0, 0, 0, 255)), (0, 0, 0), 0),
        (Image.new("YCbCr", (2, 2), (255, 128, 128)), WHITE, 0),
        (Image.new("LAB", (2, 2), (255, 128, 128)), WHITE, 2),
        (Image.new("HSV", (2, 2), (85, 255, 255)), GREEN, 0),
        (Image.new("I;16", (2, 2), 65535), WHITE, 0),
        (Image.new("I;16", (2, 2), 25700), (100, 100, 100), 0),  # convert("RGB") would clip this to 255
        (Image.new("I;16L", (2, 2), 257), (1, 1, 1), 0),
        (Image.new("I;16B", (2, 2), 25700), (100, 100, 100), 0),
        (Image.new("I;16N", (2, 2), 25700), (100, 100, 100), 0),
        (Image.new("I;16", (2, 2), 0), (0, 0, 0), 0),
        (Image.new("I", (2, 2), 200), (200, 200, 200), 0),  # 8-bit data in a 32-bit container
        (Image.new("I", (2, 2), 65535), WHITE, 0),
        (Image.new("F", (2, 2), 1.0), WHITE, 0),
        (Image.new("F", (2, 2), 0.5), (128, 128, 128), 0),
        (Image.new("F", (2, 2), 200.0), (200, 200, 200), 0),
        (Image.new("F", (2, 2), -3.0), (0, 0, 0), 0),  # constant and negative: no division by zero
        (Image.new("F", (2, 2), float("nan")), (0, 0, 0), 0),
    ],
    ids=lambda value: value.mode if isinstance(value, Image.Image) else None,
)
def test_to_rgb_every_mode(image, expected, tolerance):
    before = image.mode
    out = to_rgb(image)
    assert out is not image and out.mode == "RGB" and out.size == image.size
    assert _close(out.getpixel((1, 1)), expected, tolerance), out.getpixel((1, 1))
    assert image.mode == before


def test_to_rgb_stretches_wide_and_signed_ranges():
    signed = Image.fromarray(np.array([[-1000, 0, 1000]], np.int32), "I")
    assert [to_rgb(signed).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    wide = Image.fromarray(np.array([[0, 100_000, 200_000]], np.int32), "I")
    assert [to_rgb(wide).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_loaded_image_is_detached_from_its_file(tmp_path):
    path = tmp_path / "gone.gif"
    frames = [Image.new("RGB", (4, 4), colour) for colour in (RED, GREEN)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    image = load_image(path)
    path.unlink()
    assert not isinstance(image, ImageFile.ImageFile) and getattr(image, "fp", None) is None
    assert image.getpixel((3, 3)) == RED and image.resize((2, 2)).getpixel((0, 0)) == RED


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_no_file_handles_leak(corpus):
    before = len(os.listdir("/proc/self/fd"))
    for case in list(corpus.values()) * 2:
        try:
            load_image(case.path)
        except ImageError:
            pass
    assert len(os.listdir("/proc/self/fd")) == before


# --- nothing but ImageError escapes, whatever the bytes ---------------------------------------------------


@pytest.mark.parametrize("format", sorted(ALLOWED_FORMATS))
def test_mangled_files_load_or_raise_image_error(format):
    seed = Image.frombytes("RGB", (24, 16), bytes((i * 37) % 256 for i in range(24 * 16 * 3)))
    data = encoded(seed, format)
    mangled = [data[:cut] for cut in range(1, len(data), max(1, len(data) // 12))]
    for position in range(0, len(data), max(1, len(data) // 24)):
        mangled.append(data[:position] + bytes([data[position] ^ 0x5A]) + data[position + 1 :])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for blob in mangled:
            try:
                image = load_image(blob)
            except ImageError as error:
                assert len(str(error)) < 120
            else:
                assert image.mode == "RGB"
    # Pillow's TIFF reader warns "Truncated File Read" on a cut header before the file is refused; nothing else warns
    assert {str(w.message) for w in caught} <= ({"Truncated File Read"} if format == "TIFF" else set())
