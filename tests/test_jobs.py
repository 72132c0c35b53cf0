"""The job runner without any UI: dataset rules, one job at a time, cancel, failures, and crash-safe checkpoints.

Most tests use ``clipdemo.testing.fake_trainer``, which honours the training functions' contract (progress events,
``should_stop`` polled between steps, an atomic ``save_checkpoint`` into ``out_dir``); the real ``train_scratch``
runs in tests/test_admin.py. Every job runs in the runner's child process, as in the app: a test takes about the
child's start (importing torch), a second or two.
"""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from clipdemo import checkpoints
from clipdemo.checkpoints import list_versions, load_checkpoint, promote, save_checkpoint, served_checkpoint
from clipdemo.data import DataError
from clipdemo.data.sources import SourcePolicy, resolve_source
from clipdemo.heads import DEFAULT_HEAD
from clipdemo.jobs import NICE, BusyError, JobError, JobRunner, short_error, train_threads, version_label
from clipdemo.pipeline import OptionError, train_options
from clipdemo.testing import colour_folder, fake_trainer, job_gate, recorded_calls, tree_digest, wait_for

REPO = Path(__file__).resolve().parent.parent
TRAIN_TEST = {"train": 4, "test": 2}  # images per class in each split of the tiny folders


@pytest.fixture
def env(tmp_path):
    """A data root with a tiny folder, and a checkpoint dir whose 'scratch' family serves version v0."""
    data = tmp_path / "data"
    colour_folder(data / "tiny", per_class=TRAIN_TEST)
    ckpt = tmp_path / "checkpoints"
    save_checkpoint(ckpt / "scratch" / "v0", {"w": torch.ones(3)}, {"kind": "fake"}, {"dataset": "before"})
    promote(ckpt, "scratch", "v0")
    return data, ckpt


def runner_for(env, **trainers) -> JobRunner:
    data, ckpt = env
    return JobRunner(ckpt, data, trainers=trainers)


# --- what may be trained on ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["../tiny", "/etc", "tiny/../../x", "~/x", "/nonexistent/folder", "", "  ", "a/b/c"])
def test_dataset_outside_the_data_root_is_refused_before_starting(env, spec):
    data, ckpt = env
    before = tree_digest(ckpt)
    runner = runner_for(env, scratch=fake_trainer())
    with pytest.raises((JobError, DataError)):
        runner.start("scratch", spec)
    assert runner.snapshot() == {"state": "idle"} and tree_digest(ckpt) == before


def test_a_link_out_of_the_data_root_is_refused(env, tmp_path):
    data, _ = env
    outside = colour_folder(tmp_path / "outside", per_class=TRAIN_TEST)
    (data / "link").symlink_to(outside)
    with pytest.raises(DataError, match="outside the data folder"):
        resolve_source("link", None, SourcePolicy.confined(data))


def test_without_a_data_root_only_builtin_and_hub_ids(tmp_path, monkeypatch):
    colour_folder(tmp_path / "tiny", per_class=TRAIN_TEST)
    monkeypatch.chdir(tmp_path)  # 'tiny' now also exists relative to the working directory
    for spec in ("tiny", "./tiny", str(tmp_path / "tiny")):
        with pytest.raises((JobError, DataError)):
            resolve_source(spec, None, SourcePolicy.confined(None))
    assert callable(resolve_source("shapes", None, SourcePolicy.confined(None)))
    # loaded later, on the job's thread
    assert callable(resolve_source("fcakyon/pokemon-classification", "mini", SourcePolicy.confined(None)))


def test_a_hub_shaped_name_that_is_a_local_folder_outside_the_root_is_refused(env, tmp_path, monkeypatch):
    data, _ = env
    colour_folder(tmp_path / "elsewhere", per_class=TRAIN_TEST)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="outside the data folder"):
        resolve_source("elsewhere", None, SourcePolicy.confined(data))


def test_options_are_checked(tmp_path):
    assert train_options("scratch", epochs=2.0, seed="3").epochs == 2
    for bad in (dict(epochs=0), dict(epochs=1.5), dict(epochs="many"), dict(preset="huge"), dict(max_seconds=-1)):
        with pytest.raises(OptionError):
            train_options("scratch", **bad)
    for big in (float("inf"), float("nan"), 1e300):  # refused in a sentence, not an OverflowError
        with pytest.raises(OptionError, match="Epochs must be a whole number"):
            train_options("scratch", epochs=big)
    assert version_label("/data/My Pets!") == "my-pets" and version_label("..") == "run"


@pytest.mark.parametrize(
    "family, options, sentence",
    [
        ("rm -rf", {}, "Unknown job kind 'rm -rf'; choose one of scratch, cars-head."),
        ("cars-head", dict(backbone="/etc/passwd"), "Choose the backbone among this app's models."),
        ("cars-head", dict(backbone=None), "Choose the backbone among this app's models."),
        ("scratch", dict(epochs=0), "Epochs must be a whole number from 1 to 100000."),
        ("scratch", dict(max_seconds=-5), "The time budget must be more than 0 and at most 604800 seconds."),
        ("scratch", dict(preset="huge"), "Unknown preset 'huge'; choose one of seed, default."),
        ("cars-head", dict(backbone="b", head="svm"), "Unknown head 'svm'; choose one of "),
        ("cars-head", dict(backbone="b", split="random"), "The split must be one of tutorial, official."),
    ],
)
def test_a_job_with_a_bad_option_is_refused_in_the_checkers_sentence(tmp_path, family, options, sentence):
    """A job's options are checked once, by ``pipeline.train_options`` (the CLI's checker), before anything is
    written; the Admin's own rule (the app's backbones only) is part of that one check."""
    runner = JobRunner(tmp_path / "ckpt", tmp_path, allowed_backbones=["b"], trainers={family: fake_trainer()})
    with pytest.raises(OptionError) as refused:
        runner.start(family, "shapes", **options)
    assert str(refused.value).startswith(sentence)
    assert runner.snapshot() == {"state": "idle"} and not (tmp_path / "ckpt").exists()


def test_a_jobs_options_reach_its_trainer_checked_for_its_family(env, tmp_path):
    calls = tmp_path / "calls"
    runner = runner_for(env, **{"cars-head": fake_trainer(calls=calls)})
    runner.allowed_backbones = ["b"]
    runner.start("cars-head", "tiny", backbone=" b ", head="", epochs=2.0, seed=None)
    assert runner.wait(60)["state"] == "finished"
    options = recorded_calls(calls)[0][2]
    assert options.checked_for == "cars-head" and (options.backbone, options.epochs, options.seed) == ("b", 2, 0)
    assert options.head == DEFAULT_HEAD  # an empty Admin field means the default head


def test_a_failure_is_kept_as_one_short_sentence():
    """``short_error``: a UserError's first line (``errors.first_line``), cut at 300 characters with an ellipsis;
    anything else names only its type."""
    assert short_error(DataError("  No images here.\nTraceback: secrets  ")) == "No images here."
    assert short_error(OptionError("")) == "OptionError"
    long = short_error(DataError("x" * 500))
    assert len(long) == 300 and long.endswith("…")
    assert short_error(KeyError("/secret/path")) == (
        "Training failed with an internal error (KeyError); the details are in the server log."
    )


# --- a job's life ----------------------------------------------------------------------------------------------


def test_job_runs_in_the_background_and_writes_a_new_version(env, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data, ckpt = env
    calls = tmp_path / "calls"
    runner = runner_for(env, scratch=fake_trainer(calls=calls))
    snap = runner.start("scratch", "tiny", epochs=1, seed=1)
    assert snap["state"] == "running" and snap["version"].endswith("-tiny")
    snap = runner.wait(60)
    assert snap["state"] == "finished", snap
    assert [e["step"] for e in snap["history"] if e.get("phase") == "train"] == [1, 2, 3, 4, 5]
    assert snap["result"]["acc1"] == 0.5 and snap["result"]["class_names"] == ["blue", "green", "red"]
    assert any("finished" in line for line in snap["log"])
    (source, out_dir, options, where), *more = recorded_calls(calls)
    assert options.seed == 1 and out_dir.parent == ckpt / "scratch" and not more
    load_checkpoint(out_dir)
    assert served_checkpoint(ckpt, "scratch").name == "v0"  # nothing is promoted by a run
    # trained in a child process, below the server's priority, on the runner's threads
    assert where["pid"] != os.getpid() and where["nice"] == os.nice(0) + NICE
    assert where["threads"] == runner.threads == train_threads()
    assert "fake trainer saved after 5 steps" in caplog.text  # the child's log records, in the server's log


def test_a_trainer_that_does_not_stop_is_ended_after_the_grace_period_keeping_its_checkpoint(env, caplog):
    data, ckpt = env
    runner = JobRunner(ckpt, data, trainers={"scratch": fake_trainer(steps=10_000, deaf=True, save_first=True)})
    runner.cancel_grace_s = 0.5
    runner.start("scratch", "tiny")
    assert wait_for(lambda: len(runner.snapshot()["history"]) >= 3, timeout=60)
    runner.cancel()
    snap = runner.wait(60)
    assert snap["state"] == "cancelled" and snap["kept"] is True and snap["elapsed_s"] < 60
    load_checkpoint(ckpt / "scratch" / snap["version"])  # saved before the kill: listed, not served
    assert served_checkpoint(ckpt, "scratch").name == "v0" and "did not stop" in caplog.text


def test_a_training_process_that_dies_without_a_word_is_a_failure_in_one_sentence(env, caplog):
    data, ckpt = env
    before = tree_digest(ckpt)
    runner = runner_for(env, scratch=fake_trainer(exit_code=9))  # as if killed for memory
    runner.start("scratch", "tiny")
    snap = runner.wait(60)
    assert snap["state"] == "failed"
    assert snap["error"] == "The training process ended unexpectedly (exit code 9); see the server log."
    assert tree_digest(ckpt) == before and "exit code 9" in caplog.text


def test_second_job_is_refused_while_one_runs(env):
    data, ckpt = env
    gate = job_gate()
    runner = runner_for(env, scratch=fake_trainer(gate=gate), **{"cars-head": fake_trainer()})
    runner.start("scratch", "tiny")
    with pytest.raises(BusyError, match=r"A training job is already running \(scratch on tiny"):
        runner.start("scratch", "tiny")
    with pytest.raises(BusyError):
        runner.start("cars-head", "tiny", backbone="b")
    visible = [
        p for p in (ckpt / "scratch").iterdir() if not p.name.startswith(".")
    ]  # the running job's lock is hidden
    assert len(visible) == 2  # v0 + served.json: the refused start wrote nothing
    gate.set()
    assert runner.wait(60)["state"] == "finished"
    runner.start("scratch", "tiny")  # free again
    assert runner.wait(60)["state"] == "finished"


def test_cancel_stops_within_seconds_and_touches_nothing(env):
    data, ckpt = env
    before = tree_digest(ckpt)
    runner = runner_for(env, scratch=fake_trainer(steps=10_000, delay=0.01))
    runner.start("scratch", "tiny")
    assert wait_for(lambda: len(runner.snapshot()["history"]) >= 3, timeout=60)
    t0 = time.monotonic()
    assert "Cancelling" in runner.cancel()
    # settled on the child's last word; at nice +10 on a busy 2-core box the child gets little CPU, hence 5 s
    assert wait_for(lambda: runner.snapshot()["state"] != "running", timeout=60) and time.monotonic() - t0 < 5
    snap = runner.wait(60)
    assert snap["state"] == "cancelled"
    # like train_scratch, the fake finishes its checkpoint when stopped: kept as a version, never served
    assert snap["kept"] is True and (ckpt / "scratch" / snap["version"]).is_dir()
    after = tree_digest(ckpt)
    assert {k: after[k] for k in before} == before and served_checkpoint(ckpt, "scratch").name == "v0"
    assert any("not served" in line for line in snap["log"])
    assert runner.cancel() == "No training job is running."


def test_cancel_before_anything_was_written_keeps_nothing(env):
    data, ckpt = env
    before = tree_digest(ckpt)
    gate = job_gate()
    # like train_scratch stopped before its first step: it raises, having written nothing
    runner = runner_for(env, scratch=fake_trainer(gate=gate, fail=RuntimeError("stopped before its first step")))
    runner.start("scratch", "tiny")
    runner.cancel()
    gate.set()
    snap = runner.wait(60)
    assert snap["state"] == "cancelled" and snap["kept"] is False and snap["error"] is None
    assert tree_digest(ckpt) == before


def test_bad_data_fails_with_a_short_message_while_the_runner_keeps_answering(env):
    data, ckpt = env
    (data / "empty" / "train").mkdir(parents=True)
    before = tree_digest(ckpt)
    runner = runner_for(env)  # the real trainers: the data fails before any training
    runner.start("scratch", "empty")
    assert wait_for(lambda: runner.snapshot()["state"] != "running", timeout=60)
    snap = runner.snapshot()
    assert snap["state"] == "failed" and snap["error"] and len(snap["error"]) <= 300
    assert "Traceback" not in snap["error"] and "\n" not in snap["error"]
    assert tree_digest(ckpt) == before


def test_an_unexpected_crash_is_reported_generically_and_leaves_no_half_version(env, caplog):
    data, ckpt = env
    runner = runner_for(env, scratch=fake_trainer(fail=RuntimeError("secret internals /opt/x at 0xdead")))
    runner.start("scratch", "tiny")
    snap = runner.wait(60)
    assert snap["state"] == "failed"
    assert snap["error"] == "Training failed with an internal error (RuntimeError); the details are in the server log."
    assert "Traceback" in caplog.text and "secret internals" in caplog.text  # the child's, in the server's log
    assert not (ckpt / "scratch" / snap["version"]).exists()


def test_a_checkpoint_write_crashing_in_a_job_keeps_the_served_version(env):
    data, ckpt = env
    before = tree_digest(ckpt)
    runner = runner_for(env, scratch=fake_trainer(disk_full=True))  # in the job's process
    runner.start("scratch", "tiny")
    snap = runner.wait(60)
    assert snap["state"] == "failed" and "No space left" in snap["error"]
    assert tree_digest(ckpt) == before  # no new version, no leftover partial folder, v0 untouched
    load_checkpoint(served_checkpoint(ckpt, "scratch"))


KILLER = textwrap.dedent("""
    import os, signal, sys, torch
    from clipdemo import checkpoints
    real = checkpoints.save_file
    def half_then_die(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    checkpoints.save_file = half_then_die
    checkpoints.save_checkpoint(sys.argv[1], {"w": torch.zeros(100_000)}, {"kind": "fake"}, {"dataset": "after"})
""")


def test_a_process_killed_while_writing_over_the_served_version_leaves_it_loadable(env):
    """SIGKILL mid-save, writing into the served folder's own name (the worst case): the old one stays whole."""
    data, ckpt = env
    served = served_checkpoint(ckpt, "scratch")
    result = subprocess.run(
        [sys.executable, "-c", KILLER, str(served)],
        cwd=REPO,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    state, _, card = load_checkpoint(served_checkpoint(ckpt, "scratch"))
    assert card["dataset"] == "before" and torch.equal(state["w"], torch.ones(3))
    assert [v["version"] for v in list_versions(ckpt, "scratch")] == ["v0"]  # the partial is hidden
    with pytest.raises(checkpoints.CheckpointError):
        promote(ckpt, "scratch", next(p.name for p in (ckpt / "scratch").iterdir() if p.name.endswith(".partial")))


def test_a_real_cars_head_job_on_a_tiny_clip(env, tiny_clip):
    """clipdemo.cars.train_head through the runner: encode, fit, held-out metrics beside zero-shot."""
    data, ckpt = env
    runner = JobRunner(ckpt, data, allowed_backbones=[str(tiny_clip)], cache_dir=ckpt / ".cache")
    with pytest.raises(OptionError, match="backbone"):
        runner.start("cars-head", "tiny", backbone="openai/clip-vit-large-patch14")
    runner.start("cars-head", "tiny", backbone=str(tiny_clip), head="linear", epochs=3, split="official")
    snap = runner.wait(300)
    assert snap["state"] == "finished", snap["error"]
    result = snap["result"]
    assert result["n"] == 6 and "acc1" in result["zeroshot"] and result["class_names"] == ["blue", "green", "red"]
    assert len(result["confusion"]) == 3  # from the card: the UI draws it
    assert any(line.split(" ", 1)[1].startswith("encoding") for line in snap["log"])
    assert load_checkpoint(ckpt / "cars-head" / snap["version"], kind="cars-head")
    assert served_checkpoint(ckpt, "cars-head") is None  # not promoted by the run
