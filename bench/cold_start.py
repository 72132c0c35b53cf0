"""Cold start: a fresh server process's first zero-shot answer and its memory, by export cache and engine.

    python bench/cold_start.py [--model vit-b-32] [--rounds 2]

Builds a random CLIP folder (ViT-B/32-shaped by default: weights don't change speed) and, in each round, starts
the app as a Space does (``python app.py``, the model and checkpoint folder in the environment; it loads the model
as it starts) three ways, in turn:
- ``no export cache``: a fresh checkpoint folder (a Space without persistent storage): a PyTorch child process
  answers while another exports the ONNX towers, then the server switches to ONNX Runtime;
- ``CLIPDEMO_ENGINE=torch``: a fresh checkpoint folder, PyTorch only;
- ``cached export``: the checkpoint folder the first kind filled (every start after the first).
For each: seconds from process start to the first ``/zero_shot`` answer (one image x 3 labels through
gradio_client) with the memory of the server and its children then, and the server's RSS after a second answer
(for the first kind: once its export has finished, it has switched and its PyTorch child has ended). Prints
medians over the rounds and the ratios the issue asks for (targets: first answer without a cache <= 1.15x the
torch engine's; RSS after the export <= 1.1x a cached start's), with ``uptime``.
"""

from __future__ import annotations

import argparse
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

from load_test import free_port, rss_mib, wait_ready, write_images  # noqa: E402

from clipdemo.testing import make_clip_folder  # noqa: E402


def children(pid: int, marker: bytes = b"") -> list[int]:
    """The server's child processes whose command line holds ``marker``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and marker in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def export_children(pid: int) -> list[int]:
    """The server's background export processes (``clipdemo.onnx_engine._export_main``)."""
    return children(pid, b"_export_main")


def tree_rss_mib(pid: int) -> float:
    """The server's RSS with its children's (the PyTorch child and the export, while it runs)."""
    total = rss_mib(pid)
    for child in children(pid):
        try:
            total += rss_mib(child)
        except (OSError, RuntimeError):  # ended meanwhile
            pass
    return total


def ask(url: str, image: Path) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    gallery = [{"image": handle_file(str(image)), "caption": None}]
    client.predict(gallery, "cat, dog, a red sports car", "photo", "", 20, "default", api_name="/zero_shot")


def start(model: Path, checkpoints: Path, images: list[Path], log: Path, **env) -> dict:
    """Start a server, time its first answer, wait for its export (if any), answer again, read its RSS."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "CLIPDEMO_MODEL": str(model),
        "CLIPDEMO_CHECKPOINT_DIR": str(checkpoints),
    }
    t0 = time.perf_counter()
    with open(log, "a") as out:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "app.py")], stdout=out, stderr=subprocess.STDOUT, env={**environment, **env}
        )
    try:
        wait_ready(url, proc)
        ask(url, images[0])
        first = time.perf_counter() - t0
        tree = tree_rss_mib(proc.pid)
        exporting = bool(export_children(proc.pid))
        deadline = time.monotonic() + 600
        while export_children(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        export_done = time.perf_counter() - t0
        time.sleep(1.0)  # the switch runs in the server's watcher thread once the child has exited
        ask(url, images[1])
        return {
            "first": first,
            "tree": tree,
            "rss": rss_mib(proc.pid),
            "exported": exporting,
            "export_done": export_done,
        }
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["tiny", "vit-b-32"], default="vit-b-32")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="clipdemo-bench-cold-"))
    model = make_clip_folder(tmp / args.model, args.model)
    log = tmp / "servers.log"
    results = {"no export cache": [], "CLIPDEMO_ENGINE=torch": [], "cached export": []}
    print(f"load before: {os.popen('uptime').read().strip()}")
    for r in range(args.rounds):
        images = write_images(tmp, 2, seed=r)
        fresh = tmp / f"round{r}" / "fresh"
        results["no export cache"].append(start(model, fresh, images, log))
        results["CLIPDEMO_ENGINE=torch"].append(
            start(model, tmp / f"round{r}" / "torch", images, log, CLIPDEMO_ENGINE="torch")
        )
        results["cached export"].append(start(model, fresh, images, log))  # the cache the first start filled
    print(f"load after:  {os.popen('uptime').read().strip()}")
    print(f"model {args.model}, {args.rounds} rounds, medians (server log: {log}):")
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("first", "tree", "rss")} for k, v in results.items()}
    for kind, m in med.items():
        extra = ""
        if kind == "no export cache":
            done = statistics.median(x["export_done"] for x in results[kind])
            ran = all(x["exported"] for x in results[kind])
            extra = f"; export ran in the background: {ran}, done {done:.1f} s after start"
        print(
            f"  {kind:22} first answer {m['first']:6.1f} s (server and children then {m['tree']:5.0f} MiB), "
            f"RSS after the second answer {m['rss']:5.0f} MiB{extra}"
        )
    first = med["no export cache"]["first"] / med["CLIPDEMO_ENGINE=torch"]["first"]
    rss = med["no export cache"]["rss"] / med["cached export"]["rss"]
    print(
        f"first answer without an export cache / the torch engine's: {first:.2f}x (target <= 1.15x); "
        f"RSS after the export / a cached start's: {rss:.2f}x (target <= 1.1x)"
    )


if __name__ == "__main__":
    main()
