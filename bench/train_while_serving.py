"""Visitors served while the Space trains: ``/zero_shot`` latency idle and during an Admin job runner's training.

    python bench/train_while_serving.py [--calls 20] [--modes child,child-all,in-thread]

Launches the app (a tiny random CLIP, ``build_app`` with the production ``launch_kwargs`` and its own
``JobRunner``) on 127.0.0.1 in a child process, then times ``/zero_shot`` through gradio_client, one caller, a new
image on every call (the image tower runs each time), in turn:

- ``idle``: no training;
- ``child``: a scratch training on the built-in shapes started on the app's job runner (what the Admin tab's Start
  does), in its child process at nice +10 with ``train_threads()`` torch threads (the default: one core left);
- ``child-all``: the same with a torch thread per core;
- ``in-thread``: the same training on a thread of the server process at normal priority with torch's default
  threads, as the runner did before issue 25 (a stand-in run by this script: the runner itself has no such mode);
- ``idle`` again, to show the machine did not change under the run.

Each training window starts once the job reports training steps, and lasts the calls; beside each median the
training's throughput over that window (steps/s, from the job's progress events) is printed. The server is told
what to do through a file (the bench's own control, not an app feature). Prints ``uptime`` before and after:
figures taken under load are not evidence.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from load_test import free_port, wait_ready, write_images  # noqa: E402

from clipdemo.testing import make_clip_folder  # noqa: E402

SERVER = """
import json, logging, multiprocessing, multiprocessing.connection, os, sys, threading, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from clipdemo import jobs
from clipdemo.jobs import JobRunner, train_threads
from clipdemo.memory import limit_malloc_arenas
from clipdemo.settings import Settings
from clipdemo.ui.app import build_app, launch_kwargs

work = Path({work!r})
limit_malloc_arenas()
settings = Settings(model={model!r}, checkpoint_dir=work / "checkpoints")
runner = JobRunner.from_settings(settings)
SPAWN = jobs._SPAWN


class InThread:
    # The old way, for comparison: the job's function on a thread of this process, normal priority, torch's threads.
    def Pipe(self, duplex=False):
        return multiprocessing.Pipe(duplex)

    def Event(self):
        return threading.Event()

    def Process(self, target, args, name, daemon):
        args = (multiprocessing.connection.Connection(os.dup(args[0].fileno())), *args[1:])  # runner closes its copy
        return _Thread(target, args)


class _Thread(threading.Thread):
    def __init__(self, target, args):
        super().__init__(target=target, args=args, daemon=True)
        self.exitcode = None

    def kill(self):
        pass

    terminate = kill


def control():
    seen = None
    while True:
        time.sleep(0.2)
        order = (work / "order").read_text() if (work / "order").exists() else None
        if order != seen and order:
            seen = order
            mode = order.split()[0]
            if mode == "cancel":
                runner.cancel()
                runner.wait(120)
            else:
                child = mode != "in-thread"
                jobs._SPAWN, jobs.NICE = (SPAWN, 10) if child else (InThread(), 0)
                if not child:  # the job's log records would go round: the server's own log is left quiet here
                    jobs._PipeHandler = lambda send: logging.NullHandler()
                import torch
                cores = len(os.sched_getaffinity(0))
                runner.threads = cores if mode == "child-all" else train_threads() if child else torch.get_num_threads()
                runner.start("scratch", "shapes", preset="default", epochs=100, max_seconds=600)
        job = runner._job  # peeked at, not snapshot(): copying the whole history 5 times a second costs the server
        last = dict(job.last) if job else {{}}
        state = dict(state=job.state if job else "idle", step=last.get("step"), phase=last.get("phase"),
                     t=time.time(), samples_per_s=last.get("samples_per_s"), threads=runner.threads)
        (work / "state.tmp").write_text(json.dumps(state))
        os.replace(work / "state.tmp", work / "state.json")


threading.Thread(target=control, daemon=True).start()
build_app(settings, runner).launch(server_name="127.0.0.1", server_port={port}, quiet=True, **launch_kwargs(settings))
"""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def state(work: Path) -> dict:
    try:
        return json.loads((work / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def order(work: Path, what: str, seq: int) -> None:
    (work / "order.tmp").write_text(f"{what} {seq}")
    (work / "order.tmp").replace(work / "order")


def zero_shot_times(client, images: list[Path], labels: str) -> list[float]:
    from gradio_client import handle_file

    times = []
    for image in images:
        t0 = time.perf_counter()
        client.predict(
            [{"image": handle_file(str(image)), "caption": None}],
            labels,
            "photo",
            "",
            20,
            "default",
            api_name="/zero_shot",
        )
        times.append(time.perf_counter() - t0)
    return times


def during(work: Path, mode: str, seq: int, client, images, labels) -> tuple[list[float], float, dict]:
    """Start a training in ``mode``, wait for its steps, time the calls; return (times, steps/s, last state)."""
    order(work, mode, seq)
    deadline = time.time() + 300
    while not (state(work).get("phase") == "train" and (state(work).get("step") or 0) >= 5):
        if time.time() > deadline or state(work).get("state") in ("failed", "finished"):
            raise SystemExit(f"{mode}: the training did not reach its steps: {state(work)}")
        time.sleep(0.2)
    first = state(work)
    times = zero_shot_times(client, images, labels)
    last = state(work)
    rate = (last["step"] - first["step"]) / max(last["t"] - first["t"], 1e-9)
    order(work, "cancel", seq)
    while state(work).get("state") == "running":
        time.sleep(0.2)
    return times, rate, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="zero-shot calls per window")
    parser.add_argument("--modes", default="child,child-all,in-thread")
    args = parser.parse_args()
    from gradio_client import Client

    print("before:", uptime(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-train-serve-") as tmp:
        work = Path(tmp)
        model = make_clip_folder(work / "model", "tiny")
        port = free_port()
        code = SERVER.format(repo=str(REPO), work=str(work), model=str(model), port=port)
        env = {**os.environ, "CLIPDEMO_CHECKPOINT_DIR": str(work / "checkpoints")}  # its ONNX export: here too
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=work, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc)
            client = Client(url, verbose=False)
            labels = "a cat, a dog, a red car, a temple, a flower, a woman, a bicycle, a bird, a ship, a truck"
            zero_shot_times(client, write_images(work, 3, seed=999), labels)  # warm: model, caches, session
            rows, seq = [], 0
            for mode in ["idle", *args.modes.split(","), "idle"]:
                seq += 1
                images = write_images(work, args.calls, seed=seq)
                if mode == "idle":
                    times, rate, last = zero_shot_times(client, images, labels), None, {}
                else:
                    times, rate, last = during(work, mode, seq, client, images, labels)
                rows.append((mode, statistics.median(times), rate, last.get("samples_per_s"), last.get("threads")))
                print(f"  {mode}: median {1000 * rows[-1][1]:.0f} ms", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    idle = statistics.median(r[1] for r in rows if r[0] == "idle")
    print(f"\n/zero_shot, tiny CLIP, 1 image x 10 labels, a new image per call, median of {args.calls}:")
    print(f"{'while':<10} {'median':>9} {'vs idle':>8} {'training steps/s':>17} {'images/s':>9} {'threads':>8}")
    for mode, median, rate, samples, threads in rows:
        steps = f"{rate:.1f}" if rate is not None else ""
        imgs = f"{samples:.0f}" if samples else ""
        print(f"{mode:<10} {1000 * median:>7.0f}ms {median / idle:>7.2f}x {steps:>17} {imgs:>9} {threads or '':>8}")
    print("after:", uptime())


if __name__ == "__main__":
    main()
