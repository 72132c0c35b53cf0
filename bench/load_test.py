"""Load test: N concurrent gradio_client users against the app launched locally in a subprocess.

    python bench/load_test.py --model tiny --users 16 --seconds 20
    python bench/load_test.py --model vit-b-32 --users 16 --seconds 30 [--fresh-images]
    python bench/load_test.py --model tiny --users 16 --runs 2 --visitors mixed   # also teachers and searchers

Builds a random CLIP folder (``tiny``, or ViT-B/32-shaped: weights don't change speed), launches the app
(``build_app`` + the production ``launch_kwargs``) on 127.0.0.1 in a child process, warms it up, then runs the
same load twice. Each user loops zero-shot calls over a few images and label sets (the embedding caches are
hot after warm-up, as when people edit labels on the same picture; ``--fresh-images`` sends a new image on
every call so the image tower runs each time). Prints per run: requests, throughput, p50/p95 latency, errors
by kind, queue-full answers (Gradio's ``max_size``); and the server's resident memory after warm-up, after run
1 and after run 2 (target: run 2 within 5% of run 1). Only 127.0.0.1 is contacted; every call has a deadline.

``--visitors mixed``: every third user is a zero-shot visitor as above, every third a *teacher* (a new session
each cycle: teaches 3 classes x 4 images on the Your classes tab, classifies a new image, downloads the head every
fourth cycle) and every third a *searcher* (a new session each cycle: indexes 12 uploads, one text and one image
search). Sessions are opened and abandoned as real visitors do, so the memory check shows whether their state
accumulates. Latency is reported per call kind.
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clipdemo.testing import make_clip_folder

LABEL_SETS = [
    "cat, dog, a red sports car",
    "a temple, a flower, a woman in uniform, a bicycle",
    "airplane, bird, horse, ship, truck, frog, deer",
    "猫, 狗, 🚗, кошка",
]
SERVER = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from clipdemo.memory import limit_malloc_arenas
from clipdemo.settings import Settings
from clipdemo.ui.app import build_app, launch_kwargs
limit_malloc_arenas()  # as app.py does
settings = Settings(model={model!r}, checkpoint_dir=Path({checkpoints!r}))
build_app(settings).launch(server_name="127.0.0.1", server_port={port}, quiet=True, **launch_kwargs(settings))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of the server process, from /proc (Linux; psutil not needed)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def write_images(folder: Path, n: int, size: int = 224, seed: int = 0) -> list[Path]:
    paths = []
    for i in range(n):
        data = bytes(((j + seed * 7919 + i * 104729) * 2654435761 >> 11) & 0xFF for j in range(size * size * 3))
        path = folder / f"img_{seed}_{i}.png"
        Image.frombytes("RGB", (size, size), data).save(path)
        paths.append(path)
    return paths


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/gradio_api/info", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("server did not come up")


def write_colour_images(folder: Path, per_class: int = 4) -> dict[str, list[Path]]:
    """Noisy solid colours per class (what even a random CLIP tells apart), for the teachers and searchers."""
    import numpy as np

    colours = {"apple": (220, 40, 40), "leaf": (40, 200, 60), "sky": (40, 60, 220)}
    out = {}
    for k, (name, rgb) in enumerate(colours.items()):
        out[name] = []
        for i in range(per_class + 1):  # the last one is the "new" image a teacher classifies
            rng = np.random.default_rng(100 * k + i)
            pixels = np.clip(np.array(rgb)[None, None] + rng.normal(0, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
            path = folder / f"{name}_{i}.png"
            Image.fromarray(pixels).save(path)
            out[name].append(path)
    return out


def visitor_calls(client, role: str, cycle: int, colours: dict[str, list[Path]]):
    """(kind, call) pairs of one cycle of a teacher or a searcher, each in a fresh session."""
    from gradio_client import handle_file

    classes = list(colours)
    client.reset_session()  # a new visitor: the previous session is abandoned, as a closed tab is
    if role == "teach":
        files = [[handle_file(str(p)) for p in colours[c][:4]] for c in classes]
        new = handle_file(str(colours[classes[cycle % 3]][4]))
        calls = [
            ("teach", lambda: client.predict(None, *classes, "", *files, None, api_name="/fewshot_teach")),
            ("classify", lambda: client.predict(new, 1.0, api_name="/fewshot_classify")),
        ]
        if cycle % 4 == 0:
            calls.append(("download", lambda: client.predict(api_name="/fewshot_download")))
        return calls
    uploads = [handle_file(str(p)) for c in classes for p in colours[c][:4]]
    example = handle_file(str(colours[classes[cycle % 3]][0]))
    return [
        ("index", lambda: client.predict("your uploads", uploads, 0.95, "PCA", api_name="/search_index")),
        ("text search", lambda: client.predict("a blue sky", None, 8, "PCA", api_name="/search_query")),
        ("image search", lambda: client.predict("", example, 8, "PCA", api_name="/search_query")),
    ]


def error_kind(e: BaseException) -> str:
    message = " ".join(str(e).split())[:70]
    return f"{type(e).__name__}: {message}"


def is_queue_full(e: BaseException) -> bool:
    text = str(e).lower()
    return "queue" in text and "full" in text


def run_load(
    url: str,
    images: list[Path],
    users: int,
    seconds: float,
    fresh: Path | None,
    call_timeout: float,
    colours: dict | None = None,
) -> dict:
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False) for _ in range(users)]  # connect before the clock starts
    latencies, errors, lock = [], collections.Counter(), threading.Lock()
    by_kind: dict[str, list[float]] = collections.defaultdict(list)
    queue_full = [0]
    start = time.perf_counter()
    deadline = start + seconds

    def visitor(u: int, role: str) -> None:
        client, cycle = clients[u], 0
        while time.perf_counter() < deadline:
            for kind, call in visitor_calls(client, role, cycle, colours):
                t0 = time.perf_counter()
                try:
                    call()
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                        by_kind[kind].append(time.perf_counter() - t0)
                except Exception as e:
                    with lock:
                        if is_queue_full(e):
                            queue_full[0] += 1
                        else:
                            if not errors[f"{kind}: {error_kind(e)}"]:  # the first of a kind: where it came from
                                traceback.print_exc(limit=-6, file=sys.stderr)
                            errors[f"{kind}: {error_kind(e)}"] += 1
                    break
            cycle += 1

    def user(u: int) -> None:
        if colours is not None and u % 3:
            return visitor(u, "teach" if u % 3 == 1 else "search")
        client, i = clients[u], 0
        while time.perf_counter() < deadline:
            if fresh is not None:
                image = write_images(fresh, 1, seed=u * 100_000 + i)[0]
            else:
                image = images[(u + i) % len(images)]
            labels = LABEL_SETS[(u + i) % len(LABEL_SETS)]
            i += 1
            t0 = time.perf_counter()
            try:
                job = client.submit(
                    [{"image": handle_file(str(image)), "caption": None}],
                    labels,
                    "photo",
                    "",
                    20,
                    "default",
                    api_name="/zero_shot",
                )  # the server's default is the model built above
                label, _, _ = job.result(timeout=call_timeout)
                assert abs(sum(c["confidence"] for c in label["confidences"]) - 1) < 1e-3
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    by_kind["zero-shot"].append(time.perf_counter() - t0)
            except Exception as e:  # counted by kind; a queue-full answer is the one allowed error
                with lock:
                    if is_queue_full(e):
                        queue_full[0] += 1
                    else:
                        errors[error_kind(e)] += 1
            finally:
                if fresh is not None:
                    image.unlink(missing_ok=True)

    threads = [threading.Thread(target=user, args=(u,), daemon=True) for u in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + call_timeout + 30)
    elapsed = time.perf_counter() - start
    for c in clients:
        c.close()
    lat = sorted(latencies)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    return dict(
        ok=len(lat),
        elapsed=elapsed,
        rps=len(lat) / elapsed,
        p50=statistics.median(lat) if lat else float("nan"),
        p95=pct(0.95),
        errors=dict(errors),
        queue_full=queue_full[0],
        kinds={k: (len(v), statistics.median(v)) for k, v in sorted(by_kind.items())},
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["tiny", "vit-b-32"], default="tiny")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    parser.add_argument("--runs", type=int, default=2, help="runs of the same load after the warm-up (at least 2)")
    parser.add_argument("--images", type=int, default=4, help="distinct images the users cycle through")
    parser.add_argument("--fresh-images", action="store_true", help="a new image per call (no image-cache hits)")
    parser.add_argument("--call-timeout", type=float, default=120.0)
    parser.add_argument(
        "--visitors",
        choices=["zero-shot", "mixed"],
        default="zero-shot",
        help="mixed: a third of the users teach classes, a third search their images",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="clipdemo-load-") as tmp:
        tmp = Path(tmp)
        model = str(make_clip_folder(tmp / f"clip-{args.model}", args.model))
        images = write_images(tmp, args.images)
        colours = None
        if args.visitors == "mixed":
            (tmp / "colours").mkdir()
            colours = write_colour_images(tmp / "colours")
        fresh = None
        if args.fresh_images:
            fresh = tmp / "fresh"
            fresh.mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(tmp / "server.log", "w")
        script = SERVER.format(repo=str(REPO), model=model, checkpoints=str(tmp / "checkpoints"), port=port)
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
        )
        try:
            wait_ready(url, proc)
            print(f"model {args.model}, {args.users} users, {args.seconds:.0f} s per run, server pid {proc.pid}")
            print(f"RSS after start:    {rss_mib(proc.pid):8.1f} MiB")
            print(f"visitors: {args.visitors}")
            warm = run_load(
                url,
                images,
                min(args.users, 4) if colours is None else min(args.users, 6),
                min(10.0, args.seconds / 2),
                fresh,
                args.call_timeout,
                colours,
            )
            rss = {"warm-up": rss_mib(proc.pid)}
            print(f"RSS after warm-up:  {rss['warm-up']:8.1f} MiB  ({warm['ok']} warm-up calls)")
            names = [f"run {i + 1}" for i in range(max(2, args.runs))]
            for name in names:
                r = run_load(url, images, args.users, args.seconds, fresh, args.call_timeout, colours)
                rss[name] = rss_mib(proc.pid)
                print(
                    f"{name}: {r['ok']} ok in {r['elapsed']:.1f} s = {r['rps']:.2f} req/s; latency p50 "
                    f"{1000 * r['p50']:.0f} ms, p95 {1000 * r['p95']:.0f} ms; queue-full {r['queue_full']}; "
                    f"errors {sum(r['errors'].values())}"
                )
                print(
                    "    by kind: "
                    + "; ".join(f"{k} {n} calls, p50 {1000 * m:.0f} ms" for k, (n, m) in r["kinds"].items())
                )
                for kind, n in sorted(r["errors"].items(), key=lambda kv: -kv[1]):
                    print(f"    {n:5d}  {kind}")
                print(f"RSS after {name}:    {rss[name]:8.1f} MiB")
            before, last = names[-2], names[-1]
            growth = 100 * (rss[last] - rss[before]) / rss[before]
            since_warm = 100 * (rss[last] - rss["warm-up"]) / rss["warm-up"]
            verdict = "OK" if abs(growth) <= 5 else "OVER TARGET"
            print(
                f"RSS growth {before} -> {last}: {growth:+.1f}% ({verdict}, target within 5%); "
                f"warm-up -> {last}: {since_warm:+.1f}%"
            )
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
