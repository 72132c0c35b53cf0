"""Data sources as adapters: each yields an ``ImageDataset`` of (image, class index) splits plus class names.

An image reference is anything ``clipdemo.images.load_image`` accepts (a path or encoded bytes), so images
are decoded lazily, by the one safe loader, and only where needed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from clipdemo.errors import UserError

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


class DataError(UserError):
    """A data source can't be used; the message is fit to show a user and names the file at fault."""


def fingerprint(*parts) -> str:
    """A short stable digest of whatever identifies a dataset's content."""
    h = hashlib.sha1()
    for part in parts:
        h.update(repr(part).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:16]
