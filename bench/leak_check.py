"""The leak check's thresholds, false positives and cost, measured (``clipdemo/data/phash.py``).

    python bench/leak_check.py [--images 10000] [--encode 64] [--folder DIR ...]

1. Distances of true copies: every real photo (the repository's ``examples/`` and ``docs/*.png``, the photos
   Gradio and Matplotlib ship, any ``--folder``) and 200 built-in shapes, each re-saved as JPEG at quality 95, 75,
   50 and 40, halved, quartered (JPEG 75) and PNG -> JPEG; the hash distance (bits) and colour distance (0..255)
   of each copy to its original.
2. Distances of distinct images: every pair of the real photos plus 48 non-overlapping crops of them (distinct
   pictures with the same statistics: the hard case), and every pair of the 1,980 built-in shapes (a class's
   images are alike by design). Prints the closest pairs by name, and how many pairs the thresholds flag.
3. Cost on ``--images`` distinct photo-like JPEGs of 500 x 375 (a random smooth colour field each, textured by a
   random crop of a real photo; also a false-positive count at scale): looking at each once (cold), comparing
   them all against each other, and a warm re-check (the per-file memo), against encoding them with a randomly
   initialised ViT-B/32-shaped CLIP (timed on ``--encode`` of them, decoding included, and scaled): the check
   must stay a small fraction of encoding.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clipdemo.data import phash  # noqa: E402
from clipdemo.data.phash import Looks, first_matches, look  # noqa: E402


def real_photos(extra) -> list[Path]:
    import gradio
    import matplotlib

    found = [*sorted((ROOT / "examples").glob("*.jpg")), *sorted((ROOT / "docs").glob("*.png"))]
    found += sorted((Path(gradio.__file__).parent / "media_assets" / "images").glob("*.jp*g"))
    found += sorted((Path(matplotlib.__file__).parent / "mpl-data" / "sample_data").glob("*.jpg"))
    for folder in extra:
        found += sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return found


def encoded(image: Image.Image, fmt: str = "JPEG", quality: int = 75, scale: float = 1.0) -> bytes:
    if scale != 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


COPIES = {
    "jpeg95": dict(quality=95),
    "jpeg75": dict(quality=75),
    "jpeg50": dict(quality=50),
    "jpeg40": dict(quality=40),
    "half": dict(scale=0.5),
    "quarter": dict(scale=0.25),
}


def distances(a: tuple, b: tuple) -> tuple[int, float]:
    if a[1] is None or b[1] is None:
        return -1, -1.0
    bits = int(np.bitwise_count(np.uint64(a[1]) ^ np.uint64(b[1])))
    colour = float(np.abs(np.frombuffer(a[2], np.uint8).astype(int) - np.frombuffer(b[2], np.uint8)).mean())
    return bits, colour


def copies_section(originals: dict[str, bytes]) -> None:
    print(f"\n## 1. True copies ({len(originals)} originals x {len(COPIES) + 1} re-encodes)")
    worst_bits, worst_colour, rows = 0, 0.0, {}
    for name, data in originals.items():
        image = Image.open(io.BytesIO(data)).convert("RGB")
        base = look(data)
        variants = {k: encoded(image, **v) for k, v in COPIES.items()}
        if name.endswith(".png"):
            variants["png->jpeg"] = encoded(image, "JPEG", 90)
        for kind, copy in variants.items():
            if min(image.size) * COPIES.get(kind, {}).get("scale", 1.0) < 32:
                kind = "under 32px"  # out of reach (module docstring of clipdemo/data/phash.py), shown apart
            bits, colour = distances(base, look(copy))
            rows.setdefault(kind, []).append((bits, colour))
            if kind != "under 32px":
                worst_bits, worst_colour = max(worst_bits, bits), max(worst_colour, colour)
    for kind, values in rows.items():
        bits = [b for b, _ in values]
        print(
            f"{kind:10s} n={len(values):4d}  bits: median {np.median(bits):.0f}, max {max(bits)}   "
            f"colour: max {max(c for _, c in values):.2f}   "
            f"histogram of bits {np.bincount(bits, minlength=8)[:12].tolist()}"
        )
    print(f"worst copy of at least 32 px: {worst_bits} bits, colour {worst_colour:.2f}")


def pair_stats(title: str, named: dict[str, tuple]) -> None:
    names = [n for n, r in named.items() if r[1] is not None]
    looks = Looks.of_rows(names, [named[n] for n in names])
    h = looks.hashes
    bits = np.concatenate([np.bitwise_count(h[i] ^ h[i + 1 :]) for i in range(len(h) - 1)]) if len(h) > 1 else []
    print(f"\n## 2. Distinct images: {title} ({len(names)} images, {len(bits)} pairs)")
    if not len(bits):
        return
    print(f"bits: min {bits.min()}, 0.1th percentile {np.percentile(bits, 0.1):.0f}, median {np.median(bits):.0f}")
    print(f"histogram of bits 0..20: {np.bincount(bits, minlength=21)[:21].tolist()}")
    near = [
        (i, j) for i, j in combinations(range(len(names)), 2) if np.bitwise_count(h[i] ^ h[j]) <= phash.MAX_DISTANCE
    ]
    colours = [distances(named[names[i]], named[names[j]])[1] for i, j in near]
    print(
        f"pairs within {phash.MAX_DISTANCE} bits: {len(near)}; "
        f"their least colour distance: {min(colours, default=0):.2f}"
    )
    closest = sorted(combinations(range(len(names)), 2), key=lambda p: int(np.bitwise_count(h[p[0]] ^ h[p[1]])))
    for i, j in closest[: 3 if len(names) > 40 else 2]:
        b, c = distances(named[names[i]], named[names[j]])
        print(f"  closest: {names[i]} ~ {names[j]}: {b} bits, colour {c:.1f}")
    flagged = int((first_matches(looks, looks, earlier_only=True) >= 0).sum())
    print(f"flagged as copies at MAX_DISTANCE={phash.MAX_DISTANCE}, MAX_COLOUR={phash.MAX_COLOUR}: {flagged}")


def crops(photos: dict[str, bytes], per_photo: int) -> dict[str, bytes]:
    """Non-overlapping tiles of each large photo: distinct pictures with the photo's statistics."""
    out = {}
    for name, data in photos.items():
        image = Image.open(io.BytesIO(data)).convert("RGB")
        side = min(image.size) // 2
        if side < 96:
            continue
        tiles = [
            (x, y) for x in range(0, image.width - side + 1, side) for y in range(0, image.height - side + 1, side)
        ]
        for k, (x, y) in enumerate(tiles[:per_photo]):
            out[f"{name}#tile{k}"] = encoded(image.crop((x, y, x + side, y + side)), "PNG")
    return out


def make_photos(folder: Path, photos: dict[str, bytes], n: int, seed: int = 0) -> list[Path]:
    """``n`` distinct 500 x 375 JPEGs: a seeded random smooth colour field (its own picture) over which a random
    crop of a real photo lends its texture (35%); so they decode like photos and no two are the same picture."""
    rng = np.random.default_rng(seed)
    sources = [Image.open(io.BytesIO(d)).convert("RGB") for d in photos.values()]
    paths = []
    for i in range(n):
        image = sources[i % len(sources)]
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.4, 0.9)), int(h * rng.uniform(0.4, 0.9))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        texture = np.asarray(image.crop((x, y, x + cw, y + ch)).resize((500, 375), Image.BILINEAR), np.float32)
        field = Image.fromarray(rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)).resize((500, 375), Image.BICUBIC)
        pixels = 0.65 * np.asarray(field, np.float32) + 0.35 * texture
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=85)
        paths.append(path)
    return paths


def cost_section(photos: dict[str, bytes], n: int, n_encode: int) -> None:
    from clipdemo.encoders import load_encoder
    from clipdemo.images import load_image
    from clipdemo.testing import make_clip_folder

    print(f"\n## 3. Cost on {n} distinct images (500 x 375 JPEGs)")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photos(Path(tmp), photos, n)
        phash._memo.clear()
        t0 = time.perf_counter()
        rows = [look(p) for p in paths]
        t_look = time.perf_counter() - t0
        looks = Looks.of_rows([p.name for p in paths], rows)
        t0 = time.perf_counter()
        flagged = int((first_matches(looks, looks, earlier_only=True) >= 0).sum())
        t_match = time.perf_counter() - t0
        t0 = time.perf_counter()
        [look(p) for p in paths]
        t_warm = time.perf_counter() - t0
        encoder = load_encoder(str(make_clip_folder(Path(tmp) / "clip", "vit-b-32")), device="cpu")
        sample = paths[:n_encode]
        encoder.encode_images([load_image(p) for p in sample[:4]])  # warm-up (an ONNX export, if that engine)
        t0 = time.perf_counter()
        for i in range(0, len(sample), 16):
            encoder.encode_images([load_image(p) for p in sample[i : i + 16]])
        t_encode = (time.perf_counter() - t0) / len(sample) * n
    print(f"look at each image (cold): {t_look:.1f} s ({1000 * t_look / n:.2f} ms/image)")
    print(f"compare all {n} against each other: {t_match:.2f} s; flagged as copies: {flagged}")
    print(f"warm re-check (memo): {t_warm:.2f} s")
    print(
        f"encoding with a ViT-B/32-shaped CLIP ({encoder.describe()}), {n_encode} timed and scaled: {t_encode:.0f} s "
        f"({1000 * t_encode / n:.1f} ms/image)"
    )
    print(
        f"the leak check, cold, is {100 * (t_look + t_match) / t_encode:.1f}% of encoding; "
        f"warm {100 * t_warm / t_encode:.2f}%"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--encode", type=int, default=64, help="images actually encoded for the encoding time")
    parser.add_argument("--folder", action="append", default=[], help="more real photos (any depth)")
    args = parser.parse_args(argv)
    from clipdemo.data.shapes import shapes_dataset

    photos = {p.name: p.read_bytes() for p in real_photos(args.folder)}
    shapes = shapes_dataset()
    shape_bytes = {
        f"{split}/{shapes.class_names[label]}/{i}": ref
        for split, s in shapes.splits.items()
        for i, (ref, label) in enumerate(zip(s.images, s.labels))
    }
    print(f"thresholds: MAX_DISTANCE={phash.MAX_DISTANCE} bits of 64, MAX_COLOUR={phash.MAX_COLOUR}, FLAT={phash.FLAT}")
    copies_section({**photos, **dict(list(shape_bytes.items())[::10][:200])})
    distinct = {**photos, **crops(photos, 4)}
    pair_stats("real photos and their non-overlapping tiles", {n: look(d) for n, d in distinct.items()})
    pair_stats("the built-in shapes, every split", {n: look(d) for n, d in shape_bytes.items()})
    cost_section(photos, args.images, args.encode)


if __name__ == "__main__":
    main()
