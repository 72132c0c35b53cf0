"""Write a miniature Stanford Cars devkit, in the original layout, for tests and benchmarks.

    from tests.minicars import write_minicars
    root = write_minicars(tmp_path / "cars", classes=4, per_class_train=6, per_class_test=3)

The .mat files are written with ``scipy.io.savemat`` as struct arrays with the real field names and shapes
(``annotations`` is 1 x N with bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname; ``class`` is 1-based;
``class_names`` is a 1 x K cell). Images are small JPEGs of a class-specific colour plus per-image noise, so
classes are separable and no two images are byte-identical.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

# The first classes of the real cars_meta.mat, so names look (and tokenize) like real ones.
REAL_NAMES = [
    "AM General Hummer SUV 2000",
    "Acura RL Sedan 2012",
    "Acura TL Sedan 2012",
    "Acura TL Type-S 2008",
    "Acura TSX Sedan 2012",
    "Acura Integra Type R 2001",
    "Acura ZDX Hatchback 2012",
    "Aston Martin V8 Vantage Convertible 2012",
    "Aston Martin V8 Vantage Coupe 2012",
    "Aston Martin Virage Convertible 2012",
    "Aston Martin Virage Coupe 2012",
    "Audi RS 4 Convertible 2008",
]
FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def class_names(classes: int) -> list[str]:
    return [REAL_NAMES[i] if i < len(REAL_NAMES) else f"Make Model {i + 1} Sedan 2012" for i in range(classes)]


def class_colour(label: int, classes: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(label / max(classes, 1), 0.9, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def write_minicars(
    root,
    classes: int = 4,
    per_class_train: int = 6,
    per_class_test: int = 3,
    seed: int = 0,
    size: int = 32,
    test_labels_in: str | None = "root",
) -> Path:
    """Write the devkit under ``root`` and return it. ``test_labels_in``: "root", "devkit" or None (no test labels)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    names = np.empty((1, classes), dtype=object)
    for i, name in enumerate(class_names(classes)):
        names[0, i] = name
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": names})

    train = _write_images(root / "cars_train", classes, per_class_train, rng, size)
    savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": annotations(train)})
    if per_class_test:
        test = _write_images(root / "cars_test", classes, per_class_test, rng, size)
        # the real devkit ships an unlabelled test file; the labels came later as a separate download
        savemat(root / "devkit" / "cars_test_annos.mat", {"annotations": annotations(test, with_class=False)})
        if test_labels_in:
            where = root if test_labels_in == "root" else root / "devkit"
            savemat(where / "cars_test_annos_withlabels.mat", {"annotations": annotations(test)})
    return root


def annotations(records: list[tuple[int, str, tuple]], with_class: bool = True) -> np.ndarray:
    """A 1 x N MATLAB struct array from (1-based class, fname, bbox) records, as in the real files."""
    fields = [f for f in FIELDS if with_class or f != "class"]
    arr = np.zeros((1, len(records)), dtype=[(f, object) for f in fields])
    for i, (cls, fname, (x1, y1, x2, y2)) in enumerate(records):
        values = {"bbox_x1": x1, "bbox_y1": y1, "bbox_x2": x2, "bbox_y2": y2}
        row = [np.array([[values[f]]], dtype=np.uint16) for f in fields[:4]]
        if with_class:
            row.append(np.array([[cls]], dtype=np.uint8))
        row.append(np.array([fname]))
        arr[0, i] = tuple(row)
    return arr


def _write_images(folder: Path, classes: int, per_class: int, rng, size: int) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    labels = rng.permutation(np.repeat(np.arange(classes), per_class))  # classes interleaved, as in the real files
    records = []
    for i, label in enumerate(labels):
        fname = f"{i + 1:05d}.jpg"
        base = np.array(class_colour(int(label), classes), dtype=np.int16)
        noise = rng.integers(-20, 21, size=(size, size, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / fname, quality=90)
        x1, y1 = (int(v) for v in rng.integers(0, size // 4, 2))
        records.append((int(label) + 1, fname, (x1, y1, size - 1, size - 1)))
    return records
