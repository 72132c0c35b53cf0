import json
import subprocess
import sys
from pathlib import Path

import pytest

from clipdemo.cli import main

EXAMPLES = sorted(str(p) for p in (Path(__file__).parent.parent / "examples").glob("*.jpg"))


def test_zero_shot_prints_json_per_image(tiny_clip, capsys):
    assert main(["zero-shot", "--model", str(tiny_clip), "--labels", "temple, flower\nwoman", "--top-k", "2", *EXAMPLES]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["image"] for r in result] == EXAMPLES
    for r in result:
        scores = [p["score"] for p in r["predictions"]]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True)
        assert {p["label"] for p in r["predictions"]} <= {"temple", "flower", "woman"}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--templates", "a photo of a cat"], "custom template with {}"),
        (["--labels", " , "], "at least one label"),
        (["--model", "/nonexistent/clip"], "does not exist"),
    ],
)
def test_errors_are_one_line_without_traceback(tiny_clip, capsys, extra, message):
    args = ["zero-shot", "--model", str(tiny_clip), "--labels", "a, b", *extra, EXAMPLES[0]]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_image_refused(tiny_clip, tmp_path, capsys):
    bad = tmp_path / "fake.jpg"
    bad.write_text("<html>not an image</html>")
    assert main(["zero-shot", "--model", str(tiny_clip), "--labels", "a", str(bad)]) == 2
    assert "not an image" in capsys.readouterr().err


def test_module_entry_point(tiny_clip):
    out = subprocess.run(
        [sys.executable, "-m", "clipdemo", "zero-shot", "--model", str(tiny_clip), "--labels", "a, b", EXAMPLES[0]],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])[0]["image"] == EXAMPLES[0]
