"""Data sources as adapters: each yields an ``ImageDataset`` of (image, class index) splits plus class names.

An image reference is anything ``clipdemo.images.load_image`` accepts (a path or encoded bytes), so images
are decoded lazily, by the one safe loader, and only where needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ImageRef = str | Path | bytes


@dataclass
class Split:
    images: list[ImageRef]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageDataset:
    class_names: list[str]
    splits: dict[str, Split]  # "train", optionally "validation", "test"
    source: str  # what a card and the UI show, e.g. "folder:/data/pets" or "hf:fcakyon/pokemon-classification:mini"
    fingerprint: str  # changes when the data changes; part of feature-cache keys
    notes: list[str] = field(default_factory=list)  # e.g. overlap warnings, skipped unreadable files
