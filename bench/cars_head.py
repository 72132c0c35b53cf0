"""Cars head speed: the tutorial's loops against ours, on a random ViT-B/32-shaped CLIP (speed does not depend on
the weights), synthetic car-sized photos and 196 classes.

    python bench/cars_head.py                       # a few minutes on 2 free cores
    python bench/cars_head.py --images 300 --seed-epochs 6 --zeroshot-images 128
    python bench/cars_head.py --compare-heads       # also: which head is best on validation (synthetic features)

What is timed (every run starts from the model folder on disk, as a fresh process would):

(a) first training of the tutorial's head (``mlp-logits``, 6 epochs) from images. Tutorial: ``seed_train_head``
    from ``../shared/reference/seed_cars.py``, which runs the ViT on every image and the text tower on all 196
    prompts for every batch of every epoch. Ours: ``train_head`` on an empty feature cache (each image encoded
    once, the 8 templates x 196 classes once). The tutorial's epochs are identical work, so by default one is
    timed and its epoch time (minus the model load, timed apart) multiplied by 6 (``--seed-epochs 6`` times
    all of them).
(a1) the same with the tutorial's one prompt per class (like for like: 196 prompts once, not 8 x 196).
(a') the same with the class embeddings already cached (they depend on the backbone and the class names only, so
    a new set of photos of the same 196 classes finds them): what encoding the images once costs on its own.
(b) retraining with a warm cache: the tutorial has no cache, so its time is (a)'s; ours reads the cached image
    and class embeddings and never loads the model. Timed for ``mlp-logits`` (6 epochs, plus the step selection
    that ``fit_head`` adds) and for the default head (its C x alpha search, by cross-validation when the
    validation split is small, as at 300 images).
(c) zero-shot evaluation of the images: ``seed_zero_shot_eval`` (batches of 8, the 196 prompts re-encoded per
    batch) against ``cars.zeroshot_scores`` with an empty cache, once with the tutorial's single prompt per class
    (like for like) and once with our default 8-template ensemble.
(d) with ``--compare-heads``: every head fitted on simulated CLIP-like features (``bench/few_shot.py``'s; 196
    classes, the tutorial's split sizes, zero-shot near 60%): validation and held-out accuracy per head.

Prints one line per measurement, then a JSON summary (medians over ``--repeats`` for ours).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from clipdemo import encoders, zeroshot
from clipdemo.cars import train_head, zeroshot_scores
from clipdemo.data import ImageDataset, Split
from clipdemo.data.splits import Part
from clipdemo.heads import DEFAULT_HEAD
from clipdemo.testing import make_clip_folder
from clipdemo.zeroshot import CARS_TEMPLATES

REFERENCE = ROOT.parent / "shared" / "reference" / "seed_cars.py"
TUTORIAL_TEMPLATE = ("This is photo of {} car",)  # the tutorial's one prompt per class

MAKES = [
    "Acura",
    "Aston Martin",
    "Audi",
    "BMW",
    "Bentley",
    "Bugatti",
    "Buick",
    "Cadillac",
    "Chevrolet",
    "Chrysler",
    "Dodge",
    "Ferrari",
    "Ford",
    "GMC",
    "Honda",
    "Hyundai",
    "Jaguar",
    "Jeep",
    "Lamborghini",
    "Land Rover",
    "Mercedes-Benz",
    "Nissan",
    "Porsche",
    "Rolls-Royce",
    "Suzuki",
    "Toyota",
    "Volkswagen",
    "Volvo",
]
MODELS = [
    "RL",
    "TL Type-S",
    "V8 Vantage",
    "RS 4",
    "X6",
    "Continental GT",
    "Veyron 16.4",
    "Enclave",
    "Escalade EXT",
    "Silverado 1500 Hybrid",
    "Town and Country",
    "Challenger SRT8",
    "458 Italia",
    "F-150",
    "Savana",
    "Odyssey",
    "Veloster",
    "XK XKR",
    "Grand Cherokee",
    "Aventador",
    "Range Rover",
    "Sprinter",
    "Leaf",
    "Panamera",
    "Phantom Drophead",
    "SX4",
    "Sequoia",
    "Golf",
    "XC90",
]
BODIES = ["Sedan", "Coupe", "Convertible", "SUV", "Hatchback", "Wagon", "Crew Cab", "Minivan", "Cargo Van"]


def load_reference():
    spec = importlib.util.spec_from_file_location("seed_cars", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def car_names(n: int, seed: int = 0) -> list[str]:
    """Stanford-Cars-like class names ("Make Model Body Year"), so prompts tokenize to realistic lengths."""
    rng = random.Random(seed)
    names: list[str] = []
    while len(names) < n:
        name = f"{rng.choice(MAKES)} {rng.choice(MODELS)} {rng.choice(BODIES)} {rng.randint(1991, 2012)}"
        if name not in names:
            names.append(name)
    return names


def photos(n: int, classes: int, seed: int = 0) -> tuple[list[bytes], list[int]]:
    """``n`` JPEGs of 480x320 (the devkit's typical size): a smooth class-tinted gradient plus noise (each class
    its own tint, each photo a little off it, so a head has something to learn, as on real cars)."""
    rng = np.random.default_rng(seed)
    labels = [i % classes for i in range(n)]
    tints = rng.uniform(40, 215, (classes, 3))
    ramp = np.linspace(0, 1, 480)[None, :, None] * np.linspace(0.5, 1, 320)[:, None, None]
    out = []
    for label in labels:
        tint = np.clip(tints[label] + rng.normal(0, 8, 3), 0, 255)
        pixels = np.clip(tint * ramp + rng.normal(0, 18, (320, 480, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=88)
        out.append(buf.getvalue())
    return out, labels


def cold() -> None:
    """Forget every in-process cache of ours: the next call loads the model and encodes as a fresh process."""
    for spec in list({key[0] for key in encoders._cache}):
        encoders.forget_encoder(spec)
    zeroshot.TEXT_CACHE._data.clear()
    zeroshot.IMAGE_CACHE._data.clear()


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def quiet(info):
    pass


def bench_training(model: Path, args, ref, report) -> dict:
    data, labels = photos(args.images, args.classes)
    names = car_names(args.classes)
    pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in data]  # the tutorial gets decoded images for free
    dataset = ImageDataset(
        names, {"train": Split(data, labels)}, "bench:synthetic", f"bench-{args.images}-{args.classes}"
    )

    seed_s, _ = timed(lambda: ref.seed_train_head(str(model), pil, labels, names, epochs=args.seed_epochs))
    # extrapolate the epochs only, not the model load that every call pays once
    load_s, _ = timed(
        lambda: (ref.CLIPProcessor.from_pretrained(str(model)), ref.FineTuneCLIP(str(model), args.classes))
    )
    seed_6 = load_s + (seed_s - load_s) * 6 / args.seed_epochs
    report(
        "a/b",
        f"tutorial seed_train_head: {args.seed_epochs} epoch(s) {seed_s:.1f} s (model load {load_s:.1f} s) "
        f"-> 6 epochs {seed_6:.1f} s",
    )

    colds, one_prompt, images_only, warms, warm_default = [], [], [], [], []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cold()
            s, result = timed(
                lambda: train_head(
                    dataset,
                    str(model),
                    Path(tmp) / "head",
                    head="mlp-logits",
                    epochs=6,
                    split="tutorial",
                    cache_dir=Path(tmp) / "cache",
                    progress=quiet,
                )
            )
            colds.append(s)
            assert result.run["encoded_images"] == args.images
            report("a", f"ours, cold cache, run {r + 1}: {s:.1f} s")
            for w in range(args.repeats if "variants" in args.skip else 0):  # (b) alone: only its warm cache needed
                warm_runs(model, dataset, tmp, warms, warm_default, w, report)
            if "variants" in args.skip:
                continue
            cold()  # like for like: the tutorial's one prompt per class instead of our 8-template ensemble
            s, result = timed(
                lambda: train_head(
                    dataset,
                    str(model),
                    Path(tmp) / "head1",
                    head="mlp-logits",
                    epochs=6,
                    split="tutorial",
                    templates=TUTORIAL_TEMPLATE,
                    cache_dir=Path(tmp) / "cache1",
                    progress=quiet,
                )
            )
            assert result.run["encoded_images"] == args.images
            one_prompt.append(s)
            report("a1", f"ours, cold cache, the tutorial's one prompt per class, run {r + 1}: {s:.1f} s")
            # the class embeddings depend on the backbone and class names only: a new set of car photos
            # (or a new dataset version) finds them cached and encodes its images only
            (Path(tmp) / "text-only").mkdir()
            for f in (Path(tmp) / "cache").glob("text-*.safetensors"):
                shutil.copy(f, Path(tmp) / "text-only" / f.name)
            cold()
            s, result = timed(
                lambda: train_head(
                    dataset,
                    str(model),
                    Path(tmp) / "head2",
                    head="mlp-logits",
                    epochs=6,
                    split="tutorial",
                    cache_dir=Path(tmp) / "text-only",
                    progress=quiet,
                )
            )
            assert result.run["encoded_images"] == args.images
            images_only.append(s)
            report("a'", f"ours, images cold, class embeddings cached, run {r + 1}: {s:.1f} s")
            for w in range(args.repeats):
                warm_runs(model, dataset, tmp, warms, warm_default, w, report)
    images_only, one_prompt = images_only or [float("nan")], one_prompt or [float("nan")]
    cold_s, warm_s, images_s = statistics.median(colds), statistics.median(warms), statistics.median(images_only)
    return {
        "a_seed_6_epochs_s": round(seed_6, 2),
        "a_ours_cold_s": round(cold_s, 2),
        "a_ratio": round(seed_6 / cold_s, 1),
        "a_ours_cold_one_prompt_s": round(statistics.median(one_prompt), 2),
        "a_ratio_one_prompt": round(seed_6 / statistics.median(one_prompt), 1),
        "a_ours_text_cached_s": round(images_s, 2),
        "a_ratio_text_cached": round(seed_6 / images_s, 1),
        "b_ours_warm_s": round(warm_s, 3),
        "b_ratio": round(seed_6 / warm_s, 1),
        "b_ours_warm_default_head_s": round(statistics.median(warm_default), 3),
        "b_ratio_default_head": round(seed_6 / statistics.median(warm_default), 1),
        "seed_epochs_timed": args.seed_epochs,
    }


def warm_runs(model, dataset, tmp, warms: list, warm_default: list, w: int, report) -> None:
    """(b): retrain from the warm cache, mlp-logits for the tutorial's 6 epochs and the default head."""
    cold()
    s, result = timed(
        lambda: train_head(
            dataset,
            str(model),
            Path(tmp) / "again",
            head="mlp-logits",
            epochs=6,
            split="tutorial",
            cache_dir=Path(tmp) / "cache",
            progress=quiet,
        )
    )
    assert result.run["encoded_images"] == 0
    warms.append(s)
    report("b", f"ours, warm cache, mlp-logits 6 epochs (+ its step selection), run {w + 1}: {s:.3f} s")
    cold()
    s, result = timed(
        lambda: train_head(
            dataset, str(model), Path(tmp) / "default", split="tutorial", cache_dir=Path(tmp) / "cache", progress=quiet
        )
    )
    assert result.run["encoded_images"] == 0
    warm_default.append(s)
    report("b", f"ours, warm cache, the default head ({DEFAULT_HEAD}, its C x alpha search), run {w + 1}: {s:.3f} s")


def bench_zeroshot(model: Path, args, ref, report) -> dict:
    data, labels = photos(args.zeroshot_images, args.classes, seed=1)
    names = car_names(args.classes)
    pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in data]
    dataset = ImageDataset(names, {"test": Split(data, labels)}, "bench:synthetic", f"bench-zs-{args.zeroshot_images}")
    seed_s, _ = timed(lambda: ref.seed_zero_shot_eval(str(model), pil, labels, names, batch_size=8))
    report("c", f"tutorial seed_zero_shot_eval: {seed_s:.1f} s")
    out = {"c_seed_s": round(seed_s, 2)}
    for tag, templates in (("tutorial_prompt", TUTORIAL_TEMPLATE), ("8_templates", CARS_TEMPLATES)):
        runs = []
        for r in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                cold()
                everything = Part("test", tuple(range(len(labels))))
                s, _ = timed(
                    lambda: zeroshot_scores(
                        str(model), dataset, everything, templates=templates, cache_dir=Path(tmp), progress=quiet
                    )
                )
            runs.append(s)
            report("c", f"ours ({tag}), cold cache, run {r + 1}: {s:.1f} s")
        out[f"c_ours_{tag}_s"] = round(statistics.median(runs), 2)
        out[f"c_ratio_{tag}"] = round(seed_s / statistics.median(runs), 1)
    return out


def compare_heads(args, report) -> dict:
    """Every head on simulated CLIP-like features (``bench/few_shot.py``'s): 196 classes, 512-d, the tutorial's
    split sizes (7,349 train, 408 validation, 387 held out), zero-shot near 60%: validation and held-out
    accuracy per head. A proxy only: real CLIP features on real cars can rank the heads differently."""
    from few_shot import simulated

    from clipdemo.heads import HEADS, accuracy, fit_head
    from clipdemo.scoring import Rule, ZeroShotClassifier

    x, y, text, scale = simulated(196, per_class=42)
    zeroshot = ZeroShotClassifier(text, Rule(scale=scale))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    ev, va, tr = order[:387], order[387:795], order[795 : 795 + 7349]
    zs = float((zeroshot.logits(x[ev]).argmax(1) == y[ev]).float().mean())
    out = {"zeroshot_eval_acc": round(zs, 3)}
    report("d", f"zero-shot: held-out acc {zs:.3f}")
    for name in HEADS:
        s, fit = timed(lambda: fit_head(name, (x[tr], y[tr]), (x[va], y[va]), zeroshot=zeroshot))
        acc = accuracy(fit.head, x[ev], y[ev])
        out[name] = {
            "val_acc": round(fit.val_acc, 3),
            "zeroshot_val_acc": round(fit.zeroshot_val_acc, 3),
            "eval_acc": round(acc, 3),
            "chosen": fit.hyperparameters,
            "seconds": round(s, 1),
        }
        report(
            "d",
            f"{name}: validation {fit.val_acc:.3f} (zero-shot {fit.zeroshot_val_acc:.3f}), held-out {acc:.3f}, "
            f"chosen {fit.hyperparameters} ({s:.1f} s)",
        )
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=128, help="images for (a)/(b)")
    parser.add_argument("--zeroshot-images", type=int, default=64, help="images for (c)")
    parser.add_argument("--classes", type=int, default=196)
    parser.add_argument("--seed-epochs", type=int, default=1, help="tutorial epochs actually timed (then x 6 / this)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of ours per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--model", default=None, help="a ViT-B/32-shaped HF CLIP folder (default: built in a temp dir)")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: train, zeroshot, variants ((a1) and (a'): for (b) alone)",
    )
    parser.add_argument("--compare-heads", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def report(part, line):
        print(f"[{part}] {line}", flush=True)

    summary = {
        "images": args.images,
        "zeroshot_images": args.zeroshot_images,
        "classes": args.classes,
        "threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else make_clip_folder(Path(tmp) / "vit-b-32", "vit-b-32")
        ref = load_reference()
        if "train" not in args.skip:
            summary.update(bench_training(model, args, ref, report))
        if "zeroshot" not in args.skip:
            summary.update(bench_zeroshot(model, args, ref, report))
    if args.compare_heads:
        summary["heads"] = compare_heads(args, report)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
