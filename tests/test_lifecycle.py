"""The checkpoint lifecycle as scripts and the app meet it: safe ``--out`` folders, concurrent runs, promotion of
finished runs only, ``promote`` of folders, the app following promotions and in-place rewrites without a restart,
and every bad argument refused in one line before any work. Through the CLI (in-process ``main`` or a real
process where signals or concurrency matter) and, for what is served, through a running app."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file

from clipdemo.checkpoints import claim_output, claim_version, load_checkpoint, save_checkpoint, served_checkpoint
from clipdemo.cli import StopOnInterrupt, main
from clipdemo.settings import REPO_ROOT, Settings
from clipdemo.testing import colour_folder, last_json, launched, scratch_checkpoint

SHAPE = REPO_ROOT / "examples" / "shapes" / "red_circle.png"
GALLERY = [{"image": handle_file(str(SHAPE)), "caption": None}]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A checkpoint dir of its own, the working directory in tmp_path, a tiny 3-colour image folder."""
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "ckpts"))
    monkeypatch.chdir(tmp_path)
    colour_folder(tmp_path / "data", per_class={"train": 6, "test": 3})
    return tmp_path


def one_line_error(capsys, *words) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def cli(*args, env_extra=None, timeout=300, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "clipdemo", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


# --- --out: a new folder, or a checkpoint of the same family; anything else refused, nothing touched ----------


@pytest.mark.parametrize("what", ["scratch", "head"])
def test_out_on_a_folder_with_a_foreign_file_is_refused_and_the_file_kept(env, capsys, what):
    (env / "u").mkdir()
    (env / "u" / "notes.txt").write_text("hi")
    train = (
        ["train", "scratch", "--data", "data"]
        if what == "scratch"
        else ["train", "head", "--data", "data", "--backbone", "x/y"]
    )
    assert main([*train, "--epochs", "1", "--out", "u"]) == 2
    one_line_error(capsys, "'u' already holds other files (notes.txt)")
    assert not list(env.glob(".u*"))  # no lock, no temporary folder left
    assert os.listdir(env / "u") == ["notes.txt"] and (env / "u" / "notes.txt").read_text() == "hi"


@pytest.mark.parametrize("what", ["scratch", "head"])
def test_out_on_a_regular_file_is_refused_and_the_file_kept(env, capsys, what):
    (env / "f").write_text("precious")
    train = (
        ["train", "scratch", "--data", "data"]
        if what == "scratch"
        else ["train", "head", "--data", "data", "--backbone", "x/y"]
    )
    assert main([*train, "--out", "f"]) == 2
    one_line_error(capsys, "'f' exists and is not a folder")
    assert (env / "f").read_text() == "precious" and not list(env.glob(".f*"))


def test_out_on_another_familys_checkpoint_is_refused(env, capsys):
    save_checkpoint(env / "head", {"w": torch.zeros(2)}, {"kind": "cars-head"}, {})
    before = {p.name: p.read_bytes() for p in (env / "head").iterdir()}
    assert main(["train", "scratch", "--data", "data", "--out", "head"]) == 2
    one_line_error(capsys, "holds a cars-head checkpoint, not a scratch one")
    assert {p.name: p.read_bytes() for p in (env / "head").iterdir()} == before


def test_out_on_a_checkpoint_of_the_same_family_or_an_empty_folder_is_replaced(env, capsys):
    scratch_checkpoint(env / "mine", ["old class"])
    (env / "empty").mkdir()
    for out in ("mine", "empty"):
        assert main(["train", "scratch", "--data", "data", "--epochs", "1", "--out", out]) == 0
        capsys.readouterr()
        _, _, card = load_checkpoint(env / out, kind="scratch-clip")
        assert card["classes"] == ["blue", "green", "red"]
    assert sorted(p.name for p in env.iterdir()) == ["data", "empty", "mine"]  # no lock or temporary left over


def test_a_second_run_into_the_same_out_is_refused_and_says_by_whom(env, capsys):
    with claim_output(env / "u", "scratch"):  # another run (here: this process) is writing u
        assert main(["train", "scratch", "--data", "data", "--epochs", "1", "--out", "u"]) == 2
        one_line_error(capsys, "Another run is writing 'u'", f"pid {os.getpid()}", "give another --out")
    assert main(["train", "scratch", "--data", "data", "--epochs", "1", "--out", "u"]) == 0  # free again


def test_version_claims_are_unique_within_the_same_second():
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        claims = [claim_version(root, "scratch", "cli") for _ in range(3)]
        assert len({c.folder for c in claims}) == 3
        for c in claims:
            c.release()


def test_two_concurrent_runs_write_two_distinct_loadable_versions(env):
    runs = [cli("train", "scratch", "--data", "data", "--epochs", "1", cwd=env) for _ in range(2)]
    outs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-500:] for _, err in outs]
    folders = {json.loads(out.strip().splitlines()[-1])["checkpoint"] for out, _ in outs}
    assert len(folders) == 2
    for folder in folders:
        load_checkpoint(folder, kind="scratch-clip")
    assert sorted(p.name for p in (env / "ckpts" / "scratch").iterdir()) == sorted(Path(f).name for f in folders)


# --- promotion: only of a finished run; folders accepted -----------------------------------------------------


def test_promote_then_sigint_mid_training_leaves_the_served_version(env):
    """The hardest case: ``--out`` is the served folder itself. While training, the run writes beside it; Ctrl-C
    leaves the served folder byte for byte as it was and keeps the run's checkpoint so far beside it."""
    good = scratch_checkpoint(env / "ckpts" / "scratch" / "good", ["a", "b"])
    assert main(["promote", "scratch", "good"]) == 0
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    run = cli("train", "scratch", "--data", "data", "--epochs", "100000", "--out", str(good), "--promote", cwd=env)
    deadline = time.monotonic() + 240
    while not (good.parent / ".good.run" / "card.json").exists():  # its first checkpoint is written
        assert time.monotonic() < deadline and run.poll() is None
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err[-1000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "is left as it was" in last and "not promoted (still served: good)" in last, last
    result = json.loads(out.strip().splitlines()[-1])
    assert result["stopped"] == "cancelled" and result["checkpoint"] == str(good.parent / "good-interrupted")
    assert served_checkpoint(env / "ckpts", "scratch").name == "good"
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert load_checkpoint(good.parent / "good-interrupted")[2]["classes"] == ["blue", "green", "red"]
    assert sorted(p.name for p in good.parent.iterdir()) == ["good", "good-interrupted", "served.json"]


def test_ctrl_c_before_the_first_step_is_one_line(env, capsys, monkeypatch):
    monkeypatch.setattr(StopOnInterrupt, "__call__", lambda self: True)  # as if Ctrl-C came before step 1
    assert main(["train", "scratch", "--data", "data", "--out", "u", "--promote"]) == 130
    err = capsys.readouterr().err  # the progress bar's empty line, then the one line
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "interrupted: stopped before the first training step; nothing was written"
    assert not (env / "u").exists() and not list(env.glob(".u*"))


def test_a_run_that_finished_by_its_time_budget_is_promoted(env, capsys):
    assert main(["train", "scratch", "--data", "data", "--epochs", "100000", "--max-seconds", "2", "--promote"]) == 0
    result = last_json(capsys)
    assert result["stopped"] == "time budget" and result["served"] == result["checkpoint"]


def test_promote_accepts_the_folder_the_tabs_and_out_talk_about(env, capsys):
    versions = env / "ckpts" / "scratch"
    scratch_checkpoint(versions / "v1", ["a"])
    assert main(["promote", "scratch", str(versions / "v1")]) == 0  # a path inside: served by name
    assert last_json(capsys)["served"] == str(versions / "v1")
    scratch_checkpoint(env / "elsewhere", ["b"])
    assert main(["promote", "scratch", "elsewhere"]) == 0  # outside: copied in as a new version, then served
    served = Path(last_json(capsys)["served"])
    assert served.parent == versions and served.name.endswith("-elsewhere")
    assert load_checkpoint(served)[2]["classes"] == ["b"] and (env / "elsewhere" / "card.json").exists()
    assert main(["train", "scratch", "--data", "data", "--epochs", "1", "--out", "out2", "--promote"]) == 0
    result = last_json(capsys)
    assert Path(result["served"]).parent == versions and load_checkpoint(result["served"])[2]["classes"] == [
        "blue",
        "green",
        "red",
    ]
    save_checkpoint(env / "head", {"w": torch.zeros(2)}, {"kind": "cars-head"}, {})
    assert main(["promote", "scratch", "head"]) == 2
    one_line_error(capsys, "holds a clip-head checkpoint, not a scratch-clip one")
    assert main(["promote", "scratch", "nothing-here"]) == 2
    one_line_error(capsys, "does not exist")


# --- bad arguments and environment values: one line on stderr, exit 2, before any work -----------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-seconds", "0"], "The time budget must be more than 0"),
        (["--max-seconds", "-5"], "The time budget must be more than 0"),
        (["--epochs", "-3"], "Epochs must be a whole number from 1 to"),
        (["--epochs", "0"], "Epochs must be a whole number from 1 to"),
        (["--label", "../x"], "--label must be"),
    ],
)
def test_bad_training_arguments_are_one_line(env, capsys, args, message):
    assert main(["train", "scratch", "--data", "data", "--out", "u", *args]) == 2
    one_line_error(capsys, message)
    assert not (env / "u").exists()


def test_bad_top_k_is_one_line(capsys):
    assert main(["zero-shot", "--labels", "a, b", "--top-k", "-1", str(SHAPE)]) == 2
    one_line_error(capsys, "--top-k must be at least 1")


def test_bad_max_pixels_is_one_line_at_start(env):
    run = cli("train", "scratch", "--data", "data", "--out", "u", env_extra={"CLIPDEMO_MAX_PIXELS": "abc"}, cwd=env)
    _, err = run.communicate(timeout=120)
    assert (
        run.returncode == 2 and err.strip() == "error: CLIPDEMO_MAX_PIXELS must be a positive whole number, not 'abc'."
    )


def test_demo_data_refuses_an_existing_file_or_a_folder_with_files(env, capsys):
    (env / "f").write_text("precious")
    (env / "d").mkdir()
    (env / "d" / "mine.png").write_text("mine")
    assert main(["demo-data", "--out", "f"]) == 2
    one_line_error(capsys, "'f' is a file")
    assert main(["demo-data", "--out", "d"]) == 2
    one_line_error(capsys, "'d' is a folder that is not empty")
    assert (env / "f").read_text() == "precious" and os.listdir(env / "d") == ["mine.png"]


# --- the app follows what is promoted, and in-place rewrites, without a restart -----------------------------


def top_label(client) -> str:
    return client.predict(handle_file(SHAPE), api_name="/pokemon")[1]["label"]


def test_the_running_app_follows_promotions_and_in_place_rewrites(env, tiny_clip, capsys):
    from clipdemo.serving import Served
    from clipdemo.ui import zeroshot_tab
    from clipdemo.ui.app import build_app

    settings = Settings(model=str(tiny_clip), checkpoint_dir=env / "ckpts")
    with launched(build_app(settings)) as url:
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match="No scratch CLIP is served yet"):
            client.predict(GALLERY, "x, y", "photo", "", 2, "scratch", api_name="/zero_shot")

        # promoted from the CLI while the app runs: the next calls use it, and the model list names it. Another
        # version (other classes) sits beside it, so an answer in red/green/blue means the promoted one answered.
        assert main(["train", "scratch", "--data", "data", "--epochs", "1", "--out", "first"]) == 0
        scratch_checkpoint(env / "ckpts" / "scratch" / "other", ["cyan", "magenta"])
        assert main(["promote", "scratch", "first"]) == 0
        version = Path(last_json(capsys)["served"]).name
        _, _, status = client.predict(GALLERY, "x, y", "photo", "", 2, "scratch", api_name="/zero_shot")
        assert "Scratch CLIP" in status
        assert top_label(client) in {"red", "green", "blue"}
        _, menu, _, _, _ = zeroshot_tab.model_status(Served(settings))  # what a page load gets
        assert (f"scratch CLIP (served version {version})", "scratch") in menu["choices"]
        assert main(["promote", "scratch", "other"]) == 0  # promoting another version switches the answers
        assert top_label(client) in {"cyan", "magenta"}
        assert main(["promote", "scratch", version]) == 0
        assert top_label(client) in {"red", "green", "blue"}

        # the served folder rewritten in place (another class list): the next call answers with it
        served = env / "ckpts" / "scratch" / version
        scratch_checkpoint(served, ["cyan", "magenta"], seed=1)
        assert top_label(client) in {"cyan", "magenta"}
        assert main(["train", "scratch", "--data", "data", "--epochs", "1", "--out", str(served)]) == 0
        assert top_label(client) in {"red", "green", "blue"}


def model_options(browser, url) -> list[str]:
    page = browser.new_page()
    try:
        page.goto(url)
        page.wait_for_selector("#zs-images input[type=file]", state="attached", timeout=60_000)
        page.click("#zs-model input")
        options = page.locator("#zs-model [data-testid=dropdown-option]")
        options.first.wait_for(timeout=30_000)
        return [options.nth(i).get_attribute("aria-label") for i in range(options.count())]
    finally:
        page.close()


def test_a_model_promoted_after_start_up_is_in_the_zero_shot_list_on_the_next_page_load(
    env, tiny_clip, browser, capsys
):
    from clipdemo.ui.app import build_app

    with launched(build_app(Settings(model=str(tiny_clip), checkpoint_dir=env / "ckpts"))) as url:
        assert any("none served yet" in o for o in model_options(browser, url))
        scratch_checkpoint(env / "ckpts" / "scratch" / "v1", ["a", "b"])
        assert main(["promote", "scratch", "v1"]) == 0
        assert "scratch CLIP (served version v1)" in model_options(browser, url)
