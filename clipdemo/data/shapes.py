"""The built-in offline dataset: seeded, procedurally drawn coloured shapes ("a red triangle").

Thirty classes, ``<colour> <shape>`` for 6 colours x 5 shapes. Each image is 64 px with a random
position, size, rotation, colour jitter and a noisy gradient background, so a model must learn colour and
shape rather than memorise pixels. Six colour-shape combinations (``HELD_OUT``, one per colour, every
shape at least once) never appear in ``train``, ``validation`` or ``test``; they live only in a fourth
split, ``unseen``, so zero-shot classification of a combination the model has never seen can be shown
(its words were seen, only not together).

Layout written by ``make_shapes(out_dir)`` (1,980 PNGs, about 6 MB with the defaults)::

    train/<class>/0000.png        24 seen classes x 60
    validation/<class>/0000.png   24 seen classes x 10
    test/<class>/0000.png         24 seen classes x 10
    unseen/<class>/0000.png        6 held-out classes x 10
    shapes.json                   seed, classes, held-out combinations

``shapes_dataset(seed)`` builds the same images (identical bytes) in memory, for tests. Every image is a
pure function of (seed, split, class, index), so the splits never share an image.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clipdemo.atomic import write_folder_atomic
from clipdemo.data import DataError, ImageDataset, Split

VERSION = 1  # bump when the drawing changes: it is part of the fingerprint
COLOURS = {
    "red": (214, 40, 40),
    "green": (46, 160, 67),
    "blue": (40, 90, 220),
    "yellow": (240, 200, 30),
    "purple": (140, 64, 190),
    "orange": (245, 130, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
CLASS_NAMES = [f"{c} {s}" for c in COLOURS for s in SHAPES]
HELD_OUT = ("red star", "green cross", "blue circle", "yellow square", "purple triangle", "orange star")
SEEN = [n for n in CLASS_NAMES if n not in HELD_OUT]
SPLIT_SIZES = {"train": 60, "validation": 10, "test": 10, "unseen": 10}  # images per class
SPLITS = tuple(SPLIT_SIZES)
_SS = 4  # supersampling factor for anti-aliased edges
RADIUS = (0.28, 0.42)  # shape "radius" as a fraction of the image side


def _sizes(per_class) -> dict[str, int]:
    """``None``: the defaults; an int n: n train images per class and max(2, n // 4) for the others."""
    if per_class is None:
        return dict(SPLIT_SIZES)
    if isinstance(per_class, int):
        other = max(2, per_class // 4)
        return {"train": per_class, "validation": other, "test": other, "unseen": other}
    return {**SPLIT_SIZES, **per_class}


def _outline(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape of 'radius' r centred on (cx, cy), rotated by angle (radians)."""
    if shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    elif shape == "star":
        pts = [
            ((1.0 if k % 2 == 0 else 0.42) * math.cos(a), (1.0 if k % 2 == 0 else 0.42) * math.sin(a))
            for k, a in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)
        ]
    elif shape == "cross":
        t = 0.34
        pts = [
            (t, 1),
            (-t, 1),
            (-t, t),
            (-1, t),
            (-1, -t),
            (-t, -t),
            (-t, -1),
            (t, -1),
            (t, -t),
            (1, -t),
            (1, t),
            (t, t),
        ]
    else:
        raise ValueError(shape)
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def render(colour: str, shape: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One RGB image of a ``colour`` ``shape`` drawn with randomness from ``rng``."""
    big = size * _SS
    # background: a muted two-colour gradient in a random direction, never close to a shape colour
    a, b = rng.integers(90, 200, 3), rng.integers(90, 200, 3)
    a = a * 0.35 + a.mean() * 0.65  # desaturate
    b = b * 0.35 + b.mean() * 0.65
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    t = ((xx - 0.5) * math.cos(theta) + (yy - 0.5) * math.sin(theta) + 0.5).clip(0, 1)[..., None]
    bg = a * (1 - t) + b * t
    image = Image.fromarray(bg.astype(np.uint8)).resize((big, big), Image.NEAREST)
    # the shape: jittered colour, random radius, position and rotation
    rgb = np.clip(np.array(COLOURS[colour]) * rng.uniform(0.8, 1.1) + rng.normal(0, 12, 3), 0, 255)
    r = rng.uniform(*RADIUS) * big
    cx, cy = rng.uniform(r, big - r, 2)
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in rgb))
    else:
        draw.polygon(_outline(shape, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=tuple(int(v) for v in rgb))
    image = image.resize((size, size), Image.BOX)
    # smooth, blotchy grey noise: texture for the model to ignore that PNG still compresses well
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    noisy = np.asarray(image, dtype=np.int16) + (np.asarray(coarse, dtype=np.int16)[..., None] - 128) // 8
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _generate(seed: int, sizes: dict[str, int], size: int):
    """Yield (split, class name, index, PNG bytes), deterministically."""
    for s, split in enumerate(SPLITS):
        names = HELD_OUT if split == "unseen" else SEEN
        for name in names:
            colour, shape = name.split()
            for i in range(sizes[split]):
                # one generator per image: the image depends on nothing but (seed, split, class, i)
                rng = np.random.default_rng([seed, s, CLASS_NAMES.index(name), i])
                yield split, name, i, _png(render(colour, shape, rng, size))


def _fingerprint(seed: int, sizes: dict[str, int], size: int) -> str:
    key = json.dumps({"v": VERSION, "seed": seed, "sizes": sizes, "size": size}, sort_keys=True)
    return "shapes-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _notes() -> list[str]:
    return [
        f"Built-in shapes data: {len(HELD_OUT)} colour-shape combinations ({', '.join(HELD_OUT)}) never appear "
        "in train/validation/test; the 'unseen' split holds them to show zero-shot on unseen combinations."
    ]


def shapes_dataset(seed: int = 0, per_class=None, size: int = 64) -> ImageDataset:
    """The built-in dataset in memory (PNG bytes); nothing touches the disk.

    ``class_names`` lists all 30 classes (the held-out ones too, so a classifier can name them);
    the splits are ``train``, ``validation``, ``test`` (seen classes) and ``unseen`` (held-out ones).
    """
    sizes = _sizes(per_class)
    splits = {name: Split(images=[], labels=[]) for name in SPLITS}
    for split, name, _, data in _generate(seed, sizes, size):
        splits[split].images.append(data)
        splits[split].labels.append(CLASS_NAMES.index(name))
    return ImageDataset(
        class_names=list(CLASS_NAMES),
        splits=splits,
        source=f"builtin:shapes (seed {seed})",
        fingerprint=_fingerprint(seed, sizes, size),
        notes=_notes(),
    )


def make_shapes(out_dir, seed: int = 0, per_class=None, size: int = 64) -> Path:
    """Write the built-in dataset as an image folder (layout in the module docstring); return its path.

    ``out_dir`` must be new or empty (``DataError`` otherwise: nothing there is overwritten or mixed in). The
    images go into a hidden sibling first, renamed into place when complete: never half a dataset.
    """
    out = Path(out_dir)
    if os.path.lexists(out) and not (out.is_dir() and not out.is_symlink() and not any(out.iterdir())):
        what = "a folder that is not empty" if out.is_dir() else "a file"
        raise DataError(f"'{out}' is {what}; demo-data writes only into a new or empty folder.")
    sizes = _sizes(per_class)

    def fill(tmp: Path) -> None:
        for split, name, i, data in _generate(seed, sizes, size):
            folder = tmp / split / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:04d}.png").write_bytes(data)
        manifest = {
            "dataset": "clipdemo built-in shapes",
            "version": VERSION,
            "seed": seed,
            "image_size": size,
            "images_per_class": sizes,
            "classes": CLASS_NAMES,
            "held_out": list(HELD_OUT),
            "fingerprint": _fingerprint(seed, sizes, size),
            "notes": _notes(),
        }
        (tmp / "shapes.json").write_text(json.dumps(manifest, indent=2))

    write_folder_atomic(out, fill)  # os.rename replaces only an empty folder: one filled meanwhile makes this fail
    return out
