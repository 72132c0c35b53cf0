"""The first visit on a laptop (1280×900) and on a phone (390×844), in headless Chromium: every tab reachable by
its name, each opening with a line of what it does; the Cars tab useful without a head; Search's captions whole and
no stale badge; Your classes' download in one click. Screenshots in $CLIPDEMO_SCREENSHOTS when set."""

from __future__ import annotations

import re

import pytest

from clipdemo.data.cars_names import CLASS_NAMES
from clipdemo.settings import REPO_ROOT, Settings
from clipdemo.testing import app_page, app_served, colour_folder, screenshot, wait_for_chart

EXAMPLES = REPO_ROOT / "examples"
VIEWPORTS = {"laptop": (1280, 900), "phone": (390, 844)}
# each tab's name, and what shows once it is open: the tab's one-line intro (the Zero-shot and Admin tabs: their
# first control)
TABS = {
    "Zero-shot": "#zs-run",
    "Cars": "#cars-intro",
    "Your classes": "#fs-intro",
    "Search": "#se-intro",
    "Pokemon (scratch CLIP)": "#pk-intro",
    "Admin": "#admin-disabled",  # no token configured here
}
VISIBLE_BADGES = """(panel) => [...document.querySelectorAll(panel + ' .error')]
    .filter(e => e.offsetParent !== null && /error/i.test(e.innerText)).length"""


@pytest.fixture(scope="module")
def app_url(tiny_clip, shipped_checkpoints):
    """The shipped checkpoints: the scratch CLIP is served, no Cars head (the state of a fresh clone)."""
    with app_served(Settings(model=str(tiny_clip), checkpoint_dir=shipped_checkpoints)) as url:
        yield url


@pytest.fixture(params=list(VIEWPORTS))
def page(request, browser, app_url):
    width, height = VIEWPORTS[request.param]
    with app_page(browser, app_url, height, width) as page:
        yield page


def viewport(page) -> str:
    return "phone" if page.viewport_size["width"] < 500 else "laptop"


def open_tab(page, name: str):
    page.get_by_role("tab", name=name, exact=True).click()  # by its name: fails if it hides behind a menu
    page.locator(TABS[name]).first.wait_for(state="visible", timeout=30_000)


def test_every_tab_is_reachable_by_name_and_says_what_it_does(page):
    assert page.get_by_role("button", name="More tabs").count() == 0  # no unlabelled "•••" menu
    for name, shown in TABS.items():
        open_tab(page, name)
        if shown.endswith("-intro"):
            intro = page.inner_text(shown)
            assert len(intro.splitlines()) == 1 and intro.startswith(("Name", "Teach", "Find", "A CLIP")), intro
        if viewport(page) == "phone":
            screenshot(page, f"phone_{name.split()[0].lower()}")
    width = page.viewport_size["width"]
    boxes = [page.get_by_role("tab", name=name, exact=True).bounding_box() for name in TABS]
    assert all(0 <= b["x"] and b["x"] + b["width"] <= width for b in boxes), boxes  # the names wrap: none off-screen


def test_cars_tab_without_a_head_ranks_the_196_cars_zero_shot(page):
    open_tab(page, "Cars")
    page.wait_for_function("() => document.querySelector('#cars-status')?.innerText.includes('196 car names')")
    status = page.inner_text("#cars-status")
    assert "python" not in status and "For the operator" in status  # the commands folded away, closed
    page.set_input_files("#cars-image input[type=file]", [str(EXAMPLES / "china.jpg")])  # the upload alone runs it
    page.wait_for_function("() => document.querySelector('#cars-zs-label')?.innerText.includes('%')", timeout=60_000)
    lines = [line.strip() for line in page.inner_text("#cars-zs-label").splitlines() if line.strip()]
    assert lines[1] in CLASS_NAMES, lines  # [label, top class, ...]: a Stanford Cars name
    assert page.evaluate(VISIBLE_BADGES, "#cars-head-label") == 0
    screenshot(page, f"cars_no_head_{viewport(page)}")


def test_search_captions_carry_whole_scores_and_a_mistake_leaves_no_badge(page, tmp_path):
    open_tab(page, "Search")
    page.click("#se-index")  # nothing uploaded: one message, no badge
    page.get_by_text("Add at least one image").first.wait_for(timeout=30_000)
    page.locator(".toast-close").first.click()  # read: closed, as a visitor would
    folder = colour_folder(tmp_path / "photos", ("apple", "sky"), 3)
    page.set_input_files("#se-files input[type=file]", sorted(str(p) for p in folder.rglob("*.png")))
    page.wait_for_function("() => document.querySelectorAll('#se-files tbody tr').length >= 6", timeout=60_000)
    page.click("#se-index")
    page.wait_for_function(
        "() => document.querySelector('#se-status')?.innerText.includes('Indexed 6')", timeout=60_000
    )
    wait_for_chart(page, "#se-map")
    page.fill("#se-text textarea, #se-text input", "a blue sky")
    page.click("#se-search")
    page.wait_for_function("() => document.querySelectorAll('#se-results .caption-label').length >= 6", timeout=60_000)
    captions = page.evaluate(
        """() => [...document.querySelectorAll('#se-results .caption-label')]
        .map(c => [c.innerText, c.scrollWidth <= c.clientWidth + 1])"""
    )
    assert all(re.search(r" · \d\.\d{3}$", text) and whole for text, whole in captions), captions
    assert page.evaluate(VISIBLE_BADGES, "#se-results") + page.evaluate(VISIBLE_BADGES, "#se-map") == 0
    assert page.evaluate(VISIBLE_BADGES, "#se-status") == 0
    screenshot(page, f"search_{viewport(page)}")


def test_your_classes_counts_photos_and_downloads_in_one_click(page, tmp_path):
    open_tab(page, "Your classes")
    folder = colour_folder(tmp_path / "photos", ("apple", "sky"), 3)
    for i, name in enumerate(("apple", "sky")):
        page.fill(f"#fs-name-{i} input, #fs-name-{i} textarea", name)
        page.set_input_files(f"#fs-files-{i} input[type=file]", sorted(str(p) for p in (folder / name).glob("*")))
        page.get_by_text(f"Photos of class {i + 1}: 3 photos").wait_for(timeout=30_000)  # the box shows 2 of them
    page.click("#fs-teach")
    page.wait_for_function("() => document.querySelector('#fs-status')?.innerText.includes('Taught 2')", timeout=90_000)
    button = page.locator("#fs-download-btn")
    page.wait_for_function("() => !document.querySelector('#fs-download-btn')?.disabled", timeout=30_000)
    with page.expect_download(timeout=30_000) as download:
        button.click()  # one click: the zip was written when the head was taught
    assert download.value.suggested_filename.endswith(".zip")
    text = page.inner_text("#tabs")
    assert "`" not in text and "WiSE-FT" not in text  # no raw Markdown; the jargon sits in closed Details
    cells = page.evaluate(
        """() => [...document.querySelectorAll('#fs-loo td')]
        .map(td => [getComputedStyle(td).overflowWrap, getComputedStyle(td).wordBreak])"""
    )
    assert cells and all(c == ["normal", "normal"] for c in cells), cells  # the table wraps between words only
    screenshot(page, f"your_classes_{viewport(page)}")


def test_pokemon_says_what_it_knows_and_runs_its_examples(page):
    open_tab(page, "Pokemon (scratch CLIP)")
    page.wait_for_function("() => document.querySelector('#pk-card')?.innerText.includes('not Pokemon')")
    page.get_by_role("button", name="red circle", exact=True).click()  # an example, offered by name
    page.click("#pk-run")
    page.wait_for_function("() => document.querySelector('#pk-label')?.innerText.includes('%')", timeout=60_000)
    chart = page.locator("#pk-chart img").bounding_box()
    assert chart["width"] <= page.viewport_size["width"]  # drawn at a phone's width, not shrunk from a wider one
    screenshot(page, f"pokemon_{viewport(page)}")
