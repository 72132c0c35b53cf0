"""Accessibility in headless Chromium: axe-core's WCAG 2.0/2.1 A and AA rules on every tab, at laptop (1280×900)
and phone (390×844) width, light and dark; and Zero-shot used with the keyboard alone.

axe-core comes bundled in ``axe-playwright-python`` (no network). A serious or critical violation fails the test
unless the offending node is on ``GRADIO_MARKUP``: markup of Gradio's own components that no option of theirs
changes, each one named with its rule, its selector and the component, and listed in docs/accessibility.md.
No rule is switched off: a new violation of an allowed rule elsewhere still fails. Screenshots land in
tests/screenshots/ (a11y_*.png).
"""

from __future__ import annotations

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from clipdemo.settings import REPO_ROOT, Settings
from clipdemo.testing import app_served, screenshot, settle, wait_for_chart

EXAMPLES = REPO_ROOT / "examples"
TABS = ["Zero-shot", "Cars", "Your classes", "Search", "Pokemon (scratch CLIP)", "Admin"]
SIZES = {"laptop": (1280, 900), "phone": (390, 844)}
AXE_OPTIONS = {
    "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
    "resultTypes": ["violations"],
}
BLOCKING = ("serious", "critical")
# (rule, selector of the node, component): violations in Gradio's own markup, with no supported way around them.
# Each is in docs/accessibility.md; a violation of the same rule on any other node still fails.
GRADIO_MARKUP = [
    # the "nothing yet" placeholder of an output that has no value: <div aria-label="Empty value"> with no role
    ("aria-prohibited-attr", 'div.empty[aria-label="Empty value"]', "Empty (in Label, Plot, Gallery, File)"),
    # an upload Gallery holding images: its "Click to Upload" icon button has Gradio's upload button inside it
    ("nested-interactive", 'button.icon-button[aria-label="Click to Upload"]', "Gallery (interactive, not empty)"),
]
# what the "done when" names: never allowed, whatever the impact or the markup
NEVER = ("color-contrast", "button-name")
ADMIN_TOKEN = "a11y-suite-secret"


@pytest.fixture(scope="module")
def app_url(tiny_clip, shipped_checkpoints):
    settings = Settings(model=str(tiny_clip), checkpoint_dir=shipped_checkpoints, admin_token=ADMIN_TOKEN)
    with app_served(settings) as url:
        yield url


def open_page(browser, url: str, size: str, mode: str):
    width, height = SIZES[size]
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url + ("?__theme=dark" if mode == "dark" else ""))
    page.wait_for_selector("#zs-images input[type=file]", state="attached", timeout=60_000)
    page.wait_for_function("() => document.querySelector('#zs-status')?.innerText.includes('Model:')", timeout=60_000)
    return page


def open_tab(page, name: str):
    """A tab by its name; at phone width the tabs that don't fit are behind Gradio's "More tabs" menu."""
    tab = page.get_by_role("tab", name=name)
    if not tab.is_visible():
        page.get_by_role("button", name="More tabs").click()
        tab = page.locator(".overflow-dropdown button", has_text=name)
    tab.click()
    page.wait_for_function(
        f"() => document.querySelector('[role=tab][aria-selected=true]')?.innerText === {name!r}"
        " || !!document.querySelector('.overflow-menu .overflow-item-selected')"
    )
    settle(page)


def allowed(page, rule: str, node: dict) -> bool:
    """The node is allowed Gradio markup, judged on the markup axe recorded (a re-render may have replaced the live
    element since): parsed into a detached element and matched against the allow-list's selector."""
    check = """([html, s]) => {
        const box = document.createElement('template');
        box.innerHTML = html;
        return !!box.content.firstElementChild?.matches(s);
    }"""
    return any(rule == r and page.evaluate(check, [node["html"], selector]) for r, selector, _ in GRADIO_MARKUP)


def blocking_violations(page) -> list[str]:
    """Every serious or critical violation axe finds on the page, less the allowed Gradio markup; plus every
    color-contrast or button-name violation whatever its impact."""
    found = []
    for v in Axe().run(page, options=AXE_OPTIONS).response["violations"]:
        if v["impact"] not in BLOCKING and v["id"] not in NEVER:
            continue
        for node in v["nodes"]:
            if v["id"] in NEVER or not allowed(page, v["id"], node):
                found.append(f"{v['id']} ({v['impact']}): {node['target']} {node['html'][:160]}")
    return found


@pytest.mark.parametrize("mode", ["light", "dark"])
@pytest.mark.parametrize("size", list(SIZES))
def test_axe_finds_nothing_serious_on_any_tab(browser, app_url, size, mode):
    page = open_page(browser, app_url, size, mode)
    try:
        problems = {}
        for name in TABS:
            open_tab(page, name)
            problems[name] = blocking_violations(page)
            if name == "Admin":  # and the panel an admin sees once unlocked
                page.fill("#admin-token input", ADMIN_TOKEN)
                page.click("#admin-unlock")
                page.wait_for_function(
                    "() => document.querySelector('#admin-lock')?.innerText.includes('Unlocked')", timeout=60_000
                )
                settle(page)
                problems["Admin (unlocked)"] = blocking_violations(page)
            if size == "phone" or name in ("Zero-shot", "Pokemon (scratch CLIP)"):
                screenshot(page, f"a11y_{size}_{mode}_{name.split()[0].lower()}")
        assert not any(problems.values()), {tab: p for tab, p in problems.items() if p}
    finally:
        page.close()


FOCUSED = """() => { const e = document.activeElement;
    return e ? `${e.tagName.toLowerCase()}#${e.id}[${e.getAttribute('aria-label') || e.innerText?.slice(0, 30) || ''}]`
             : 'nothing' }"""


def tab_to(page, is_there: str, limit: int = 60):
    """Press Tab until ``is_there`` (a JS predicate on document.activeElement) holds; fail with the focus path."""
    path = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"() => {{ const e = document.activeElement; return !!e && ({is_there}); }}"):
            return
        path.append(page.evaluate(FOCUSED))
    pytest.fail(f"never reached {is_there} with Tab; focus went: {path}")


def test_zero_shot_with_the_keyboard_alone(browser, app_url):
    """Upload through the file chooser, type labels, Classify, read the ranked labels: Tab, Space, Enter and typing
    only. Then axe on the filled results (the ranked list, the chart)."""
    page = open_page(browser, app_url, "laptop", "light")
    try:
        tab_to(page, "e.matches('#zs-images button.upload-container')")  # "Click to upload or drop files"
        focused, chooser = page.evaluate(FOCUSED), None
        # Space, then Enter, as a person presses again when nothing opened: after many pages in one browser either
        # key sometimes opens no chooser on the first press (see docs/accessibility.md)
        for key in ("Space", "Enter", "Space", "Enter"):
            try:
                with page.expect_file_chooser(timeout=8_000) as chooser:
                    page.keyboard.press(key)
                break
            except PlaywrightTimeout:
                chooser = None
        if chooser is None:
            pytest.fail(f"Space and Enter on {focused} (now {page.evaluate(FOCUSED)}) opened no file chooser")
        chooser.value.set_files([str(EXAMPLES / "china.jpg")])
        page.wait_for_selector("#zs-images .thumbnail-item img", timeout=60_000)

        tab_to(page, "e.matches('#zs-labels textarea')")
        page.keyboard.press("ControlOrMeta+a")
        page.keyboard.type("a temple, a flower, a red sports car")
        tab_to(page, "e.id === 'zs-run'")
        page.keyboard.press("Enter")

        page.wait_for_function("() => document.querySelector('#zs-label')?.innerText.includes('%')", timeout=90_000)
        ranked = [line.strip() for line in page.inner_text("#zs-label").splitlines() if line.strip()]
        assert ranked[1] in ("a temple", "a flower", "a red sports car"), ranked  # [0] is the block's label
        wait_for_chart(page, "#zs-chart", timeout=30_000)
        settle(page)  # the second step (the matrix) may still be running
        assert blocking_violations(page) == []
        screenshot(page, "a11y_keyboard_zero_shot")
    finally:
        page.close()
