"""The Python API (``clipdemo.api``): the README's one-liner as a doctest on a tiny model, the same answer as the
CLI for the same inputs (in this process and in a fresh one), images as paths, PIL images, bytes or URLs, a scratch
checkpoint with its own classes, a trained head, and ``import clipdemo`` staying light."""

from __future__ import annotations

import doctest
import functools
import http.server
import io
import json
import subprocess
import sys
import threading
from contextlib import redirect_stdout

import pytest
from PIL import Image

from clipdemo import TrainedHead, ZeroShot
from clipdemo.cli import main as cli_main
from clipdemo.settings import REPO_ROOT
from clipdemo.testing import head_checkpoints

SHAPES = REPO_ROOT / "examples" / "shapes"
RED_CIRCLE = SHAPES / "red_circle.png"
SCRATCH = REPO_ROOT / "checkpoints" / "scratch" / "shapes-v1"
LABELS = ["a red circle", "a blue square", "a yellow star"]

EXAMPLE = """
>>> from clipdemo import ZeroShot
>>> zs = ZeroShot(MODEL)
>>> out = zs([RED_CIRCLE, Image.new("RGB", (64, 48), "blue")], ["a red circle", "a blue square"], top_k=1)
>>> [sorted(entry) for entry in out]
[['image', 'independent', 'predictions', 'scoring'], ['image', 'independent', 'predictions', 'scoring']]
>>> out[0]["image"].endswith("red_circle.png"), out[1]["image"], out[0]["scoring"]
(True, 'image 2', 'softmax')
>>> [len(entry["predictions"]) for entry in out]
[1, 1]
>>> zs(RED_CIRCLE, "a red circle, a blue square", open_set=True)[0]["threshold"]  # CLIP: a cosine similarity
0.2
"""


@pytest.fixture(autouse=True)
def own_checkpoint_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))  # caches (ONNX exports) go there


def test_readme_style_example_as_a_doctest(tiny_clip):
    test = doctest.DocTestParser().get_doctest(
        EXAMPLE, {"MODEL": str(tiny_clip), "RED_CIRCLE": str(RED_CIRCLE), "Image": Image}, "python-api", None, 0
    )
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def cli_json(*args) -> list[dict]:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(list(args)) == 0
    return json.loads(out.getvalue().splitlines()[-1])


@pytest.mark.parametrize(
    "options, kwargs",
    [
        ([], {}),
        (["--templates", "imagenet-80", "--top-k", "2"], dict(templates="imagenet-80", top_k=2)),
        (["--open-set", "--multi-label"], dict(open_set=True, multi_label=True)),
        (["--threshold", "0.05"], dict(threshold=0.05)),
    ],
)
def test_same_answer_as_the_cli(tiny_clip, options, kwargs):
    images = [str(p) for p in sorted(SHAPES.glob("*.png"))[:3]]
    expected = cli_json("zero-shot", "--model", str(tiny_clip), "--labels", ", ".join(LABELS), *options, *images)
    assert ZeroShot(tiny_clip)(images, LABELS, **kwargs) == expected


def test_same_scores_as_the_cli_in_a_fresh_process(tiny_clip, tmp_path):
    images = [str(p) for p in sorted(SHAPES.glob("*.png"))[:2]]
    done = subprocess.run(
        [sys.executable, "-m", "clipdemo", "zero-shot", "--model", str(tiny_clip), "--labels", ", ".join(LABELS)]
        + images,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.splitlines()[-1])
    ours = ZeroShot(tiny_clip)(images, LABELS)
    for a, b in zip(ours, theirs):
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        assert [p["score"] for p in a["predictions"]] == pytest.approx([p["score"] for p in b["predictions"]], abs=1e-5)


@pytest.fixture
def served_folder():
    """SHAPES over http://127.0.0.1 for the duration of a test."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SHAPES))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_paths_pil_bytes_and_urls_give_the_same_scores(tiny_clip, served_folder):
    zs = ZeroShot(tiny_clip)
    url = f"{served_folder}/{RED_CIRCLE.name}"
    with Image.open(RED_CIRCLE) as opened:
        pil = opened.copy()
    out = zs([RED_CIRCLE, pil, RED_CIRCLE.read_bytes(), url], LABELS)
    assert [entry["image"] for entry in out] == [str(RED_CIRCLE), "image 2", "image 3", url]
    assert all(entry["predictions"] == out[0]["predictions"] for entry in out)
    with pytest.raises(Exception, match="could not be downloaded"):
        zs(f"{served_folder}/missing.png", LABELS)
    with pytest.raises(Exception, match="not an image"):
        zs(b"not an image at all", LABELS)


def test_a_scratch_checkpoint_ranks_its_own_classes(tmp_path):
    import shutil

    with pytest.raises(Exception, match="No scratch CLIP is served"):
        ZeroShot.scratch()
    shutil.copytree(SCRATCH.parent, tmp_path / "checkpoints" / "scratch")  # CLIPDEMO_CHECKPOINT_DIR (fixture above)
    assert ZeroShot.scratch().model == str(tmp_path / "checkpoints" / "scratch" / SCRATCH.name)
    zs = ZeroShot(SCRATCH)
    out = zs(RED_CIRCLE, top_k=3)[0]
    assert len(out["predictions"]) == 3 and out["predictions"][0]["label"] == "red circle"
    assert {p["label"] for p in out["predictions"]} <= set(zs.encoder.class_names)
    assert zs(RED_CIRCLE, ["red circle", "blue star"])[0]["predictions"][0]["label"] == "red circle"


def test_a_trained_head(tiny_clip, tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("heads")
    head_checkpoints(root, tiny_clip, tmp_path_factory.mktemp("data"))
    folder = next((root / "cars-head").glob("*api*"))
    head = TrainedHead(folder)
    out = head([RED_CIRCLE, str(RED_CIRCLE)], top_k=2)
    expected_head, expected_zs = head.classifier.predict(RED_CIRCLE, k=2)
    assert out[0]["predictions"] == [{"label": p.label, "score": round(p.score, 6)} for p in expected_head]
    assert out[0]["zero_shot"] == [{"label": p.label, "score": round(p.score, 6)} for p in expected_zs]
    assert out[1]["predictions"] == out[0]["predictions"]
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(root))
    assert TrainedHead().path == folder  # the served one


def test_import_clipdemo_stays_light():
    code = "import sys, clipdemo; clipdemo.ZeroShot; print(sorted(m for m in ('torch', 'gradio') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr
