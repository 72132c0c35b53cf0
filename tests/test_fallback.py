"""Offline, the default model can't load and the shipped scratch CLIP answers in its place: the start-up log line
and a banner above the zero-shot results say which model answers, why, and that its scores on photos mean nothing."""

from __future__ import annotations

import pytest
from gradio_client import Client, handle_file

from clipdemo import hub_access
from clipdemo.serving import Served
from clipdemo.settings import REPO_ROOT, Settings
from clipdemo.testing import app_page, app_served, screenshot
from clipdemo.ui import zeroshot_tab

UNREACHABLE = "openai/clip-vit-base-patch32"
PHOTO = REPO_ROOT / "examples" / "flower.jpg"
STAND_IN = f"scratch CLIP (served version shapes-v1) answered in place of {UNREACHABLE}"


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(hub_access, "hub_reachable", lambda timeout=2.0: False)


@pytest.fixture
def checkpoints(shipped_checkpoints):
    """The shipped checkpoints (the served scratch CLIP), copied: tests never write into the repository."""
    return shipped_checkpoints


def test_start_up_log_names_the_stand_in_and_why(offline, checkpoints):
    line = Served(Settings(model=UNREACHABLE, checkpoint_dir=checkpoints)).startup_line()
    assert line.startswith("zero-shot: scratch CLIP (served version shapes-v1) answers in place of")
    assert "clip-vit-base-patch32" in line and "could not be loaded" in line


def test_start_up_log_names_the_model_when_it_loads(tiny_clip, checkpoints):
    line = Served(Settings(model=str(tiny_clip), checkpoint_dir=checkpoints)).startup_line()
    assert line.startswith(f"zero-shot: local model '{tiny_clip.name}' on cpu") and "in place of" not in line


def test_banner_shows_only_while_a_stand_in_answers(offline, checkpoints, tiny_clip):
    *_, banner, where = zeroshot_tab.model_status(Served(Settings(model=UNREACHABLE, checkpoint_dir=checkpoints)))
    assert banner["visible"] and "answering in place of" in banner["value"]
    assert where["interactive"] is False  # the scratch stand-in has no relevancy map: said before any click
    assert "never seen a photo" in banner["value"] and "30 classes" in banner["value"]
    assert str(checkpoints) not in banner["value"]  # visitors never see the server's paths
    *_, banner, where = zeroshot_tab.model_status(Served(Settings(model=str(tiny_clip), checkpoint_dir=checkpoints)))
    assert not banner["visible"] and where["interactive"] is True


def test_browser_reads_the_banner_before_any_score(offline, checkpoints, browser):
    settings = Settings(model=UNREACHABLE, checkpoint_dir=checkpoints)
    with app_served(settings) as url, app_page(browser, url) as page:
        banner = page.locator("#zs-fallback")
        banner.wait_for(state="visible", timeout=60_000)
        text = banner.inner_text()
        assert "scratch CLIP (served version shapes-v1) is answering in place of" in text
        assert "never seen a photo" in text
        label_top = page.locator("#zs-label").bounding_box()["y"]
        assert banner.bounding_box()["y"] < label_top  # above the results, read first
        assert page.locator("#zs-where-run").is_disabled()  # no relevancy map from this model: said before a click
        screenshot(page, "zero_shot_fallback_banner")


def test_results_say_once_which_model_answered(offline, checkpoints):
    """Beside the results, one short sentence; the why is the banner's, not said a second time below it."""
    served = Served(Settings(model=UNREACHABLE, checkpoint_dir=checkpoints))
    *_, status = zeroshot_tab.zero_shot(served, [str(PHOTO)], "a flower, a car", "photo", "", 5)
    assert STAND_IN in status and "photos mean nothing" in status
    assert "could not be loaded" not in status and status.count(STAND_IN) == 1
    assert "could not be loaded" not in zeroshot_tab.model_status(served)[0]


def test_programs_are_told_a_stand_in_answered(offline, checkpoints):
    """An agent or a script reads no banner: the tool's JSON and /zero_shot's status line carry the warning."""
    with app_served(Settings(model=UNREACHABLE, checkpoint_dir=checkpoints)) as url:
        client = Client(url, verbose=False)
        photo = handle_file(str(PHOTO))
        answer = client.predict(image=photo, labels="a flower, a car", api_name="/zero_shot_classify")
        assert STAND_IN in answer["warning"] and len(answer["predictions"]) == 2
        gallery = [{"image": photo, "caption": None}]
        *_, status = client.predict(gallery, "a flower, a car", "photo", "", 5, "default", api_name="/zero_shot")
        assert STAND_IN in status
        client.close()
