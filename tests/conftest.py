"""Shared fixtures: a tiny CLIP folder built like a Hub model, a launched app, a headless Chromium."""

from __future__ import annotations

import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from clipdemo.testing import make_clip_folder

SCREENSHOTS = Path(__file__).parent / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def launched(blocks, **kwargs):
    """Serve a Blocks on a free local port for the duration of the block; yields its URL."""
    blocks.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        yield blocks.local_url
    finally:
        blocks.close()


@contextmanager
def app_served(settings):
    """The whole app on these settings, served for the duration of the block; yields its URL."""
    from clipdemo.ui.app import build_app, launch_kwargs

    with launched(build_app(settings), **launch_kwargs(settings)) as url:
        yield url


@contextmanager
def app_page(browser, url: str, height: int = 1000):
    """A browser page on the app, once its zero-shot upload is attached (Gradio renders before it serves)."""
    page = browser.new_page(viewport={"width": 1280, "height": height})
    try:
        page.goto(url)
        page.wait_for_selector("#zs-images input[type=file]", state="attached", timeout=60_000)
        yield page
    finally:
        page.close()


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


SETTLED = """() => !document.querySelector('.pending, .generating')
    && !document.getAnimations().some(a => a instanceof CSSTransition && a.playState === 'running')"""


def screenshot(page, name: str) -> Path:
    """Full-page screenshot once no output is pending and Gradio's fade of its loading overlay has ended (else the
    results come out dimmed); a polling timer may never settle: then after 10 s, as it is."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    try:
        page.wait_for_function(SETTLED, timeout=10_000)
    except PlaywrightTimeout:
        pass
    page.screenshot(path=str(path), full_page=True)
    return path
