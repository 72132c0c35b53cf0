"""Images whose tiny random CLIP embeddings separate: solid, distinct colours with pixel noise (each seed differs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"apple": (220, 40, 40), "leaf": (40, 200, 60), "sky": (40, 60, 220), "sun": (235, 215, 40)}


def colour_image(name: str, seed: int, size: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.array(COLOURS[name])[None, None] + rng.normal(0, 25, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def colour_folder(root: Path, classes=("apple", "leaf", "sky"), per_class: int = 4, seed: int = 0) -> Path:
    """``root/<class>/<i>.png``: a flat image folder of ``per_class`` noisy images per colour class."""
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour_image(name, seed + 100 * k + i).save(root / name / f"{name}_{i}.png")
    return root
