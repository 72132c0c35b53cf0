"""SIGKILL at random moments of a checkpoint write: the folder always loads afterwards, old or new."""

import random
import signal
import subprocess
import sys
import textwrap
import time

import torch

from clipdemo.checkpoints import load_checkpoint, promote, save_checkpoint, served_checkpoint

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
