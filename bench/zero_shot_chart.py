"""What the Zero-shot tab's chart costs per request: the matplotlib figure it used to draw (built, then encoded by
gr.Plot) against the native bar plot's table (built, then serialised by gr.BarPlot), interleaved in one run, and
the whole Classify handler with its chart serialised. Tiny random CLIP, a cached image and labels: what is left is
the handler's own cost.

    python bench/zero_shot_chart.py [--runs 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from clipdemo import charts  # noqa: E402
from clipdemo.plots import ranked_bars  # noqa: E402
from clipdemo.serving import Served  # noqa: E402
from clipdemo.settings import Settings  # noqa: E402
from clipdemo.testing import make_clip_folder  # noqa: E402
from clipdemo.ui import zeroshot_tab  # noqa: E402
from clipdemo.zeroshot import zero_shot  # noqa: E402

LABELS = "a cat, a dog, a red car, a blue car, a bird, a flower, a temple, a woman in uniform, a house, a boat"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        served = Served(Settings(model=str(make_clip_folder(Path(tmp) / "tiny")), checkpoint_dir=Path(tmp) / "ck"))
        photo = str(sorted((REPO / "examples").glob("*.jpg"))[0])
        encoder = served.zero_shot().encoder
        result = zero_shot(encoder, [Image.open(photo).convert("RGB")], [x.strip() for x in LABELS.split(",")])
        plot, bar = gr.Plot(), gr.BarPlot(x="label", y="score", color="series")

        def matplotlib_chart():
            plot.postprocess(ranked_bars(result.bars(5)[0], "top 5 of 10 labels", xlabel="probability (%)"))

        def native_chart():
            bar.postprocess(charts.bar_chart([("tiny", result)], 5).table)

        def handler():
            _, chart, _ = zeroshot_tab.zero_shot(served, [photo], LABELS, "photo", "", 5)
            bar.postprocess(chart["value"])

        cases = {"matplotlib chart + gr.Plot": matplotlib_chart, "native chart + gr.BarPlot": native_chart}
        cases["Classify handler (decode, score, chart)"] = handler
        times = {name: [] for name in cases}
        for f in cases.values():
            f()
        for _ in range(args.runs):
            for name, f in cases.items():
                start = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - start)
        for name, t in times.items():
            print(f"{name:42s} median {1000 * statistics.median(t):7.2f} ms")
        old, new = (statistics.median(times[n]) for n in list(cases)[:2])
        print(f"chart: {old / new:.0f}x cheaper; load average {os.getloadavg()[0]:.2f} (uptime)")


if __name__ == "__main__":
    main()
