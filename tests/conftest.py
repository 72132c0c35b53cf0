"""Shared fixtures: every test's writes kept in temporary folders, a tiny CLIP folder built like a Hub model, a
headless Chromium, one torch thread. The builders the tests call (images, folders, devkits, models, a served app)
are in ``clipdemo.testing``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from clipdemo import onnx_engine, testing
from clipdemo.settings import REPO_ROOT
from clipdemo.testing import make_clip_folder

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def shipped_checkpoints(tmp_path_factory) -> Path:
    """A copy of the repository's checkpoints/ (the shipped scratch CLIP), caches left out: serve from this, so
    that ONNX exports, feature and text caches and promotions land in a temporary folder, not in the repository."""
    copy = tmp_path_factory.mktemp("shipped") / "checkpoints"
    shutil.copytree(REPO_ROOT / "checkpoints", copy, ignore=shutil.ignore_patterns(".cache"))
    return copy


@pytest.fixture(scope="session", autouse=True)
def writes_stay_in_tmp(shipped_checkpoints, tmp_path_factory):
    """Whatever reads the environment (``Settings.from_env``, the ONNX export cache, a CLI in a subprocess) gets the
    copy of the shipped checkpoints, and ``screenshot`` writes to $CLIPDEMO_SCREENSHOTS if set (to keep them), else
    to pytest's temporary folder. Tests that want a checkpoint folder of their own still set CLIPDEMO_CHECKPOINT_DIR
    with ``monkeypatch``."""
    screenshots = os.environ.get("CLIPDEMO_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIPDEMO_CHECKPOINT_DIR", str(shipped_checkpoints))
        mp.setattr(testing, "SCREENSHOTS", Path(screenshots))
        yield
    onnx_engine.stop_background_exports()  # a server's export child (``clipdemo.serving``) outlives no test run


@pytest.fixture(scope="module")
def one_torch_thread():
    """For files that train tiny models: the CI box has 2 cores shared with other jobs, and one torch thread
    runs tiny ops ~5x faster than two waiting on each other. The library itself sets nothing."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A random tiny HF CLIP + byte tokenizer saved with save_pretrained: loads like a Hub model."""
    return make_clip_folder(tmp_path_factory.mktemp("tiny-clip"), "tiny")


@pytest.fixture(scope="session")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is required for the browser tests (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()
