"""Data a model can't be fairly trained or scored on, through the CLI: every train and eval path checks for leaks,
skips and counts unreadable files, and refuses a dataset it can't learn from in one sentence; and the package has
no import circles."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from clipdemo.checkpoints import read_card
from clipdemo.testing import colour_folder, run_cli

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("red", "green", "blue", "yellow")


def image_folder(root: Path, classes=CLASSES, train=8, test=3) -> Path:
    return colour_folder(root, classes, {"train": train, "test": test} if test else {"train": train})


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return tmp_path


# --- a test split holding copies of training images ------------------------------------------------------------


@pytest.fixture
def leaky(env):
    """4 classes: train 8 each; test 3 fresh images each plus 3 copies (new names) of training images each."""
    root = image_folder(env / "leaky")
    for name in CLASSES:
        for i in range(3):
            shutil.copy(root / "train" / name / f"{name}_{i}.png", root / "test" / name / f"copy-{i}.png")
    return root


LIGHT_LEAK = "WARNING: 12 of 24 'test' images are copies of training or validation images"


def test_train_scratch_reports_a_leaking_test_split_and_scores_the_clean_one(leaky, capsys):
    code, result, err = run_cli(
        capsys, "train", "scratch", "--data", leaky, "--epochs", "2", "--out", leaky.parent / "s"
    )
    assert code == 0, err
    assert LIGHT_LEAK in err and LIGHT_LEAK in result["leak"]
    assert result["n"] == 12  # the 12 fresh test images, never a copy of a training image
    card = read_card(leaky.parent / "s")
    assert LIGHT_LEAK in card["split_plan"]["leak"] and any(LIGHT_LEAK in note for note in card["notes"])
    code, metrics, err = run_cli(capsys, "eval", "--checkpoint", leaky.parent / "s", "--data", leaky, "--split", "test")
    assert code == 0, err
    assert LIGHT_LEAK in err and metrics["overlap"] == 12 and metrics["n"] == 12
    assert metrics["acc1"] == pytest.approx(result["acc1"])  # the same clean images training scored


def test_train_head_reports_a_leaking_test_split_and_eval_agrees(leaky, tiny_clip, capsys):
    out = leaky.parent / "h"
    code, result, err = run_cli(
        capsys, "train", "head", "--data", leaky, "--backbone", tiny_clip, "--split", "official", "--out", out
    )
    assert code == 0, err
    assert LIGHT_LEAK in err and LIGHT_LEAK in result["leak"]
    assert result["n"] == result["zeroshot"]["n"] == 12
    assert LIGHT_LEAK in read_card(out)["split_plan"]["leak"]
    code, metrics, err = run_cli(capsys, "eval", "--checkpoint", out, "--data", leaky, "--split", "test")
    assert code == 0, err
    assert LIGHT_LEAK in err and metrics["n"] == 12 and metrics["acc1"] == pytest.approx(result["acc1"])


def test_a_test_split_made_of_training_images_is_replaced_by_a_clean_held_out_split(env, capsys):
    root = image_folder(env / "mini", test=0)
    for name in CLASSES:  # Pokemon mini's case: the test split is the training images again
        shutil.copytree(root / "train" / name, root / "test" / name)
    code, result, err = run_cli(capsys, "train", "scratch", "--data", root, "--epochs", "2", "--out", env / "s")
    assert code == 0, err
    assert "WARNING: the test split overlaps training: 32 of 32 test images" in err
    assert "held-out split" in result["leak"] and 0 < result["n"] < 32
    code, metrics, err = run_cli(capsys, "eval", "--checkpoint", env / "s", "--data", root, "--split", "test")
    assert code == 0 and "WARNING: the test split overlaps training" in err
    assert metrics["n"] == result["n"] and metrics["acc1"] == pytest.approx(result["acc1"])


def test_eval_on_the_training_split_says_it_is_not_held_out(leaky, capsys):
    code, _, err = run_cli(capsys, "train", "scratch", "--data", leaky, "--epochs", "1", "--out", leaky.parent / "s")
    assert code == 0, err
    code, metrics, err = run_cli(
        capsys, "eval", "--checkpoint", leaky.parent / "s", "--data", leaky, "--split", "train"
    )
    assert code == 0 and "not held-out" in err and "not held-out" in metrics["leak"]


# --- unreadable files ------------------------------------------------------------------------------------------


@pytest.fixture
def with_junk(env):
    root = image_folder(env / "junk")
    good = (root / "train" / "red" / "red_0.png").read_bytes()
    (root / "train" / "red" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "train" / "green" / "page.jpg").write_text("<html>not an image</html>")
    (root / "test" / "blue" / "empty.jpg").write_bytes(b"")
    return root


def test_train_scratch_skips_counts_and_names_unreadable_files(with_junk, capsys):
    code, result, err = run_cli(
        capsys, "train", "scratch", "--data", with_junk, "--epochs", "1", "--out", with_junk.parent / "s"
    )
    assert code == 0, err
    assert sum(result["skipped"].values()) == 3 and result["skipped"]["evaluation"] == 1
    for name in ("truncated.png", "page.jpg", "empty.jpg"):
        assert name in err
    assert read_card(with_junk.parent / "s")["skipped"] == result["skipped"]


def test_train_head_skips_counts_and_names_unreadable_files(with_junk, tiny_clip, capsys):
    out = with_junk.parent / "h"
    code, result, err = run_cli(
        capsys, "train", "head", "--data", with_junk, "--backbone", tiny_clip, "--split", "official", "--out", out
    )
    assert code == 0, err
    assert sum(result["skipped"].values()) == 3 and result["skipped"]["evaluation"] == 1
    assert all(name in err for name in ("truncated.png", "page.jpg", "empty.jpg"))
    assert read_card(out)["skipped"] == result["skipped"]
    code, metrics, err = run_cli(capsys, "eval", "--checkpoint", out, "--data", with_junk, "--split", "test")
    assert code == 0 and metrics["skipped"] == 1 and metrics["n"] == 12


# --- what can't be learned from --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["scratch", "head"])
def test_a_one_class_folder_is_refused_in_one_sentence(env, tiny_clip, capsys, family):
    root = image_folder(env / "one", classes=("red",))
    extra = ["--backbone", tiny_clip] if family == "head" else []
    code, _, err = run_cli(capsys, "train", family, "--data", root, *extra, "--out", env / "out")
    assert code == 2 and "one class (red): a classifier needs at least two." in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and not (env / "out").exists()


def test_a_folder_with_nothing_readable_is_refused_in_one_sentence(env, capsys):
    root = env / "junk-only"
    for name in ("a", "b"):
        for i in range(4):
            (root / "train" / name).mkdir(parents=True, exist_ok=True)
            (root / "train" / name / f"{i}.jpg").write_text(f"not an image {name}{i}")
    code, _, err = run_cli(capsys, "train", "scratch", "--data", root, "--epochs", "1", "--out", env / "out")
    assert code == 2 and "could be read" in err.strip().splitlines()[-1] and "Traceback" not in err


# --- options checked once, where they enter; checkpoints told apart by their kind ----------------------------------


def test_train_checks_options_handed_in_unchecked_and_trusts_checked_ones(monkeypatch):
    from dataclasses import replace

    from clipdemo import pipeline

    class Loading(Exception):
        """Raised where train starts reading the data: every check is behind it."""

    monkeypatch.setattr(pipeline, "load", lambda *a, **k: (_ for _ in ()).throw(Loading()))
    with pytest.raises(pipeline.OptionError, match="^Epochs must be a whole number from 1 to 100000.$"):
        pipeline.train("scratch", "shapes", "out", pipeline.TrainOptions(epochs=0))  # an API call enters here
    checked = pipeline.train_options("scratch", epochs=1)
    assert checked.checked_for == "scratch" and replace(checked, epochs=0).checked_for is None
    with pytest.raises(pipeline.OptionError, match="A head needs a backbone"):  # checked for another family
        pipeline.train("cars-head", "shapes", "out", checked)
    monkeypatch.setattr(pipeline.TrainOptions, "checked", lambda *a, **k: pytest.fail("checked a second time"))
    with pytest.raises(Loading):
        pipeline.train("scratch", "shapes", "out", checked)


def test_a_checkpoint_family_comes_from_its_kind():
    from clipdemo.checkpoints import CheckpointError
    from clipdemo.pipeline import family_of

    assert family_of({"kind": "scratch-clip"}) == "scratch" and family_of({"kind": "cars-head"}) == "cars-head"
    for config in ({}, {"kind": "fake"}, {"kind": "scratch"}, {"kind": ["scratch-clip"]}):
        with pytest.raises(CheckpointError, match="not a scratch CLIP or head checkpoint"):
            family_of(config)


# --- the shape of the code -------------------------------------------------------------------------------------


def import_graph() -> dict[str, set[str]]:
    """Every clipdemo module -> the clipdemo modules it imports, at any depth in the file (functions too),
    counting a package's ``__init__`` for each submodule imported (Python runs it first)."""
    package = ROOT / "clipdemo"
    modules = {}
    for f in package.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for name, f in modules.items():
        base = name if f.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    module = ".".join(
                        [*base.split(".")[: len(base.split(".")) - node.level + 1], *filter(None, [module])]
                    )
                found |= {f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names}
        deps = set()
        for dep in found:
            while dep:
                # a module's own package (its __init__ re-exporting it) is Python's package mechanics, not a circle
                if dep in modules and dep != name and not name.startswith(dep + "."):
                    deps.add(dep)
                dep = dep.rpartition(".")[0]
        graph[name] = deps - {"clipdemo"}
    return graph


def test_no_module_imports_a_module_that_imports_it_back():
    graph = import_graph()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    circles = sorted(name for name in graph if name in reaches(name))
    assert circles == [], f"import circles through: {circles}"


def test_the_library_never_imports_gradio_and_reads_the_environment_in_one_place():
    for f in (ROOT / "clipdemo").rglob("*.py"):
        text = f.read_text()
        if "ui" not in f.relative_to(ROOT / "clipdemo").parts:
            assert "import gradio" not in text, f
        if f.name not in ("settings.py", "distributed.py", "memory.py"):  # torchrun's and glibc's own variables
            assert "os.environ" not in text and "getenv" not in text, f


def test_no_function_in_the_library_is_longer_than_80_lines():
    """Orchestrators read like a table of contents: each step is a function of its own."""
    long = {}
    for path in sorted(ROOT.glob("clipdemo/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long[f"{path.relative_to(ROOT)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}, long
