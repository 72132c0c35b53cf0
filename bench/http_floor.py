"""Gradio's floor: ``/zero_shot`` through gradio_client against a minimal Gradio app taking the same inputs.

    python bench/http_floor.py [--calls 30]

Launches two servers on 127.0.0.1, each in its own process: the app (a tiny random CLIP, ``build_app`` with the
production ``launch_kwargs``) and a minimal Gradio app whose ``/zero_shot`` takes the same six inputs (a gallery, the
labels, template, custom template, top-k, model) and returns a constant ``gr.Label`` without looking at the image.
One caller times both in turn, call by call, a new image on every call, and prints the medians and their ratio
(issue 25's target: at most 1.25x). With a tiny model the model costs about nothing, so the ratio is what the app
adds over Gradio's own cost of a request (upload, queue, the outputs it sends back). Prints ``uptime`` before and
after: figures taken under load are not evidence.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from load_test import free_port, wait_ready, write_images  # noqa: E402
from train_while_serving import uptime, zero_shot_times  # noqa: E402

from clipdemo.testing import make_clip_folder  # noqa: E402

APP = """
import sys
sys.path.insert(0, {repo!r})
from clipdemo.memory import limit_malloc_arenas
from clipdemo.settings import Settings
from clipdemo.ui.app import build_app, launch_kwargs

limit_malloc_arenas()
settings = Settings(model={model!r}, checkpoint_dir={work!r} + "/checkpoints")
build_app(settings).launch(server_name="127.0.0.1", server_port={port}, quiet=True, **launch_kwargs(settings))
"""

MINIMAL = """
import gradio as gr

def zero_shot(images, labels, template, custom, top_k, model):
    return {{"cat": 0.7, "dog": 0.2, "car": 0.1}}

with gr.Blocks() as demo:
    inputs = [gr.Gallery(), gr.Textbox(), gr.Dropdown(["photo", "label"], value="photo"), gr.Textbox(),
              gr.Slider(1, 20, value=5), gr.Dropdown(["default"], value="default")]
    out = gr.Label()
    gr.Button().click(zero_shot, inputs, out, api_name="zero_shot")
demo.launch(server_name="127.0.0.1", server_port={port}, quiet=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    from gradio_client import Client

    print("before:", uptime(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-http-floor-") as tmp:
        work = Path(tmp)
        model = make_clip_folder(work / "model", "tiny")
        ports = free_port(), free_port()
        codes = (
            APP.format(repo=str(REPO), work=str(work), model=str(model), port=ports[0]),
            MINIMAL.format(port=ports[1]),
        )
        env = {**os.environ, "CLIPDEMO_CHECKPOINT_DIR": str(work / "checkpoints")}  # its ONNX export: here too
        procs = [subprocess.Popen([sys.executable, "-c", code], cwd=work, env=env) for code in codes]
        try:
            clients = []
            for port, proc in zip(ports, procs):
                wait_ready(f"http://127.0.0.1:{port}", proc)
                clients.append(Client(f"http://127.0.0.1:{port}", verbose=False))
            labels = "a cat, a dog, a red car, a temple, a flower, a woman, a bicycle, a bird, a ship, a truck"
            for client in clients:  # warm: model, caches, sessions
                zero_shot_times(client, write_images(work, 3, seed=999), labels)
            times: tuple[list[float], list[float]] = ([], [])
            for image in write_images(work, args.calls, seed=1):
                for client, out in zip(clients, times):  # in turn, call by call
                    out += zero_shot_times(client, [image], labels)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(30)
    ours, floor = (statistics.median(t) for t in times)
    print(f"/zero_shot, tiny CLIP, 1 image x 10 labels, a new image per call, median of {args.calls}, in turn:")
    print(f"  the app             {1000 * ours:7.1f} ms")
    print(f"  minimal Gradio app  {1000 * floor:7.1f} ms   (returns a constant gr.Label)")
    print(f"  the app / the floor {ours / floor:7.2f}x   (target <= 1.25x)")
    print("after:", uptime())


if __name__ == "__main__":
    main()
