"""The app's theme: Gradio's Soft (indigo on grey), with every text/background pair at WCAG 2.1 AA contrast.

Soft draws indigo-500 text on light backgrounds (block labels, the upload area's text, the selected tab: 3.6 to
4.5:1), white on indigo-500 buttons (4.46:1) and grey-400 secondary text (2.4:1). Here the same hues go one or two
steps darker in light mode and one step lighter where dark mode draws indigo text on near-black, so every pair
reaches 4.5:1 (``tests/test_theme.py`` computes each one; the browser suite's axe check sees them rendered).
"""

from __future__ import annotations

import gradio as gr


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="indigo", neutral_hue="gray").set(
        # secondary text: the footer, "- or -", slider ends, info lines under labels, placeholders
        body_text_color_subdued="*neutral_600",
        body_text_color_subdued_dark="*neutral_400",
        input_placeholder_color="*neutral_500",
        input_placeholder_color_dark="*neutral_300",
        # block labels and the upload area's "Drop image here" (drawn in the label colour on the block)
        block_label_text_color="*primary_700",
        block_title_text_color="*primary_700",
        block_label_background_fill_dark="*primary_700",
        # the selected tab's name and underline, and other accents: drawn like a link (indigo-700 / indigo-300);
        # color_accent has no dark variant of its own, a reference resolves per mode
        color_accent="*link_text_color",
        # primary buttons: white on indigo-600 (6.3:1) instead of indigo-500 (4.46:1), hover one step darker
        button_primary_background_fill="*primary_600",
        button_primary_background_fill_hover="*primary_700",
        button_primary_background_fill_dark="*primary_600",
        button_primary_background_fill_hover_dark="*primary_700",
        button_secondary_background_fill_hover_dark="*primary_700",
        # selected radio/checkbox pills (e.g. Map: PCA, Job kind: scratch)
        checkbox_label_background_fill_selected="*primary_600",
        checkbox_label_background_fill_selected_dark="*primary_700",
        # links in Markdown
        link_text_color="*secondary_700",
        link_text_color_visited="*secondary_800",
        link_text_color_hover="*secondary_800",
        link_text_color_dark="*secondary_300",
        link_text_color_visited_dark="*secondary_300",
        link_text_color_hover_dark="*secondary_200",
    )


# Code blocks in Markdown wrap instead of scrolling sideways: a scrolling block that can't take focus is out of
# reach of the keyboard (axe: scrollable-region-focusable), e.g. the Cars tab's train command on a phone.
# (Gradio's own rule is `.gradio-container-6-31-0 .md pre`: one more class here to win without !important.)
CSS = (
    ".gradio-container .md.prose pre, .gradio-container .md.prose pre code "
    "{ white-space: pre-wrap; overflow-wrap: anywhere; }"
    # Search results: the caption (rank, name, score) wraps instead of being cut to "0…." in a narrow thumbnail
    " #se-results .caption-label { white-space: normal; overflow-wrap: anywhere; }"
    # Tables of short figures (Your classes' leave-one-out): cells wrap between words, never inside one
    " .gradio-container .md.prose td, .gradio-container .md.prose th { overflow-wrap: normal; word-break: normal; }"
    # "Details" lines written for a curious visitor: the summary reads as a link to open
    " .gradio-container .md.prose summary { cursor: pointer; color: var(--link-text-color); }"
    # Ranked labels keep the visitor's whole label (the API returns it): a 300-character one is cut by the heading
    " #zs-label .output-class { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }"
)
