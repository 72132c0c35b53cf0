"""Scratch CLIP training: throughput against the tutorial's code, and held-out accuracy per CPU-second.

    python bench/scratch_train.py                      # both parts, about 15 min on 2 busy cores
    python bench/scratch_train.py --part throughput    # seed preset vs the tutorial's code
    python bench/scratch_train.py --part accuracy --budget 120 --data shapes digits
    python bench/scratch_train.py --part accuracy --budget 60 --peers default default-plain-loss logreg
    python bench/scratch_train.py --part accuracy --data /path/to/image_folder     # your own small images
    python bench/scratch_train.py --part accuracy --candidates   # the presets we weighed for "default"

Part 1 (throughput): the same images (the built-in shapes' train split, resized once to 128 px), the
same epochs and batch size, trained by our ``seed`` preset (``train_scratch``) and by the tutorial's code
(``../shared/reference/seed_scratch_clip.py``, loaded by path, skipped with a message when absent).
One-time work (decoding, resizing) is excluded for both and so is our per-epoch validation; each side
is run ``--repeats`` times, interleaved, and the medians of samples/s are compared (target >= 3x).

Part 2 (accuracy per CPU-second): each contender trains for the same wall-clock budget, then its held-out
zero-shot top-1 is measured; the process CPU time it used is reported next to it. Contenders (``--peers``):
our ``default`` preset, the same preset with the plain CLIP loss it had before multi-positive targets
(``default-plain-loss``: before/after), scikit-learn's ``LogisticRegression`` on the raw pixels (``logreg``,
C picked on the same validation split; it needs a few seconds of the budget), our ``seed`` preset, and the
tutorial's code (its own loop, for as many epochs as a one-epoch
probe says fit in the budget, evaluated the tutorial's way: one caption "An image of a {name}" per class,
last model, since it kept the lowest-loss one and on data this small that is about the last). Datasets:
``shapes`` (the built-in set) and ``digits`` (scikit-learn's 1,797 real handwritten 8x8 digits, upscaled,
class names "zero".."nine": a small real-world image set that needs no download).

Both parts pin torch to ``--threads`` threads (default 1: on cores shared with other jobs two threads
fight each other and timings swing wildly) and report CPU seconds as well as wall seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipdemo.data import ImageDataset, Split
from clipdemo.data.shapes import shapes_dataset
from clipdemo.data.sources import load_source
from clipdemo.features import encode_split
from clipdemo.scratch.encoder import PixelEncoder
from clipdemo.scratch.train import train_scratch

REFERENCE = ROOT.parent / "shared" / "reference" / "seed_scratch_clip.py"
warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")


def load_reference():
    """The tutorial's code as a module, or None (with a message) when the file is not there."""
    if not REFERENCE.is_file():
        print(f"[skip] tutorial peer: {REFERENCE} not found; only our presets are measured.")
        return None
    spec = importlib.util.spec_from_file_location("seed_scratch_clip", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digits_dataset(seed: int = 0, size: int = 32) -> ImageDataset:
    """scikit-learn's handwritten digits as RGB PNGs, stratified 60/20/20 into train/validation/test."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    images = []
    for x in d.images:
        im = Image.fromarray((255 - x * 255 / 16).astype(np.uint8)).resize((size, size), Image.BILINEAR).convert("RGB")
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        images.append(buf.getvalue())
    idx = np.arange(len(images))
    train, rest = train_test_split(idx, test_size=0.4, stratify=d.target, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=d.target[rest], random_state=seed)
    splits = {
        k: Split([images[i] for i in v], [int(d.target[i]) for i in v])
        for k, v in (("train", train), ("validation", val), ("test", test))
    }
    return ImageDataset(names, splits, "sklearn:digits", f"digits-{seed}-{size}")


DATASETS = {"shapes": lambda: shapes_dataset(0), "digits": digits_dataset}


def cpu_time() -> float:
    return time.process_time()


# --- part 1: throughput ----------------------------------------------------------------------------------


def reference_items(dataset: ImageDataset, size: int = 128):
    """(float image [3, 128, 128], class name) pairs, the input the tutorial's loop takes."""
    cached = decoded(dataset.splits["train"], size)
    return [(cached.features[i].float() / 255, dataset.class_names[int(cached.labels[i])]) for i in range(len(cached))]


def decoded(split: Split, size: int):
    """uint8 pixels [N, 3, size, size] and labels of a split's readable images, as our trainer reads them."""
    return encode_split(PixelEncoder(size), split, batch_size=256, progress=lambda event: None)


def time_reference(ref, items, epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = ref.CLIP(**ref.SEED_HP)
    w, c = time.perf_counter(), cpu_time()
    ref.seed_train(model, items, epochs=epochs, seed=seed)
    w, c = time.perf_counter() - w, cpu_time() - c
    return {"per_s": len(items) * epochs / w, "per_cpu_s": len(items) * epochs / c, "wall": w, "cpu": c}


def time_ours(dataset: ImageDataset, epochs: int, seed: int, out: Path) -> dict:
    w, c = time.perf_counter(), cpu_time()
    m = train_scratch(dataset, out, preset="seed", epochs=epochs, seed=seed, eval_every=epochs)
    return {
        "per_s": m.run["train_samples_per_s"],
        "per_cpu_s": m.run["train_samples_per_cpu_s"],
        "wall": time.perf_counter() - w,
        "cpu": cpu_time() - c,
    }


def part_throughput(args, ref, out: Path) -> dict:
    dataset = shapes_dataset(0)
    n = len(dataset.splits["train"])
    print(
        f"\n== throughput: seed preset vs the tutorial's code, shapes train split ({n} images, 128 px, "
        f"batch 1024), {args.epochs} epochs x {args.repeats} runs, {torch.get_num_threads()} thread(s)"
    )
    items = reference_items(dataset) if ref else None
    runs = {"ours": [], "tutorial": []}
    for r in range(args.repeats):
        runs["ours"].append(time_ours(dataset, args.epochs, r, out / "throughput"))
        if ref:
            runs["tutorial"].append(time_reference(ref, items, args.epochs, r))
        for who in runs:
            if runs[who]:
                x = runs[who][-1]
                print(
                    f"  {who:8s} run {r}: {x['per_s']:7.1f} samples/s, {x['per_cpu_s']:7.1f} samples/CPU-s "
                    f"(whole call {x['wall']:.1f} s wall, {x['cpu']:.1f} s CPU)"
                )
    result = {}
    for who, rs in runs.items():
        if rs:
            result[who] = {k: statistics.median(x[k] for x in rs) for k in ("per_s", "per_cpu_s")}
    line = f"  median: ours {result['ours']['per_s']:.1f} samples/s ({result['ours']['per_cpu_s']:.1f} per CPU-s)"
    if "tutorial" in result:
        result["ratio"] = result["ours"]["per_s"] / result["tutorial"]["per_s"]
        result["ratio_cpu"] = result["ours"]["per_cpu_s"] / result["tutorial"]["per_cpu_s"]
        line += (
            f", tutorial {result['tutorial']['per_s']:.1f} ({result['tutorial']['per_cpu_s']:.1f} per CPU-s); "
            f"ratio {result['ratio']:.2f}x wall, {result['ratio_cpu']:.2f}x CPU (target >= 3x)"
        )
    print(line)
    return result


# --- part 2: accuracy per CPU-second ---------------------------------------------------------------------


@torch.no_grad()
def reference_accuracy(ref, model, dataset: ImageDataset, split: str) -> float:
    """The tutorial's evaluation: one caption per class, its tokenizer and [C, T, T] mask, argmax."""
    cached = decoded(dataset.splits[split], 128)
    caps = [ref.tokenizer(f"An image of a {name}") for name in dataset.class_names]
    text = torch.stack([c[0] for c in caps])
    mask = torch.stack([c[1].repeat(len(c[1]), 1) for c in caps])
    text_features = model.text_encoder(text, mask=mask)
    correct = 0
    for i in range(0, len(cached), 256):
        feats = model.image_encoder(cached.features[i : i + 256].float() / 255)
        correct += int(((feats @ text_features.T).argmax(1) == cached.labels[i : i + 256]).sum())
    return correct / len(cached)


def reference_run(ref, dataset: ImageDataset, budget: float, seed: int) -> dict:
    """The tutorial's loop, one call, for as many epochs as fit in ``budget`` (timed on a three-epoch probe
    with a throwaway model: a one-epoch probe is dominated by warm-up and gave it a third of the budget);
    then the tutorial's evaluation on the test split."""
    items = reference_items(dataset)
    torch.manual_seed(seed)
    w = time.perf_counter()
    ref.seed_train(ref.CLIP(**ref.SEED_HP), items, epochs=3, seed=seed)
    epochs = max(1, int(3 * budget / (time.perf_counter() - w)))
    torch.manual_seed(seed)
    model = ref.CLIP(**ref.SEED_HP)
    c = cpu_time()
    ref.seed_train(model, items, epochs=epochs, seed=seed)
    cpu = cpu_time() - c
    return {"acc1": reference_accuracy(ref, model, dataset, "test"), "cpu_s": cpu, "epochs": epochs}


def ours_run(
    dataset: ImageDataset, preset: str, budget: float, seed: int, out: Path, overrides=None, epochs: int | None = None
) -> dict:
    """Train for ``budget`` wall seconds, or for ``epochs`` (the same work for every contender) when given."""
    c = cpu_time()
    m = train_scratch(
        dataset,
        out,
        preset=preset,
        max_seconds=None if epochs else budget,
        epochs=epochs,
        seed=seed,
        overrides=overrides,
    )
    unseen = m.extra.get("unseen")
    return {
        "acc1": m.metrics.acc1,
        "cpu_s": cpu_time() - c,
        "epochs": m.run["epochs_run"],
        "steps": m.run["steps"],
        "unseen_acc1": unseen.acc1 if unseen else None,
    }


def logreg_run(dataset: ImageDataset, budget: float, seed: int, size: int = 32) -> dict:
    """scikit-learn's LogisticRegression (L-BFGS) on the raw pixels (``size`` px, as the default preset sees them,
    standardised), C picked on the same validation split train_scratch uses from a log-spaced grid, searched
    until the grid or the CPU budget runs out; then the test split is scored."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from clipdemo.data.splits import plan_splits
    from clipdemo.features import encode_plan
    from clipdemo.scratch.encoder import PixelEncoder

    c0 = cpu_time()
    plan = plan_splits(dataset, seed=seed)
    parts = encode_plan(plan, PixelEncoder(size), batch_size=256, progress=lambda event: None).rows
    train, val, test = parts["train"], parts["validation"], parts["evaluation"]
    flat = lambda split: split.features.reshape(len(split), -1).numpy().astype(np.float64) / 255
    scaler = StandardScaler().fit(flat(train))
    xs = {k: scaler.transform(flat(s)) for k, s in (("train", train), ("val", val), ("test", test))}
    best = (-1.0, None)
    for C in np.logspace(-4, 1, 6):
        clf = LogisticRegression(C=C, max_iter=1000).fit(xs["train"], train.labels.numpy())
        acc = clf.score(xs["val"], val.labels.numpy())
        best = max(best, (acc, clf), key=lambda b: b[0])
        if cpu_time() - c0 > budget:
            break
    return {
        "acc1": float(best[1].score(xs["test"], test.labels.numpy())),
        "cpu_s": cpu_time() - c0,
        "epochs": 0,
        "C": float(best[1].C),
    }


CANDIDATES = {  # what we weighed for "default" (bench --candidates); the winner became PRESETS["default"]
    "default": {},
    "patchify-stem": {"stem": "patchify"},
    "64px-patch16": {"image_size": 64, "patch_size": 16},
    "wider-96x3": {"vision_width": 96, "vision_layers": 3, "text_width": 96, "embed_dim": 96},
    "augment": {"augment": True},
    "batch-256": {"batch_size": 256},
}


def part_accuracy(args, ref, out: Path) -> dict:
    results = {}
    for name in args.data:
        dataset = DATASETS[name]() if name in DATASETS else load_source(name)
        n_classes = len(dataset.class_names)
        after = f"{args.run_epochs} epochs" if args.run_epochs else f"{args.budget:.0f} s wall"
        print(
            f"\n== held-out accuracy after {after} per run: {name} "
            f"({len(dataset.splits['train'])} train images, {n_classes} classes, chance {1 / n_classes:.1%}), "
            f"{torch.get_num_threads()} thread(s)"
        )
        peers = {
            "default": ("default", None),
            "default-plain-loss": ("default", {"loss": "clip"}),
            "seed": ("seed", None),
        }
        contenders = (
            {f"candidate {k}": ("default", v) for k, v in CANDIDATES.items()}
            if args.candidates
            else {f"ours {p}": peers[p] for p in args.peers if p in peers}
        )
        rows = {}
        for label, (preset, overrides) in contenders.items():
            runs = [
                ours_run(dataset, preset, args.budget, seed, out / "acc", overrides, args.run_epochs)
                for seed in range(args.seeds)
            ]
            rows[label] = {
                **{k: statistics.mean(r[k] for r in runs) if runs[0][k] is not None else None for k in runs[0]},
                "per_seed": [round(r["acc1"], 4) for r in runs],
            }
        if "logreg" in args.peers and not args.candidates:
            rows["sklearn logreg, raw pixels"] = logreg_run(dataset, args.budget, 0)
        if ref and "tutorial" in args.peers and not args.candidates:
            rows["tutorial"] = reference_run(ref, dataset, args.budget, 0)
        for label, r in rows.items():
            extra = f", unseen combos {r['unseen_acc1']:.1%}" if r.get("unseen_acc1") is not None else ""
            how = f"C={r['C']:g}" if "C" in r else f"{r['epochs']:g} epochs"
            if len(r.get("per_seed", ())) > 1:
                extra += f"; mean of seeds {', '.join(f'{a:.1%}' for a in r['per_seed'])}"
            print(
                f"  {label:28s} test acc1 {r['acc1']:6.1%}  CPU {r['cpu_s']:6.1f} s  "
                f"acc/CPU-min {60 * r['acc1'] / r['cpu_s']:.3f}  ({how}{extra})"
            )
        if "ours default" in rows and "sklearn logreg, raw pixels" in rows:
            a, b = rows["ours default"]["acc1"], rows["sklearn logreg, raw pixels"]["acc1"]
            print(
                f"  default preset vs logistic regression on pixels: {a:.1%} vs {b:.1%} "
                f"({'at least matches' if a >= b else 'BELOW'})"
            )
        if "ours default" in rows and "ours default-plain-loss" in rows:
            a, b = rows["ours default"]["acc1"], rows["ours default-plain-loss"]["acc1"]
            print(f"  multi-positive loss vs the plain CLIP loss, same preset and budget: {a:.1%} vs {b:.1%}")
        results[name] = rows
    return results


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["throughput", "accuracy", "all"], default="all")
    p.add_argument("--epochs", type=int, default=3, help="epochs per throughput run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=120.0, help="wall seconds per accuracy run")
    p.add_argument(
        "--data",
        nargs="+",
        default=["shapes", "digits"],
        help="'shapes', 'digits', or any source train scratch takes (an image folder, a HF dataset id)",
    )
    p.add_argument("--candidates", action="store_true", help="compare the candidate default presets instead")
    p.add_argument(
        "--run-epochs",
        type=int,
        default=None,
        help="train our contenders for this many epochs instead of --budget seconds (equal work: "
        "on a busy machine wall-clock budgets give unequal CPU)",
    )
    p.add_argument(
        "--peers",
        nargs="+",
        default=["default", "default-plain-loss", "logreg", "seed", "tutorial"],
        help="accuracy contenders: default, default-plain-loss (the loss before multi-positive targets), "
        "logreg (scikit-learn on raw pixels), seed, tutorial",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="accuracy: train our contenders with seeds 0..N-1 and "
        "report the mean (short budgets vary by several points from seed to seed)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "scratch")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref = load_reference()
    results = {}
    if args.part in ("throughput", "all"):
        results["throughput"] = part_throughput(args, ref, args.out)
    if args.part in ("accuracy", "all"):
        results["accuracy"] = part_accuracy(args, ref, args.out)
    print("\n" + json.dumps(results, default=float))
    return results


if __name__ == "__main__":
    main()
