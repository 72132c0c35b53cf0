"""The theme's text/background pairs meet WCAG 2.1 AA (4.5:1) in light and dark mode, computed from the theme's own
variables as Gradio resolves them (a ``*name`` reference, a dark value falling back to the light one)."""

from __future__ import annotations

import pytest

from clipdemo.ui.theme import theme

AA = 4.5
NAMED = {"white": "#ffffff", "black": "#000000"}
# (text, background): what Gradio draws on what
PAIRS = [
    ("body_text_color", "body_background_fill"),
    ("body_text_color", "block_background_fill"),
    ("body_text_color", "input_background_fill"),
    ("body_text_color_subdued", "body_background_fill"),  # footer
    ("body_text_color_subdued", "block_background_fill"),  # "- or -", slider ends
    ("block_info_text_color", "block_background_fill"),
    ("input_placeholder_color", "input_background_fill"),
    ("block_label_text_color", "block_label_background_fill"),
    ("block_label_text_color", "block_background_fill"),  # the upload area's "Drop image here"
    ("block_title_text_color", "block_title_background_fill"),
    ("color_accent", "body_background_fill"),  # the selected tab
    ("button_primary_text_color", "button_primary_background_fill"),
    ("button_primary_text_color_hover", "button_primary_background_fill_hover"),
    ("button_secondary_text_color", "button_secondary_background_fill"),
    ("button_secondary_text_color_hover", "button_secondary_background_fill_hover"),
    ("button_cancel_text_color", "button_cancel_background_fill"),
    ("checkbox_label_text_color", "checkbox_label_background_fill"),
    ("checkbox_label_text_color_selected", "checkbox_label_background_fill_selected"),
    ("link_text_color", "body_background_fill"),
    ("link_text_color", "block_background_fill"),
    ("link_text_color_visited", "block_background_fill"),
    ("link_text_color_hover", "block_background_fill"),
    ("error_text_color", "error_background_fill"),
    ("table_text_color", "table_even_background_fill"),
    ("table_text_color", "table_odd_background_fill"),
]


def resolve(t, name: str, dark: bool) -> str:
    value = (getattr(t, f"{name}_dark", None) if dark else None) or getattr(t, name)
    while value.startswith("*"):
        return resolve(t, value[1:], dark)
    return NAMED.get(value, value)


def luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    assert len(h) == 6, hex_colour
    channels = [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_contrast_helper_matches_known_ratios():
    assert contrast("#000000", "#ffffff") == pytest.approx(21)
    assert contrast("#6366f1", "#ffffff") == pytest.approx(4.46, abs=0.01)  # Soft's primary button, what axe said


@pytest.mark.parametrize("mode", ["light", "dark"])
def test_every_text_background_pair_meets_aa(mode):
    t = theme()
    failing = []
    for text, background in PAIRS:
        fg, bg = resolve(t, text, mode == "dark"), resolve(t, background, mode == "dark")
        if contrast(fg, bg) < AA:
            failing.append(f"{text} {fg} on {background} {bg}: {contrast(fg, bg):.2f}")
    assert not failing, failing
