"""The zero-shot tab's new views in headless Chromium, as a person uses them: two models side by side, the
image x label matrix, "none of these", a relevancy map, and an input error that is one message, not a badge on
every panel. Screenshots (zero_shot_*.png, in $CLIPDEMO_SCREENSHOTS when set) were looked at."""

import pytest

from clipdemo.settings import REPO_ROOT, Settings
from clipdemo.testing import app_page, app_served, make_siglip_folder, screenshot

EXAMPLES = REPO_ROOT / "examples"
PHOTOS = sorted(EXAMPLES.glob("*.jpg"))
SHAPES = sorted((EXAMPLES / "shapes").glob("*.png"))
OUTPUT_PANELS = ["#zs-label", "#zs-chart", "#zs-status", "#zs-matrix", "#zs-topk", "#zs-maps"]


@pytest.fixture(scope="module")
def app_url(tiny_clip, tmp_path_factory, shipped_checkpoints):
    siglip = make_siglip_folder(tmp_path_factory.mktemp("models") / "tiny-siglip")
    settings = Settings(model=str(tiny_clip), extra_models=[str(siglip)], checkpoint_dir=shipped_checkpoints)
    with app_served(settings) as url:
        yield url


@pytest.fixture
def page(browser, app_url):
    with app_page(browser, app_url, 1000) as page:
        page.wait_for_function(
            "() => document.querySelector('#zs-status')?.innerText.includes('Model:')", timeout=60_000
        )
        yield page


def choose(page, dropdown: str, option: str):
    page.click(f"{dropdown} input")
    page.get_by_role("option", name=option).first.click()


def open_more(page):
    page.click("#zs-more button, #zs-more .label-wrap")
    page.wait_for_selector("#zs-compare", state="visible", timeout=10_000)


def wait_text(page, selector: str, text: str):
    page.wait_for_function(f"() => document.querySelector('{selector}')?.innerText.includes({text!r})", timeout=90_000)


def badges(page) -> int:
    """Error badges drawn on the output panels (Gradio's status tracker shows one per output of a failed event)."""
    return page.evaluate(
        """(panels) => panels.flatMap(p => [...document.querySelectorAll(p + ' .error')])
        .filter(e => e.offsetParent !== null).length""",
        OUTPUT_PANELS,
    )


def test_classify_without_an_image_is_one_message_and_no_badges(page):
    page.click("#zs-run")
    page.get_by_text("Add at least one image").first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)  # let any badge that was coming be drawn
    assert page.get_by_text("Add at least one image").count() == 1
    assert badges(page) == 0
    screenshot(page, "zero_shot_input_error")


def test_a_where_label_that_is_not_a_label_is_one_message_and_no_badges(page):
    page.set_input_files("#zs-images input[type=file]", [str(PHOTOS[0])])
    page.fill("#zs-labels textarea", "a temple, a flower")
    page.fill("#zs-where textarea", "a horse")
    page.click("#zs-where-run")
    page.get_by_text("not one of the labels").first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    assert badges(page) == 0  # (raised inside the map handler instead, the maps panel shows one: checked by hand)


def test_two_models_side_by_side(page):
    page.set_input_files("#zs-images input[type=file]", [str(PHOTOS[0])])
    page.fill("#zs-labels textarea", "a temple, a flower, a woman in uniform, a red sports car")
    open_more(page)
    choose(page, "#zs-compare", "local model 'tiny-siglip'")
    page.click("#zs-run")
    wait_text(page, "#zs-status", "Compared with")
    page.wait_for_selector("#zs-chart img", timeout=60_000)
    assert "sigmoid" in page.inner_text("#zs-status") and "softmax" in page.inner_text("#zs-status")
    assert screenshot(page, "zero_shot_compare").stat().st_size > 20_000


def test_matrix_of_six_images_and_five_labels(page):
    page.set_input_files("#zs-images input[type=file]", [str(p) for p in PHOTOS[:3] + SHAPES[:3]])
    page.fill("#zs-labels textarea", "a temple, a flower, a woman in uniform, a red circle, a blue triangle")
    page.click("#zs-run")
    page.wait_for_selector("#zs-matrix img", timeout=90_000)
    wait_text(page, "#zs-topk", "6: ")
    rows = [line for line in page.inner_text("#zs-topk").splitlines() if line.strip()]
    assert len(rows) >= 7  # header + 6 images
    page.locator("#zs-matrix").scroll_into_view_if_needed()
    assert screenshot(page, "zero_shot_matrix").stat().st_size > 20_000


def test_none_of_these_with_siglip(page):
    page.set_input_files("#zs-images input[type=file]", [str(PHOTOS[1])])
    page.fill("#zs-labels textarea", "a cat, a dog, a red car")
    choose(page, "#zs-model", "local model 'tiny-siglip'")
    open_more(page)
    page.check("#zs-open input")
    page.click("#zs-run")
    wait_text(page, "#zs-label", "none of these")
    wait_text(page, "#zs-status", "None of these")
    screenshot(page, "zero_shot_none_of_these")


def test_relevancy_map(page):
    page.set_input_files("#zs-images input[type=file]", [str(PHOTOS[0]), str(PHOTOS[1])])
    page.fill("#zs-labels textarea", "a temple, a flower")
    page.fill("#zs-where textarea", "a temple")
    page.click("#zs-where-run")
    page.wait_for_function("() => document.querySelectorAll('#zs-maps img').length >= 2", timeout=90_000)
    assert "where 'a temple' matches" in page.inner_text("#zs-maps")
    page.locator("#zs-maps").scroll_into_view_if_needed()
    assert screenshot(page, "zero_shot_relevancy").stat().st_size > 20_000


def test_one_click_decodes_each_image_once(page, monkeypatch):
    """Classify runs check -> ranked labels -> matrix; the uploads are decoded by the first and passed along."""
    from clipdemo.ui import zeroshot_tab

    decoded, load = [], zeroshot_tab.load_image
    monkeypatch.setattr(zeroshot_tab, "load_image", lambda source, **kw: decoded.append(source) or load(source, **kw))
    page.set_input_files("#zs-images input[type=file]", [str(PHOTOS[0]), str(PHOTOS[1])])
    page.fill("#zs-labels textarea", "a temple, a flower")
    page.click("#zs-run")
    page.wait_for_selector("#zs-matrix img", timeout=90_000)
    wait_text(page, "#zs-topk", "2: ")
    wait_text(page, "#zs-label", "%")
    assert len(decoded) == 2, decoded
