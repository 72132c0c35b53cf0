"""The Cars tab: handlers called as functions (no head, a served head, a promote, a missing backbone), then one
headless Chromium run of the tab on its own."""

from __future__ import annotations

import shutil

import gradio as gr
import pytest
import torch

from clipdemo import encoders
from clipdemo.cars import train_head
from clipdemo.checkpoints import claim_version, promote
from clipdemo.data.cars_names import CLASS_NAMES
from clipdemo.data.sources import load_source
from clipdemo.heads import DEFAULT_HEAD
from clipdemo.serving import Served
from clipdemo.settings import Settings
from clipdemo.testing import launched, make_clip_folder, screenshot, write_minicars
from clipdemo.ui import cars_tab
from clipdemo.ui.common import user_errors


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()  # see tests/test_heads.py: a shared 2-core box
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    root = write_minicars(tmp_path_factory.mktemp("cars"), classes=4, per_class_train=6, per_class_test=4, size=96)
    return load_source(str(root))


def train_and_promote(root, cars, backbone, head=DEFAULT_HEAD) -> str:
    with claim_version(root, "cars-head", head) as claim:
        out = claim.folder
        result = train_head(
            cars, str(backbone), out, head=head, split="official", cache_dir=root / "cache", progress=lambda info: None
        )
    if head == DEFAULT_HEAD:  # what the screenshot shows: a trained head that beats zero-shot on held-out images
        assert result.metrics.acc1 >= 0.9 and result.metrics.acc1 > result.zeroshot.acc1 + 0.3, result.to_json()
    promote(root, "cars-head", out.name)
    return out.name


@pytest.fixture(scope="module")
def served(cars, tiny_clip, tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    train_and_promote(root, cars, tiny_clip)
    return Served(Settings(model=str(tiny_clip), checkpoint_dir=root))


def test_without_a_served_head_the_tab_still_ranks_the_196_cars_zero_shot(tiny_clip, tmp_path, cars):
    """No head (the default offline state): zero-shot over the shipped class names, what a head would add in a
    visitor's words, and the operator's commands folded in a Details."""
    nothing = Served(Settings(model=str(tiny_clip), checkpoint_dir=tmp_path))
    status = cars_tab.tab_status(nothing)
    assert "196 car names" in status and "second opinion" in status  # what works now, and what a head would add
    visitor, operator = status.split("<details>")
    assert "python" not in visitor and "python -m clipdemo train head --data" in operator and "promote" in operator
    head, zeroshot, message, card = cars_tab.classify(nothing, cars.splits["test"].images[0])
    assert head is None and message == status and card == ""
    assert len(zeroshot) == 5 and set(zeroshot) <= set(CLASS_NAMES) and len(CLASS_NAMES) == 196
    scores = list(zeroshot.values())
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) < 1  # the best 5 of 196 probabilities


def test_served_head_ranks_beside_zero_shot(served, cars):
    image = cars.splits["test"].images[0]
    head, zeroshot, verdict, card = cars_tab.classify(served, image)
    assert set(head) == set(zeroshot) == set(cars.class_names)  # 4 classes: the top 5 is all of them
    assert sum(head.values()) == pytest.approx(1.0, abs=1e-4)
    top_head, top_zs = max(head, key=head.get), max(zeroshot, key=zeroshot.get)
    assert ("agree" in verdict) and (top_head in verdict) and (top_zs in verdict)
    assert ("They agree" in verdict) == (top_head == top_zs)
    assert "acc@1" in card and "zero-shot CLIP" in card and "the test split" in card and f"`{DEFAULT_HEAD}`" in card
    assert "cross-validation" in card  # how the head was chosen, and on how many images
    root = str(served.settings.checkpoint_dir)
    assert root not in card + verdict and str(served.settings.model) not in card  # no server paths shown
    assert "local model" in card and "cars-devkit: cars" in card
    assert "Upload a photo of a car" in cars_tab.tab_status(served)


def test_a_promote_swaps_the_head_without_a_restart(cars, tiny_clip, tmp_path):
    served = Served(Settings(model=str(tiny_clip), checkpoint_dir=tmp_path))
    train_and_promote(tmp_path, cars, tiny_clip)
    image = cars.splits["test"].images[1]
    first = cars_tab.served_classifier(served)
    assert cars_tab.served_classifier(served) is first  # loaded once, then reused
    version = train_and_promote(tmp_path, cars, tiny_clip, head="linear")
    _, _, _, card = cars_tab.classify(served, image)
    assert version in card and "`linear`" in card
    assert cars_tab.served_classifier(served) is not first


def test_a_missing_backbone_is_explained_not_raised(cars, tmp_path):
    backbone = make_clip_folder(tmp_path / "gone-clip", "tiny", seed=3)
    root = tmp_path / "checkpoints"
    train_and_promote(root, cars, backbone)
    shutil.rmtree(backbone)
    encoders.forget_encoder(str(backbone.resolve()))
    served = Served(Settings(model="unused", checkpoint_dir=root))
    status = cars_tab.tab_status(served)
    assert "backbone local model 'gone-clip' can't be loaded" in status and "train head" in status
    head, zeroshot, message, card = cars_tab.classify(served, cars.splits["test"].images[0])
    assert head is None and zeroshot is None and "can't be loaded" in message and "acc@1" in card
    assert str(tmp_path) not in status + message + card


def test_bad_uploads_become_short_errors(served, tmp_path):
    handler = user_errors(lambda image: cars_tab.classify(served, image))
    with pytest.raises(gr.Error, match="Upload a photo of a car"):
        handler(None)
    junk = tmp_path / "car.jpg"
    junk.write_bytes(b"definitely not a jpeg")
    with pytest.raises(gr.Error, match="not an image"):
        handler(str(junk))


def test_browser_upload_shows_both_rankings(served, cars, browser):
    with gr.Blocks(analytics_enabled=False) as demo:
        cars_tab.build(served)
    with launched(demo) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.wait_for_selector("#cars-image input[type=file]", state="attached", timeout=60_000)
        assert "Upload a photo of a car" in page.inner_text("#cars-status")
        page.set_input_files("#cars-image input[type=file]", [str(cars.splits["test"].images[0])])
        page.wait_for_function(
            "() => document.querySelector('#cars-zs-label')?.innerText.includes('%')", timeout=60_000
        )
        head, zeroshot = page.inner_text("#cars-head-label"), page.inner_text("#cars-zs-label")
        assert any(name in head for name in cars.class_names) and any(name in zeroshot for name in cars.class_names)
        assert "agree" in page.inner_text("#cars-status")
        card = page.inner_text("#cars-card")
        assert f"`{DEFAULT_HEAD}`" not in card and DEFAULT_HEAD in card  # Markdown rendered
        # the screenshot shows a trained head that beats zero-shot on the held-out images
        head_row = next(line for line in card.splitlines() if line.startswith("head ("))
        zs_row = next(line for line in card.splitlines() if line.startswith("zero-shot CLIP"))
        head_acc, zs_acc = (float(row.split("\t")[1].rstrip("%")) for row in (head_row, zs_row))
        assert head_acc >= 90.0 and head_acc > zs_acc + 30, card
        assert screenshot(page, "cars_tab").stat().st_size > 10_000
        page.close()


@pytest.mark.parametrize("spec", ["models/clip/v2", "C:\\models\\clip", "./clip", "~/clip", "/srv/clip"])
def test_a_lost_backbone_folder_is_named_as_one_even_with_the_hub_reachable(spec, tmp_path, monkeypatch):
    """What counts as a path is ``names.looks_like_path``'s rule: such a spec is never sent to the Hub."""
    from types import SimpleNamespace

    from clipdemo import hub_access

    monkeypatch.setattr(hub_access, "hub_reachable", lambda timeout=2.0: True)
    monkeypatch.setattr(cars_tab, "read_card", lambda folder: {"backbone": spec, "head": "linear"})
    served = SimpleNamespace(checkpoint=lambda kind: tmp_path)
    assert "can't be loaded" in cars_tab.tab_status(served)
    monkeypatch.setattr(cars_tab, "read_card", lambda folder: {"backbone": "openai/clip-vit-base-patch32"})
    assert "Upload a photo of a car" in cars_tab.tab_status(served)
