"""Your classes and Search in headless Chromium, as a visitor uses them; screenshots in $CLIPDEMO_SCREENSHOTS when set.

Noisy solid colours are what a tiny random CLIP tells apart, so the head has something real to learn: with class
names it can't read ("apple", "leaf", "sky" mean nothing to random weights), zero-shot is near chance and the
head is right.
"""

from __future__ import annotations

import re

import pytest

from clipdemo.settings import Settings
from clipdemo.testing import app_page, app_served, colour_folder, colour_image, screenshot, wait_for_chart

CLASSES = ("apple", "leaf", "sky")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return colour_folder(root / "classes", CLASSES, 4), root


@pytest.fixture(scope="module")
def app_url(tiny_clip, tmp_path_factory):
    settings = Settings(model=str(tiny_clip), checkpoint_dir=tmp_path_factory.mktemp("ckpts"))
    with app_served(settings) as url:
        yield url


@pytest.fixture
def page(browser, app_url):
    with app_page(browser, app_url, 1100) as page:
        yield page


def top_label(page, elem: str) -> str:
    page.wait_for_function(f"() => document.querySelector('#{elem}')?.innerText.includes('%')", timeout=60_000)
    lines = [line.strip() for line in page.inner_text(f"#{elem}").splitlines() if line.strip()]
    return lines[1]  # [component label, top class, ...]


def set_slider(page, value: float):
    box = page.locator("#fs-weight input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_teach_three_classes_classify_and_slide(page, photos, tmp_path):
    folder, _ = photos
    page.get_by_role("tab", name="Your classes").click()
    for i, name in enumerate(CLASSES):
        page.fill(f"#fs-name-{i} textarea, #fs-name-{i} input", name)
        page.set_input_files(f"#fs-files-{i} input[type=file]", sorted(str(p) for p in (folder / name).iterdir()))
    for i in range(len(CLASSES)):
        page.wait_for_function(
            f"() => document.querySelectorAll('#fs-files-{i} .file-preview tr, #fs-files-{i} tbody tr').length >= 4",
            timeout=60_000,
        )
    page.click("#fs-teach")
    page.wait_for_function(
        "() => document.querySelector('#fs-status')?.innerText.includes('Taught 3 classes')", timeout=120_000
    )
    loo = page.inner_text("#fs-loo")
    head_acc, zs_acc = (float(x) for x in re.findall(r"([\d.]+)% \(", loo))
    assert head_acc == 100.0 and zs_acc < head_acc, loo
    new = tmp_path / "new-leaf.png"
    colour_image("leaf", 2024).save(new)
    page.set_input_files("#fs-image input[type=file]", [str(new)])
    page.click("#fs-classify")
    assert top_label(page, "fs-blend") == "leaf"  # the slider starts at the head
    zero_shot = top_label(page, "fs-zeroshot")
    screenshot(page, "fewshot_head")
    set_slider(page, 0)
    page.wait_for_function(
        "() => document.querySelector('#fs-verdict')?.innerText.includes('Blend at 0.00')", timeout=60_000
    )
    assert top_label(page, "fs-blend") == zero_shot  # at 0 the blend is zero-shot CLIP
    screenshot(page, "fewshot_slider_zero_shot")
    assert zero_shot != "leaf", "pick another seed: zero-shot already gets this one right, the slider shows nothing"


def test_text_and_image_search_over_twelve_uploads_with_the_map(page, photos):
    folder, _ = photos
    page.get_by_role("tab", name="Search").click()
    uploads = sorted(str(p) for p in folder.rglob("*.png"))
    assert len(uploads) == 12
    page.set_input_files("#se-files input[type=file]", uploads)
    page.wait_for_function("() => document.querySelectorAll('#se-files tbody tr').length >= 12", timeout=60_000)
    page.click("#se-index")
    page.wait_for_function(
        "() => document.querySelector('#se-status')?.innerText.includes('Indexed 12 image(s)')", timeout=120_000
    )
    wait_for_chart(page, "#se-map")
    screenshot(page, "search_map")
    page.fill("#se-text textarea, #se-text input", "a blue sky")
    page.click("#se-search")
    page.wait_for_function(
        "() => document.querySelector('#se-found')?.innerText.includes('“a blue sky”')", timeout=60_000
    )
    page.wait_for_function("() => document.querySelectorAll('#se-results img').length >= 8", timeout=60_000)
    screenshot(page, "search_text")
    page.set_input_files("#se-image input[type=file]", [str(folder / "sky" / "sky_2.png")])
    page.click("#se-search")
    page.wait_for_function(
        "() => document.querySelector('#se-found')?.innerText.includes('your image')", timeout=60_000
    )
    page.wait_for_function(
        "() => document.querySelector('#se-results')?.innerText.includes('1. sky_2.png')", timeout=60_000
    )
    captions = page.inner_text("#se-results")
    assert re.search(r"1\. sky_2\.png · 1\.000", captions), captions
    screenshot(page, "search_image")
