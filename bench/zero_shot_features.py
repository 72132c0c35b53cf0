"""What the zero-shot tab's new views cost, each against its peer measured in the same run.

    python bench/zero_shot_features.py [--runs 5]

Builds a randomly initialised ViT-B/32-shaped CLIP and a ViT-B/32-shaped SigLIP (``clipdemo.testing``; weights
don't change speed) and measures, through the tab's own handlers, with a new image on every call (so the image
tower always runs) and the labels' embeddings already cached (as in the app, where labels repeat):

1. compare mode (CLIP vs SigLIP on one image, 10 labels) against the two models alone, one after the other
   (target: compare <= the sum);
2. the matrix view for 16 images x 20 labels (decoding, scoring and its HTML tables) against the 16 image
   forwards alone (target: <= 1.2x);
3. a relevancy map of one label on one image (the overlay included) against one classification of that image
   (target: <= 2x).

Each chart is serialised as Gradio sends it (a small table the browser draws). The contenders run interleaved,
round after round, and both wall time and this process's CPU time are reported (medians): on a shared machine
CPU time is the steadier of the two (``--threads 1`` keeps OpenMP's spinning out of it). Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clipdemo.encoders import load_encoder
from clipdemo.relevancy import relevancy
from clipdemo.serving import Served
from clipdemo.settings import Settings
from clipdemo.testing import make_clip_folder, make_siglip_folder
from clipdemo.ui import zeroshot_tab
from clipdemo.zeroshot import TEMPLATE_SETS, classify

LABELS = [
    "a cat",
    "a dog",
    "a red car",
    "a blue car",
    "a bird",
    "a flower",
    "a temple",
    "a woman in uniform",
    "a house",
    "a boat",
    "a tree",
    "an apple",
    "a plane",
    "a star",
    "a circle",
    "a square",
    "a triangle",
    "two dogs",
    "three cats",
    "a green tree",
]


class Photos:
    """A new photo-sized JPEG every call (written to disk, as the app's uploads are): smooth gradients plus noise,
    so it decodes like a photo (random-noise PNGs decode several times slower than any real upload)."""

    def __init__(self, folder: Path):
        self.folder, self.n = folder, 0

    def __call__(self, count: int = 1) -> list[str]:
        paths = []
        for _ in range(count):
            self.n += 1
            rng = np.random.default_rng(self.n)
            path = self.folder / f"photo-{self.n}.jpg"
            y, x = np.mgrid[0:480, 0:640]
            base = np.stack([x * 255 / 640, y * 255 / 480, (x + y) * 255 / 1120], axis=-1)
            pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
            paths.append(str(path))
        return paths


def timed(fn) -> tuple[float, float]:
    """(wall ms, CPU ms) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return 1000 * (time.perf_counter() - wall), 1000 * (time.process_time() - cpu)


def interleaved(contenders: dict, runs: int) -> dict:
    """Median (wall, CPU) ms per contender, each round running every contender once."""
    times = {name: [] for name in contenders}
    for _ in range(runs):
        for name, fn in contenders.items():
            times[name].append(timed(fn))
    return {name: tuple(statistics.median(t[i] for t in ts) for i in (0, 1)) for name, ts in times.items()}


def line(label: str, t: tuple[float, float]) -> str:
    return f"{label}: {t[0]:.0f} ms wall, {t[1]:.0f} ms CPU"


def ratio(a, b) -> str:
    return f"{a[0] / b[0]:.2f}x wall, {a[1] / b[1]:.2f}x CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip_dir = make_clip_folder(tmp / "clip-b32", "vit-b-32")
        siglip_dir = make_siglip_folder(tmp / "siglip-b32", "vit-b-32", context_length=64)
        served = Served(Settings(model=str(clip_dir), extra_models=[str(siglip_dir)], checkpoint_dir=tmp / "ck"))
        clip, siglip = load_encoder(str(clip_dir)), load_encoder(str(siglip_dir))
        photos = Photos(tmp)
        labels10, labels20 = ", ".join(LABELS[:10]), ", ".join(LABELS)
        for encoder in (clip, siglip):  # warm up and cache the label embeddings
            classify(encoder, [Image.open(p).convert("RGB") for p in photos(2)], LABELS, TEMPLATE_SETS["photo"])

        def tab(model, compare="none"):
            _, chart, _ = zeroshot_tab.zero_shot(
                served, photos(), labels10, "photo", "", 5, model, "single", False, 0.0, compare
            )
            chart["value"].to_json(orient="split")  # what Gradio's native bar plot sends

        print(
            f"torch threads: {torch.get_num_threads()}; "
            f"median of {args.runs} interleaved rounds, a new image every call\n"
        )

        t = interleaved(
            {
                "clip": lambda: tab("default"),
                "siglip": lambda: tab("extra-1"),
                "compare": lambda: tab("default", compare="extra-1"),
            },
            args.runs,
        )
        total = (t["clip"][0] + t["siglip"][0], t["clip"][1] + t["siglip"][1])
        print("1. compare, 1 image x 10 labels (the tab's handler, chart included)")
        print("   " + line("CLIP alone", t["clip"]) + "; " + line("SigLIP alone", t["siglip"]))
        print("   " + line("compare mode", t["compare"]) + f": {ratio(t['compare'], total)} the sum (target <= 1)\n")

        batches = {}

        def forwards():
            clip.encode_images(batches.pop("next"))

        def prepare():  # decoded outside the timing: the peer is the forwards alone
            batches["next"] = [Image.open(p).convert("RGB") for p in photos(16)]

        def matrix():
            zeroshot_tab.matrix(served, batches.pop("files"), labels20, "photo", "", 5, "default")  # HTML tables

        rounds = {"forwards": [], "matrix": []}
        for _ in range(args.runs):
            prepare()
            rounds["forwards"].append(timed(forwards))
            batches["files"] = photos(16)  # written outside the timing, as uploads are there before the call
            rounds["matrix"].append(timed(matrix))
        t = {k: tuple(statistics.median(x[i] for x in v) for i in (0, 1)) for k, v in rounds.items()}
        print("2. matrix, 16 images x 20 labels (decoding, scoring, its HTML tables)")
        print("   " + line("16 image forwards alone", t["forwards"]) + "; " + line("matrix", t["matrix"]))
        print(f"   {ratio(t['matrix'], t['forwards'])} (target <= 1.2)\n")

        for name, encoder in (("CLIP", clip), ("SigLIP", siglip)):

            def one_image():
                return Image.open(photos()[0]).convert("RGB")

            t = interleaved(
                {
                    "classify": lambda: classify(encoder, [one_image()], LABELS[:10]),
                    "map": lambda: relevancy(encoder, one_image(), LABELS[:10], TEMPLATE_SETS["photo"], "a cat"),
                },
                args.runs,
            )
            print(f"3. relevancy map, {name}, 1 image x 10 labels, overlay included")
            print("   " + line("one classification", t["classify"]) + "; " + line("one map", t["map"]))
            print(f"   {ratio(t['map'], t['classify'])} (target <= 2)")


if __name__ == "__main__":
    main()
