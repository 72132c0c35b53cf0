"""The whole app in headless Chromium, as a person uses it: each tab's main path and an error path.

Serves a copy of the repository's checkpoints/ (the ``shipped_checkpoints`` fixture), so it also proves the Pokemon
tab works out of the box with the shipped scratch checkpoint, while the Admin tab's training writes to the copy.
Screenshots land in pytest's temporary folder, or in $CLIPDEMO_SCREENSHOTS when set.
"""

import pytest

from clipdemo.settings import REPO_ROOT, Settings
from clipdemo.testing import app_page, app_served, screenshot

EXAMPLES = REPO_ROOT / "examples"
ADMIN_TOKEN = "browser-suite-secret"


@pytest.fixture(scope="module")
def app_url(tiny_clip, shipped_checkpoints):
    settings = Settings(model=str(tiny_clip), checkpoint_dir=shipped_checkpoints, admin_token=ADMIN_TOKEN)
    with app_served(settings) as url:
        yield url


@pytest.fixture
def page(browser, app_url):
    with app_page(browser, app_url, 1000) as page:
        yield page


def open_tab(page, name: str):
    page.get_by_role("tab", name=name).click()


def test_zero_shot_empty_labels_shows_a_clear_message(page):
    page.set_input_files("#zs-images input[type=file]", [str(EXAMPLES / "china.jpg")])
    page.fill("#zs-labels textarea", " , ,\n")
    page.click("#zs-run")
    page.get_by_text("Type at least one label").first.wait_for(timeout=60_000)
    screenshot(page, "zero_shot_error")


def test_pokemon_tab_classifies_with_the_shipped_checkpoint(page):
    open_tab(page, "Pokemon (scratch CLIP)")
    page.wait_for_function("() => document.querySelector('#pk-card')?.innerText.includes('trained on')", timeout=60_000)
    assert "shapes" in page.inner_text("#pk-card")
    card = page.inner_text("#pk-card")  # said before any upload
    assert "This model knows 30 classes" in card and "coloured shapes, not Pokemon" in card
    page.set_input_files("#pk-image input[type=file]", [str(EXAMPLES / "shapes" / "red_circle.png")])
    page.click("#pk-run")
    page.wait_for_selector("#pk-chart img", timeout=60_000)  # the matplotlib chart
    page.wait_for_function("() => document.querySelector('#pk-label')?.innerText.includes('%')", timeout=60_000)
    lines = [line.strip() for line in page.inner_text("#pk-label").splitlines() if line.strip()]
    assert lines[:2] == [
        "Top-5 (the chart's figures)",
        "red circle",
    ]  # the heading is the top class: this held-out example is right
    assert screenshot(page, "pokemon_tab").stat().st_size > 10_000


def test_pokemon_tab_refuses_a_corrupt_upload(page, tmp_path):
    """A truncated upload after a good one: one toast saying so, no "Error" badge on the chart or the list, and the
    last good result stays on the page."""
    bad = tmp_path / "broken.png"
    bad.write_bytes((EXAMPLES / "shapes" / "red_circle.png").read_bytes()[:200])  # a truncated PNG
    open_tab(page, "Pokemon (scratch CLIP)")
    page.set_input_files("#pk-image input[type=file]", [str(EXAMPLES / "shapes" / "red_circle.png")])
    page.click("#pk-run")
    page.wait_for_function("() => document.querySelector('#pk-label')?.innerText.includes('%')", timeout=60_000)
    page.set_input_files("#pk-image input[type=file]", [str(bad)])
    page.click("#pk-run")
    page.get_by_text("truncated").first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)  # let any badge that was coming be drawn
    badges = page.evaluate(
        """() => ['#pk-chart', '#pk-label'].flatMap(p => [...document.querySelectorAll(p + ' .error')])
        .filter(e => e.offsetParent !== null).length"""
    )
    assert badges == 0 and "red circle" in page.inner_text("#pk-label")
    screenshot(page, "pokemon_error")


def test_admin_tab_refuses_a_wrong_token(page):
    open_tab(page, "Admin")
    page.fill("#admin-token input", "not-the-token")
    page.click("#admin-unlock")
    page.get_by_text("Admin access refused").first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)  # let any badge that was coming be drawn
    badges = page.evaluate(  # status trackers' "Error" badges on panels; the toast itself is not one
        """() => [...document.querySelectorAll('.error')].filter(e => e.offsetParent !== null
            && !e.closest('.toast-wrap, .toast-body')).length"""
    )
    assert badges == 0, "a wrong token is one toast, not a badge per panel"
    assert "Unlocked" not in page.inner_text("#admin-lock")
    assert ADMIN_TOKEN not in page.content()
    screenshot(page, "admin_refused")
