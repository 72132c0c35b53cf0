"""SIGKILL at random moments of a checkpoint write, and during a real training run: what is served always
loads afterwards, and the app starts cleanly on that checkpoint folder and answers."""

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import torch
from gradio_client import Client, handle_file

from clipdemo.checkpoints import list_versions, load_checkpoint, promote, save_checkpoint, served_checkpoint
from clipdemo.settings import REPO_ROOT
from clipdemo.testing import colour_folder, free_port, scratch_checkpoint

SHIPPED = REPO_ROOT / "checkpoints" / "scratch" / "shapes-v1"

WRITER = textwrap.dedent(
    """
    import sys, torch
    from clipdemo.checkpoints import save_checkpoint
    folder, i = sys.argv[1], 0
    print("ready", flush=True)
    while True:  # overwrite the same folder again and again, with a recognisable value
        i += 1
        save_checkpoint(folder, {"w": torch.full((512, 1024), float(i))}, {"kind": "test"}, {"i": i})
    """
)


def test_sigkill_during_overwrites_leaves_a_loadable_checkpoint(tmp_path):
    folder = tmp_path / "family" / "v1"
    save_checkpoint(folder, {"w": torch.zeros(512, 1024)}, {"kind": "test"}, {"i": 0})
    promote(tmp_path, "family", "v1")
    rng = random.Random(0)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state, config, card = load_checkpoint(served_checkpoint(tmp_path, "family"), kind="test")
        assert torch.equal(state["w"], torch.full((512, 1024), float(card["i"])))  # weights match their card


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_sigkill_during_training_then_the_app_starts_on_the_promoted_version(tmp_path):
    ckpt = tmp_path / "checkpoints"
    shutil.copytree(SHIPPED, ckpt / "scratch" / SHIPPED.name)
    promote(ckpt, "scratch", SHIPPED.name)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CLIPDEMO_CHECKPOINT_DIR": str(ckpt)}
    train = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clipdemo",
            "train",
            "scratch",
            "--data",
            "shapes",
            "--epochs",
            "1000",
            "--label",
            "killed",
            "--promote",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:  # kill it mid-run, after it has started writing its own version (saved at each better validation)
        wait_until(lambda: any("killed" in p.name for p in (ckpt / "scratch").iterdir()), 300, "a first checkpoint")
        time.sleep(random.Random(1).uniform(0.0, 2.0))
    finally:
        train.send_signal(signal.SIGKILL)
        train.wait()

    assert served_checkpoint(ckpt, "scratch").name == SHIPPED.name  # --promote never happened: still served
    load_checkpoint(served_checkpoint(ckpt, "scratch"))
    for row in list_versions(ckpt, "scratch"):  # every listed version (the killed run's too) loads
        load_checkpoint(ckpt / "scratch" / row["version"])

    port = free_port()
    app = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={
            **env,
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(port),
            "CLIPDEMO_MODEL": str(ckpt / "scratch" / SHIPPED.name),
        },
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: answers(url) or app.poll() is not None, 180, "the app to start")
        assert app.poll() is None, app.stderr.read().decode()[-2000:]
        top = Client(url, verbose=False).predict(
            handle_file(REPO_ROOT / "examples" / "shapes" / "red_circle.png"), api_name="/pokemon"
        )[1]
        assert top["label"] == "red circle"
    finally:
        app.terminate()
        app.wait(30)


def test_sigkill_during_in_place_rewrites_imports_and_promotes_keeps_the_served_version_loadable(tmp_path):
    """Runs that write checkpoints, killed with SIGKILL at random moments: a run rewriting the served folder itself
    (``--out`` on it), a ``promote`` copying a folder in, a ``--promote`` run. Whatever is served still loads, every
    listed version loads, and the killed run's claim is gone with it (the next run into the same folder is not
    refused)."""
    from clipdemo.checkpoints import claim_output

    ckpt = tmp_path / "checkpoints"
    served = scratch_checkpoint(ckpt / "scratch" / "served", ["a", "b"])
    promote(ckpt, "scratch", "served")
    scratch_checkpoint(tmp_path / "outside", ["c", "d"])
    data = colour_folder(tmp_path / "data", per_class={"train": 6, "test": 3})
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CLIPDEMO_CHECKPOINT_DIR": str(ckpt), "OMP_NUM_THREADS": "1"}
    train = ["train", "scratch", "--data", str(data), "--epochs", "100000"]
    commands = [
        [*train, "--out", str(served)],
        ["promote", "scratch", str(tmp_path / "outside")],
        [*train, "--promote"],
    ]
    rng = random.Random(2)
    for i in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "clipdemo", *commands[i % 3]],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(3.0, 9.0))  # from start-up (imports, data) through training and saving
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        load_checkpoint(served_checkpoint(ckpt, "scratch"), kind="scratch-clip")
        for row in list_versions(ckpt, "scratch"):
            load_checkpoint(ckpt / "scratch" / row["version"], kind="scratch-clip")
        claim_output(served, "scratch").release()  # not blocked by the dead run
