"""Zero-shot latency: our engines against transformers' zero-shot pipeline, on the same ViT-B/32-shaped model.

    python bench/zero_shot_latency.py [--runs 15] [--files 24] [--process-runs 5] [--only-process]

Builds a randomly initialised ViT-B/32-shaped CLIP (weights don't change speed), exports it into a fresh ONNX
cache (timed: a one-off per model) and measures, in one run:
1. warm latency for 1 image x 10 labels, labels repeated between calls as in the app, all contenders
   interleaved call by call (drift on a shared machine hits them alike), medians:
   - the pipeline (re-encodes prompts and image every call);
   - ours when the user resubmits the same image (the app's edit-labels loop: both caches hit);
   - ours with a new image each call (label cache hits, the image tower runs) in each engine and precision:
     PyTorch eager fp32, PyTorch bf16 autocast, ONNX Runtime fp32 (the CPU default), ONNX Runtime int8;
   - the bare ONNX Runtime image tower fed by our preprocessing (the floor our new-image call can reach), and the
     default with ONNX Runtime's intra-op spinning on (it is off: the two thread pools then share the cores),
     each timed alone after the rest (not interleaved: its spinning slows whatever runs next);
   and the image tower's compute bound (its FLOPs / a fp32 matmul rate measured here), and a per-request budget
   of the default encoder's new-image call: decode (a 640x480 JPEG, ``clipdemo.images.load_image``),
   preprocessing, the image tower, and the rest (normalising, cache look-ups, scoring);
2. what int8 and bf16 cost: embedding cosine against PyTorch fp32 on the ViT-B/32 shape (random weights), and
   top-1 agreement with fp32 on our test set (the shipped scratch checkpoint on the built-in shapes test split);
   the scratch checkpoint's own new-image latency in PyTorch and ONNX Runtime (why ``auto`` keeps it in PyTorch);
3. whole process: 24 image files x 10 labels via our CLI (default engine, warm export cache; and
   ``CLIPDEMO_ENGINE=torch``) against a script running the pipeline (``--only-process``: this part alone, after
   the export that warms the cache).
Prints medians and ratios, and ``uptime`` before and after (figures taken under load are not evidence).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clipdemo.data.sources import load_source
from clipdemo.devices import cpu_has_fast_bf16, pick_precision
from clipdemo.encoders import HFCLIPEncoder, load_encoder
from clipdemo.features import encode_split
from clipdemo.fingerprints import backbone_fingerprint
from clipdemo.images import load_image
from clipdemo.onnx_cache import export_folder
from clipdemo.onnx_engine import OnnxTowers, new_session, pick_engine
from clipdemo.scoring import Rule
from clipdemo.testing import make_clip_folder
from clipdemo.zeroshot import TEMPLATE_SETS, build_classifier, classify

SHIPPED = REPO / "checkpoints" / "scratch" / "shapes-v1"

ENGINES = {  # name: (precision, engine)
    "PyTorch eager fp32": ("fp32", "torch"),
    "PyTorch bf16 autocast": ("bf16", "torch"),
    "ONNX Runtime fp32": ("fp32", "onnx"),
    "ONNX Runtime int8": ("int8", "onnx"),
}
LABELS = ["cat", "dog", "a red sports car", "airplane", "bird", "horse", "ship", "truck", "frog", "deer"]
PIPELINE_SCRIPT = """
import sys
from PIL import Image
from transformers import pipeline
pipe = pipeline("zero-shot-image-classification", model=sys.argv[1])
labels = sys.argv[2].split(",")
for path in sys.argv[3:]:
    pipe(Image.open(path).convert("RGB"), candidate_labels=labels)
"""


def median_seconds(fn, runs: int, warmup: int = 2) -> float:
    return interleaved({"fn": fn}, runs, warmup)["fn"]


def interleaved(fns: dict, runs: int, warmup: int = 2, show: bool = False) -> dict:
    """Median seconds of each of ``fns``, called in turn ``runs`` times (each call gets the round number); with
    ``show``, every run's seconds are printed too."""
    for r in range(warmup):
        for fn in fns.values():
            fn(r)
    times = {name: [] for name in fns}
    for r in range(warmup, warmup + runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(r)
            times[name].append(time.perf_counter() - start)
    if show:
        print("  every run, seconds:", {name: [round(x, 2) for x in t] for name, t in times.items()})
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_rate(dtype=torch.float32, n: int = 1024, runs: int = 20) -> float:
    a = torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / median_seconds(lambda r: a @ a, runs)


def image_tower_flops(model) -> float:
    """Multiply-adds of the vision transformer and projection, x2 (attention included)."""
    v = model.config.vision_config
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    per_layer = (
        tokens * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size) + 2 * tokens**2 * v.hidden_size
    )
    patchify = (v.image_size // v.patch_size) ** 2 * 3 * v.patch_size**2 * v.hidden_size
    return 2 * (v.num_hidden_layers * per_layer + patchify + v.hidden_size * model.config.projection_dim)


def print_budget(encoder, tower, images: list, call: float, runs: int) -> None:
    """Where the default encoder's new-image call goes: decode, preprocessing, tower, and the rest of the call."""
    jpeg = io.BytesIO()
    images[0].save(jpeg, format="JPEG", quality=90)
    data = jpeg.getvalue()
    pixels = encoder.transform([images[0]]).numpy()
    parts = {
        "decode (640x480 JPEG)": median_seconds(lambda r: load_image(data), runs),
        "preprocessing": median_seconds(lambda r: encoder.transform([images[r % len(images)]]), runs),
        "image tower": median_seconds(lambda r: tower.run(None, {"pixel_values": pixels}), runs),
    }
    parts["rest (normalise, caches, scoring)"] = max(0.0, call - parts["preprocessing"] - parts["image tower"])
    print(
        "per-request budget of the encoder part, medians: "
        + ", ".join(f"{name} {1e3 * t:.1f} ms" for name, t in parts.items())
        + f" (the new-image call above: {1e3 * call:.1f} ms, decode not included)"
    )


def top1_on_test_split(variants: dict, checkpoint: Path = SHIPPED) -> tuple[dict, torch.Tensor]:
    """Top-1 predictions on the shapes test split for each (precision, engine) of ``variants``, and the labels."""
    dataset = load_source("shapes")
    test = dataset.splits["test"]
    predictions = {}
    for name, (precision, engine) in variants.items():
        encoder = load_encoder(str(checkpoint), precision=precision, engine=engine)
        assert (encoder.precision, encoder.engine) == (precision, engine), encoder.describe()
        features = encode_split(encoder, test, progress=lambda event: None).features
        classes = build_classifier(encoder, dataset.class_names, encoder.templates)
        predictions[name] = Rule.of(encoder).logits(features, classes).argmax(1)
    return predictions, torch.tensor(test.labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--process-runs", type=int, default=5, help="whole-process runs of each side")
    parser.add_argument("--only-process", action="store_true", help="only part 3, the whole-process comparison")
    args = parser.parse_args()
    from transformers import pipeline

    print("before:", uptime(), flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="clipdemo-bench-"))
    os.environ["CLIPDEMO_CHECKPOINT_DIR"] = str(tmp / "checkpoints")  # a cold export cache, then warm for the CLI
    folder = make_clip_folder(tmp / "vit-b-32", "vit-b-32")
    if args.only_process:
        load_encoder(str(folder))  # the default engine's export, which the timed CLI runs then find in the cache
        whole_process(args, tmp, folder)
        print("after:", uptime())
        return
    images = [Image.effect_noise((640, 480), 40 + i % 50).convert("RGB") for i in range(args.runs + 4)]
    photo = TEMPLATE_SETS["photo"]

    engines, load_seconds = {}, {}
    for name, (precision, engine) in ENGINES.items():
        if precision == "bf16" and not cpu_has_fast_bf16():
            print(f"{name}: skipped, this CPU has no bf16 matmul units (emulated bf16 is many times slower than fp32)")
            continue
        start = time.perf_counter()
        engines[name] = load_encoder(str(folder), precision=precision, engine=engine)
        load_seconds[name] = time.perf_counter() - start  # the ONNX ones include their export
        classify(engines[name], [images[0]], LABELS, photo)  # its label embeddings, as in the app
    # what the app and the CLI run with the defaults (CLIPDEMO_ENGINE and CLIPDEMO_PRECISION unset)
    cpu = torch.device("cpu")
    default = next(n for n, e in engines.items() if (e.engine, e.precision) == (pick_engine(cpu), pick_precision(cpu)))
    encoder = engines[default]
    pipe = pipeline("zero-shot-image-classification", model=str(folder))

    contenders = {
        "pipeline": lambda r: pipe(images[0], candidate_labels=LABELS),
        "same": lambda r: classify(encoder, [images[0]], LABELS, photo),
    }
    for name, e in engines.items():
        contenders[name] = lambda r, e=e: classify(e, [images[r + 1]], LABELS, photo)
    tower = encoder.onnx.image_session if encoder.onnx else None

    def bare_tower(r: int) -> None:
        tower.run(None, {"pixel_values": encoder.transform([images[r + 1]]).numpy()})

    if tower is not None:
        contenders["bare ORT tower"] = bare_tower
        spinning = HFCLIPEncoder(str(folder))  # the default's export, its image tower with intra-op spinning on
        image_model = export_folder("hf-clip-image", backbone_fingerprint(str(folder)), "fp32") / "model.onnx"
        spinning.onnx = OnnxTowers(new_session(image_model, spinning=True), spinning.onnx.text_session)
        classify(spinning, [images[0]], LABELS, photo)
        # mirrored images: the default's image cache (same model, engine and precision) would answer the originals
        mirrored = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in images]
    print(f"load before the interleaved calls: {os.popen('uptime').read().strip()}")
    ms = interleaved(contenders, args.runs)
    if tower is not None:
        # Each alone, one after the other, not interleaved: ORT's spinning workers busy-wait after a call on the
        # cores whatever runs next needs (interleaved, they made the pipeline that followed 16% slower, 197 vs
        # 170 ms, and the default that followed 21%).
        flipped = [im.transpose(Image.Transpose.FLIP_TOP_BOTTOM) for im in images]
        ms["spinning on"] = median_seconds(lambda r: classify(spinning, [mirrored[r]], LABELS, photo), args.runs)
        ms["spinning off"] = median_seconds(lambda r: classify(encoder, [flipped[r]], LABELS, photo), args.runs)
    theirs = ms["pipeline"]
    flops = image_tower_flops(engines["PyTorch eager fp32"].model)  # the default may hold no PyTorch model
    rate = matmul_rate(torch.float32, n=512)
    bound = flops / rate

    print(
        f"model: random ViT-B/32-shaped CLIP; defaults here: {encoder.describe()} "
        f"(CLIPDEMO_ENGINE=auto -> {pick_engine(encoder.device)}), {torch.get_num_threads()} threads"
    )
    loads = ", ".join(f"{n} {t:.1f} s" for n, t in load_seconds.items())
    print(
        f"model load, ONNX export into the cache included (once per model): {loads}; "
        f"fast bf16 in hardware: {cpu_has_fast_bf16()}"
    )
    print(f"1 image x {len(LABELS)} labels, median of {args.runs} warm calls, all interleaved:")
    print(f"  pipeline                                      {1e3 * theirs:8.1f} ms")
    print(f"  ours, same image resubmitted                  {1e3 * ms['same']:8.1f} ms   {theirs / ms['same']:6.1f}x")
    for name in engines:  # ratios to the pipeline, and to PyTorch eager fp32
        mark = "  <- default" if name == default else ""
        print(
            f"  ours, new image, {name:28} {1e3 * ms[name]:8.1f} ms   {theirs / ms[name]:6.1f}x "
            f"({ms['PyTorch eager fp32'] / ms[name]:.2f}x PyTorch eager){mark}"
        )
    print(
        f"  image tower compute bound                     {1e3 * bound:8.1f} ms   ({flops / 1e9:.1f} GFLOP at "
        f"{rate / 1e9:.0f} GFLOP/s fp32 matmul); default new-image call = {ms[default] / bound:.2f}x the bound"
    )
    if tower is not None:
        print(
            f"  bare ORT image tower + our preprocessing      {1e3 * ms['bare ORT tower']:8.1f} ms; default new-image "
            f"call = {ms[default] / ms['bare ORT tower']:.2f}x it (target <= 1.15x), pipeline = "
            f"{theirs / ms[default]:.2f}x the default new-image call (target >= 4.5x)"
        )
        print(
            f"  the default with ONNX Runtime's intra-op spinning on {1e3 * ms['spinning on']:8.1f} ms "
            f"({ms['spinning on'] / ms['spinning off']:.2f}x the default, which has it off: "
            f"{1e3 * ms['spinning off']:.1f} ms; each timed alone, after the rest)"
        )
        print_budget(encoder, tower, images, ms[default], args.runs)

    noise = [Image.effect_noise((224, 224), 20 + 5 * i).convert("RGB") for i in range(16)]
    reference = engines["PyTorch eager fp32"].encode_images(noise)
    cos = {
        n: torch.nn.functional.cosine_similarity(e.encode_images(noise), reference).min().item()
        for n, e in engines.items()
        if n != "PyTorch eager fp32"
    }
    print(
        "image embeddings vs PyTorch fp32, min cosine over 16 images (random weights): "
        + ", ".join(f"{n} {c:.6f}" for n, c in cos.items())
    )

    variants = {
        "fp32": ("fp32", "torch"),
        "bf16": ("bf16", "torch"),
        "onnx fp32": ("fp32", "onnx"),
        "int8": ("int8", "onnx"),
    }
    predictions, labels = top1_on_test_split(variants)
    accuracy = {v: 100 * (predictions[v] == labels).float().mean().item() for v in predictions}
    print(
        f"top-1 on our test set (shipped scratch checkpoint, shapes test split, {len(labels)} images), "
        f"agreement with PyTorch fp32 and accuracy (fp32 {accuracy['fp32']:.1f}%):"
    )
    for v in ("bf16", "onnx fp32", "int8"):
        agree = (predictions[v] == predictions["fp32"]).sum().item()
        print(f"  {v:10} {agree}/{len(labels)} identical; accuracy {accuracy[v]:.1f}%")
    scratch = {e: load_encoder(str(SHIPPED), engine=e) for e in ("torch", "onnx")}
    small = images[: args.runs + 2]
    for e in scratch.values():
        classify(e, [small[0]], ["a red triangle"], e.templates)
    sms = interleaved(
        {
            e: (lambda r, enc=enc: classify(enc, [small[r]], ["a red triangle"], enc.templates))
            for e, enc in scratch.items()
        },
        args.runs,
    )
    print(
        f"shipped scratch checkpoint, new image x 1 label: PyTorch {1e3 * sms['torch']:.2f} ms, ONNX Runtime "
        f"{1e3 * sms['onnx']:.2f} ms; auto runs it in {load_encoder(str(SHIPPED)).engine}"
    )

    whole_process(args, tmp, folder)
    print("after:", uptime())


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def whole_process(args, tmp: Path, folder: Path) -> None:
    """Part 3: 24 files x 10 labels through our CLI (warm export cache) and through a pipeline script."""
    # Our CLI's first runs after a fresh export were slower (3.3 s instead of 2.6 s, 1.1 s of it in the kernel, while
    # the export was still being written back to disk). A warm cache is one written earlier: flush it first. That
    # did not remove the effect in every run, so read the medians, and every run's figures printed beside them.
    os.sync()
    files = []
    for i in range(args.files):
        path = tmp / f"img{i:02d}.jpg"
        Image.effect_noise((640, 480), 30 + i).convert("RGB").save(path, quality=90)
        files.append(str(path))
    script = tmp / "pipeline_script.py"
    script.write_text(PIPELINE_SCRIPT)
    ours_cmd = [
        sys.executable,
        "-m",
        "clipdemo",
        "zero-shot",
        "--model",
        str(folder),
        "--labels",
        ",".join(LABELS),
        *files,
    ]
    their_cmd = [sys.executable, str(script), str(folder), ",".join(LABELS), *files]

    def timed(cmd, **env) -> float:
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=REPO, env={**os.environ, **env})
        return time.perf_counter() - start

    sides = {
        "pipeline": lambda r: timed(their_cmd),
        "ours": lambda r: timed(ours_cmd),
        "ours, PyTorch": lambda r: timed(ours_cmd, CLIPDEMO_ENGINE="torch"),
    }
    seconds = interleaved(sides, args.process_runs, warmup=1, show=True)  # the warm-up also fills the file cache
    print(
        f"whole process, {args.files} files x {len(LABELS)} labels (median of {args.process_runs}, interleaved; "
        "warm export cache):"
    )
    print(
        f"  pipeline script {seconds['pipeline']:6.2f} s; our CLI {seconds['ours']:6.2f} s "
        f"({seconds['pipeline'] / seconds['ours']:.2f}x faster); with CLIPDEMO_ENGINE=torch "
        f"{seconds['ours, PyTorch']:6.2f} s ({seconds['pipeline'] / seconds['ours, PyTorch']:.2f}x)"
    )


if __name__ == "__main__":
    main()
