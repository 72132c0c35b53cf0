"""The Python API's per-image speed against the CLI's, on the same ViT-B/32-shaped model, in one run.

    python bench/python_api.py [--runs 15] [--files 8] [--process-runs 2] [--shape vit-b-32]

Builds a randomly initialised CLIP of that shape (weights don't change speed) with a fresh checkpoint dir (so a
fresh ONNX export cache: exported once, untimed), then measures:
1. warm, one new image per call × 10 labels (labels cached after the first call, the image tower runs), the two
   contenders interleaved call by call: ``ZeroShot(model)([path], labels)`` against the CLI's own function,
   ``clipdemo.cli.main(["zero-shot", …])`` in this process (parsing, decoding, model lookup, JSON); medians;
2. a batch of ``--files`` new images in one call: ``ZeroShot`` against ``python -m clipdemo zero-shot`` as a whole
   process (what a shell user pays, start-up included), per image.
Prints medians and ratios (CLI time / Python API time: above 1 means the Python API is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clipdemo import ZeroShot
from clipdemo.cli import main as cli_main
from clipdemo.testing import make_clip_folder

LABELS = ["cat", "dog", "a red sports car", "airplane", "bird", "horse", "ship", "truck", "frog", "deer"]


def new_images(folder: Path, n: int, seed: int) -> list[str]:
    """``n`` distinct random photos (no image-cache hit between calls)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img-{seed}-{i}.png"
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--process-runs", type=int, default=2)
    parser.add_argument("--shape", default="vit-b-32", choices=["tiny", "vit-b-32"])
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="clipdemo-bench-api-"))
    os.environ["CLIPDEMO_CHECKPOINT_DIR"] = str(work / "checkpoints")  # a fresh ONNX export cache, for both
    model = str(make_clip_folder(work / "model", args.shape))
    labels = ", ".join(LABELS)
    zs = ZeroShot(model)
    zs(new_images(work, 1, seed=0), LABELS)  # exports, loads, caches the labels: untimed
    print(f"model: {zs.encoder.describe()}", file=sys.stderr)

    def cli(paths):
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli_main(["zero-shot", "--model", model, "--labels", labels, *paths]) == 0

    cli(new_images(work, 1, seed=1))
    api_times, cli_times = [], []
    for run in range(args.runs):  # interleaved: drift on a shared machine hits both alike
        a, b = new_images(work, 2, seed=100 + run)
        api_times.append(timed(lambda: zs([a], LABELS)))
        cli_times.append(timed(lambda: cli([b])))
    api_ms, cli_ms = 1000 * statistics.median(api_times), 1000 * statistics.median(cli_times)

    batch_api, batch_process = [], []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for run in range(args.process_runs):
        a, b = new_images(work, args.files, seed=1000 + run), new_images(work, args.files, seed=2000 + run)
        batch_api.append(timed(lambda: zs(a, LABELS)) / args.files)
        command = [sys.executable, "-m", "clipdemo", "zero-shot", "--model", model, "--labels", labels, *b]
        batch_process.append(timed(lambda: subprocess.run(command, check=True, capture_output=True, env=env)))
        batch_process[-1] /= args.files
    batch_api_ms, process_ms = 1000 * statistics.median(batch_api), 1000 * statistics.median(batch_process)

    print(f"\n{args.shape} CLIP, {len(LABELS)} labels; medians")
    print("| | per image | CLI / Python API |")
    print("| --- | ---: | ---: |")
    print(
        f"| Python API, a new image per call (`ZeroShot(model)([path], labels)`, {args.runs} calls) "
        f"| {api_ms:.1f} ms | |"
    )
    print(
        f"| the CLI's function in this process (`cli.main(['zero-shot', …])`) "
        f"| {cli_ms:.1f} ms | {cli_ms / api_ms:.2f}× |"
    )
    print(f"| Python API, {args.files} new images in one call | {batch_api_ms:.1f} ms | |")
    print(
        f"| `python -m clipdemo zero-shot` on {args.files} files, whole process ({args.process_runs} runs) "
        f"| {process_ms:.1f} ms | {process_ms / batch_api_ms:.2f}× |"
    )


if __name__ == "__main__":
    main()
