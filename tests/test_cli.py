"""The command line (``python -m clipdemo``): zero-shot prints JSON per image, errors are one line without a
traceback, and train / eval / versions / promote / rollback / demo-data work on tiny local data."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from clipdemo.cli import main
from clipdemo.testing import colour_folder, last_json

EXAMPLES = sorted(str(p) for p in (Path(__file__).parent.parent / "examples").glob("*.jpg"))


def test_zero_shot_prints_json_per_image(tiny_clip, capsys):
    assert (
        main(["zero-shot", "--model", str(tiny_clip), "--labels", "temple, flower\nwoman", "--top-k", "2", *EXAMPLES])
        == 0
    )
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
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])[0]["image"] == EXAMPLES[0]


# Runs the CLI's own entry point in a fresh interpreter, then says which heavy libraries it imported.
IMPORTS_OF = """
import sys
from clipdemo.__main__ import run
sys.argv = ["clipdemo", *sys.argv[1:]]
try:
    code = run()
except SystemExit as e:
    code = e.code
heavy = ("torch", "transformers", "onnxruntime", "gradio", "sklearn")
print("IMPORTED", code, *sorted(m for m in heavy if m in sys.modules))
"""


@pytest.mark.parametrize(
    "args, code",
    [
        ([], 2),  # importing clipdemo.cli, then "a command is required"
        (["--help"], 0),
        (["train", "--help"], 0),
        (["train", "head", "--help"], 0),  # lists the heads and splits
        (["train", "scratch", "--help"], 0),  # lists the presets
        (["versions", "scratch"], 0),
        (["cache", "list"], 0),
        (["zero-shot", "x.jpg"], 2),  # --labels missing
        (["versions", "no-such-family"], 2),
        (["bogus"], 2),
    ],
)
def test_a_command_that_needs_no_model_imports_no_model_library(tmp_path, args, code):
    """``--help``, a listing and an argument error answer without importing torch, transformers or scikit-learn
    (seconds)."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORTS_OF, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CLIPDEMO_CHECKPOINT_DIR": str(tmp_path)},
    )
    last = out.stdout.strip().splitlines()[-1].split()
    assert last == ["IMPORTED", str(code)], (out.stdout[-500:], out.stderr[-2000:])


def test_train_help_lists_the_choices_training_accepts(capsys):
    from clipdemo.data.splits import PROTOCOLS
    from clipdemo.heads.specs import HEADS
    from clipdemo.scratch.config import PRESETS

    for what, names in (("head", [*HEADS, *PROTOCOLS]), ("scratch", list(PRESETS))):
        with pytest.raises(SystemExit):
            main(["train", what, "--help"])
        shown = capsys.readouterr().out
        assert all(name in shown for name in names), (what, shown)


def test_help_shows_examples_that_parse(capsys):
    """``--help`` ends with the module's examples, and each is a command the parser takes as written."""
    from clipdemo.cli import build_parser

    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out
    commands = [c.strip() for line in shown.split("examples:")[1].splitlines() for c in line.split(";")]
    # "[--all]": an option written as optional, given here
    commands = [
        shlex.split(c.translate({ord("["): None, ord("]"): None}))[3:]
        for c in commands
        if c.startswith("python -m clipdemo ")
    ]
    assert {c[0] for c in commands} == set(
        "zero-shot search demo-data train eval versions promote rollback cache".split()
    )
    for argv in commands:
        build_parser(argv).parse_args(argv)  # an argument it does not know would exit 2


METRIC_KEYS = {"acc1", "acc5", "mean_per_class_recall", "weighted_f1", "n"}


def test_train_scratch_eval_versions_promote_rollback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "ckpts"))
    data = colour_folder(tmp_path / "data", per_class={"train": 6, "test": 3})
    for label in ("a", "b"):  # two versions in the checkpoint dir, as a scripted retrain writes them
        assert main(["train", "scratch", "--data", str(data), "--epochs", "2", "--label", label]) == 0
        trained = last_json(capsys)
        assert METRIC_KEYS <= set(trained) and Path(trained["checkpoint"]).parent == tmp_path / "ckpts" / "scratch"
    assert main(["eval", "--checkpoint", trained["checkpoint"], "--data", str(data)]) == 0
    assert METRIC_KEYS <= set(last_json(capsys))

    assert main(["versions", "scratch"]) == 0
    versions = last_json(capsys)
    assert len(versions) == 2 and not any(v["served"] for v in versions)
    first, second = sorted(v["version"] for v in versions)
    assert main(["promote", "scratch", first]) == 0 and last_json(capsys)["served"].endswith(first)
    assert main(["promote", "scratch", second]) == 0
    capsys.readouterr()
    assert main(["rollback", "scratch"]) == 0 and last_json(capsys)["served"].endswith(first)
    assert main(["promote", "scratch", "../../etc"]) == 2


def test_train_with_promote_serves_the_new_version(tmp_path, monkeypatch, capsys):
    from clipdemo.checkpoints import served_checkpoint

    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "ckpts"))
    data = colour_folder(tmp_path / "data", per_class={"train": 6, "test": 3})
    assert main(["train", "scratch", "--data", str(data), "--epochs", "1", "--promote"]) == 0
    trained = Path(last_json(capsys)["checkpoint"])
    assert served_checkpoint(tmp_path / "ckpts", "scratch") == trained
    # a folder outside the checkpoint dir is kept where it is and served as a copy, a new version
    assert main(["train", "scratch", "--data", str(data), "--out", str(tmp_path / "elsewhere"), "--promote"]) == 0
    served = served_checkpoint(tmp_path / "ckpts", "scratch")
    assert served.parent == tmp_path / "ckpts" / "scratch" and served.name.endswith("-elsewhere")
    assert (tmp_path / "elsewhere" / "weights.safetensors").read_bytes() == (
        served / "weights.safetensors"
    ).read_bytes()


def test_train_head_and_eval_on_a_stanford_cars_devkit(tiny_clip, tmp_path, monkeypatch, capsys):
    from clipdemo.testing import write_minicars

    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "ckpts"))
    cars = write_minicars(tmp_path / "cars")
    out = tmp_path / "head"
    args = ["train", "head", "--data", str(cars), "--backbone", str(tiny_clip), "--out", str(out), "--epochs", "2"]
    assert main(args) == 0
    trained = last_json(capsys)
    assert METRIC_KEYS <= set(trained) and METRIC_KEYS <= set(trained["zeroshot"])
    assert main(["eval", "--checkpoint", str(out), "--data", str(cars), "--split", "test"]) == 0
    assert METRIC_KEYS <= set(last_json(capsys))


def test_demo_data_writes_an_image_folder(tmp_path, capsys):
    assert main(["demo-data", "--out", str(tmp_path / "shapes")]) == 0
    out = Path(last_json(capsys)["out"])
    assert {"train", "validation", "test", "unseen"} <= {p.name for p in out.iterdir()}
    assert len(list((out / "train").iterdir())) >= 10


@pytest.mark.parametrize(
    "what, args, options",
    [
        ("scratch", ["--epochs", "0"], dict(epochs=0)),
        ("scratch", ["--max-seconds", "-1"], dict(max_seconds=-1.0)),
        ("scratch", ["--seed", "-1"], dict(seed=-1)),
        ("head", ["--backbone", " "], dict(backbone=" ")),
    ],
)
def test_a_bad_training_option_exits_2_before_any_work_in_the_admin_jobs_sentence(
    tmp_path, monkeypatch, capsys, what, args, options
):
    """The CLI and an Admin job share one checker (``pipeline.train_options``): the same sentence, nothing written."""
    from clipdemo.jobs import JobRunner
    from clipdemo.pipeline import OptionError

    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "ckpts"))
    assert main(["train", what, "--data", str(tmp_path / "no-such-data"), *args]) == 2
    err = capsys.readouterr().err
    with pytest.raises(OptionError) as refused:
        JobRunner(tmp_path / "jobs").start("cars-head" if what == "head" else what, "shapes", **options)
    assert err == f"error: {refused.value}\n" and not (tmp_path / "ckpts").exists()
