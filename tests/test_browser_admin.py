"""The Admin tab in headless Chromium, on a laptop (1280×900) and a phone (390×844), as an admin uses it: a wrong
token, the dataset picker, a Cars-head job to its end, and a promote that asks first.

The whole app is served with a runner whose trainers are doubles (``fake_head_trainer``: a head's search that ends
at step 8 of 14), so a job takes a fraction of a second. Served scratch version: ``v1-838`` (top-1 83.8%); beside it
``v2-cancelled``, a cancelled run at 45%. Screenshots land in $CLIPDEMO_SCREENSHOTS when set.
"""

import json

import pytest

from clipdemo.checkpoints import promote, served_version
from clipdemo.jobs import JobRunner
from clipdemo.settings import Settings
from clipdemo.testing import (
    app_page,
    colour_folder,
    fake_head_trainer,
    launched,
    scratch_checkpoint,
    screenshot,
)
from clipdemo.ui.app import build_app, launch_kwargs

TOKEN = "browser-admin-secret"
VIEWPORTS = {"laptop": (1280, 900), "phone": (390, 844)}
BADGES = """() => [...document.querySelectorAll('.error')].filter(e => e.offsetParent !== null
    && !e.closest('.toast-wrap, .toast-body')).length"""  # status trackers' "Error" badges; the toast is not one


@pytest.fixture(scope="module")
def admin_app(tiny_clip, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin-browser")
    data = colour_folder(tmp / "data" / "tiny", per_class={"train": 4, "test": 2}).parent
    root = tmp / "checkpoints"
    for version, acc1, stopped in (("v1-838", 0.838, "finished"), ("v2-cancelled", 0.45, "cancelled")):
        folder = scratch_checkpoint(root / "scratch" / version, ["red", "green", "blue"])
        card = json.loads((folder / "card.json").read_text())
        card.update(metrics={"acc1": acc1}, run={"stopped": stopped})
        (folder / "card.json").write_text(json.dumps(card))
    settings = Settings(model=str(tiny_clip), checkpoint_dir=root, data_root=data, admin_token=TOKEN)
    runner = JobRunner.from_settings(settings, trainers={"cars-head": fake_head_trainer})  # only a head is trained
    with launched(build_app(settings, runner), **launch_kwargs(settings)) as url:
        yield url, root


@pytest.fixture(params=list(VIEWPORTS))
def page(request, browser, admin_app):
    url, root = admin_app
    promote(root, "scratch", "v1-838")  # each viewport starts from the 83.8% version served
    width, height = VIEWPORTS[request.param]
    with app_page(browser, url, height, width) as page:
        tab = page.get_by_role("tab", name="Admin")
        if tab.is_visible():
            tab.click()
        else:  # a phone may fold some tab names into Gradio's "•••" menu
            page.locator(".overflow-menu button").first.click()
            page.locator(".overflow-dropdown button", has_text="Admin").click()
        page.get_by_text("Train a new version of a model").first.wait_for(timeout=30_000)
        yield page, root, request.param


def text_of(page, selector: str) -> str:
    return page.inner_text(selector)


def test_admin_for_people(page):
    page, root, name = page
    # locked: one line of what the tab does, no form and no Push/Pull
    assert not page.locator("#admin-start").is_visible() and not page.get_by_text("Push to Hub").is_visible()
    page.fill("#admin-token input", "not-the-token")
    page.click("#admin-unlock")
    page.get_by_text("Admin access refused").first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)  # let any badge that was coming be drawn
    assert page.evaluate(BADGES) == 0, "a wrong token is one toast, not a badge per panel"
    assert "Unlocked" not in text_of(page, "#admin-lock") and not page.locator("#admin-start").is_visible()
    screenshot(page, f"admin_wrong_token_{name}")

    page.fill("#admin-token input", TOKEN)
    page.click("#admin-unlock")
    page.wait_for_function("() => document.querySelector('#admin-lock')?.innerText.includes('Unlocked')")
    page.locator("#admin-start").wait_for(state="visible", timeout=30_000)
    page.click("#admin-dataset input")
    options = page.get_by_role("option")
    options.first.wait_for(timeout=10_000)
    assert [o.split()[-1] for o in options.all_inner_texts()] == ["shapes", "tiny"]  # "✓ shapes": the chosen one
    assert "data/" in text_of(page, "#admin-dataset")  # the hint names the data folder
    screenshot(page, f"admin_dataset_picker_{name}")
    options.filter(has_text="tiny").click()

    page.locator("#admin-kind").get_by_text("cars-head").click()
    page.click("#admin-start")
    page.wait_for_function("() => document.querySelector('#admin-job-status')?.innerText.includes('Started job')")
    job = text_of(page, "#admin-job-status").split("Started job ")[1].split(":")[0]  # this width's job, not the last
    page.wait_for_function(
        "job => { const t = document.querySelector('#admin-progress')?.innerText || '';"
        " return t.startsWith(`Job ${job}:`) && t.includes('finished'); }",
        arg=job,
        timeout=60_000,
    )
    page.wait_for_selector("#admin-curve img", timeout=30_000)
    progress = text_of(page, "#admin-progress")
    assert "▓" * 20 in progress and "done in 8 steps" in progress and "step 8/14" not in progress
    log = page.locator("#admin-log textarea")
    first_line = log.input_value().splitlines()[0]
    assert "finished" in first_line and log.evaluate("t => t.scrollTop") == 0  # the newest line, in view
    page.locator("#admin-log").scroll_into_view_if_needed()
    screenshot(page, f"admin_head_finished_{name}")

    page.fill("#admin-version input", "v2-cancelled")
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    page.click("#admin-promote")
    page.wait_for_function(
        "() => document.querySelector('#admin-version-status')?.innerText.includes('Check before serving')",
        timeout=30_000,
    )
    status = text_of(page, "#admin-version-status")
    assert "its run is complete (cancelled)" in status and "45.0%" in status and "83.8%" in status
    assert served_version(root, "scratch") == "v1-838" and page.evaluate(BADGES) == 0
    anyway = page.locator("#admin-promote-anyway")
    assert anyway.is_visible() and anyway.inner_text().strip() == "Serve v2-cancelled anyway"
    page.locator("#admin-version-status").scroll_into_view_if_needed()
    screenshot(page, f"admin_promote_asks_{name}")
    anyway.click()
    page.wait_for_function(
        "() => document.querySelector('#admin-version-status')?.innerText.includes('Promoted')", timeout=30_000
    )
    assert served_version(root, "scratch") == "v2-cancelled" and not anyway.is_visible()

    # a token changed after unlocking: Roll back (three outputs) is refused in one toast; the panels keep what they had
    page.fill("#admin-token input", "changed-my-mind")
    page.click("#admin-rollback")
    page.get_by_text("Admin access refused").first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    assert page.evaluate(BADGES) == 0 and "Promoted" in text_of(page, "#admin-version-status")
    assert "v1-838" in text_of(page, "#admin-versions") and served_version(root, "scratch") == "v2-cancelled"
    screenshot(page, f"admin_token_changed_{name}")
