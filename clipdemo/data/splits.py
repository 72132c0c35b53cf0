"""Splits that can be trusted: overlap detection by image hash, clean held-out splits, the tutorial's split.

Identical images are found by the sha1 of their encoded bytes (file contents), which is exact and cheap; a
re-encoded copy of an image is not caught, and that's fine for the duplicated splits we guard against
(Pokemon "mini" ships the same 70 files as train, validation and test).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import DataError, ImageDataset, ImageRef, Split, fingerprint

_hash_cache: dict[tuple, str] = {}  # (path, size, mtime) -> sha1, so a re-check doesn't re-read 16k files


def image_hash(ref: ImageRef) -> str:
    """sha1 of the image's encoded bytes (the file's contents for a path)."""
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return hashlib.sha1(ref).hexdigest()
    path = Path(ref)
    try:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in _hash_cache:
            _hash_cache[key] = hashlib.sha1(path.read_bytes()).hexdigest()
        return _hash_cache[key]
    except OSError as e:
        raise DataError(f"Image {path} can't be read to check for duplicates ({e.strerror or e}).") from e


def split_hashes(split: Split) -> list[str]:
    return [image_hash(ref) for ref in split.images]


def find_overlap(dataset: ImageDataset) -> dict[tuple[str, str], int]:
    """For each pair of splits (a, b), a before b in the order train, validation, test, …: how many of b's
    images are identical to an image of a. Every pair is present, zeros included."""
    names = _ordered(dataset.splits)
    hashes = {name: split_hashes(dataset.splits[name]) for name in names}
    sets = {name: set(h) for name, h in hashes.items()}
    return {
        (a, b): sum(h in sets[a] for h in hashes[b]) for i, a in enumerate(names) for b in names[i + 1 :]
    }


def subset(split: Split, indices) -> Split:
    """The rows of ``split`` at ``indices``, in that order."""
    return Split([split.images[i] for i in indices], [split.labels[i] for i in indices])


def stratified_split(split: Split, fraction: float, seed: int = 0) -> tuple[Split, Split]:
    """(train, held-out): ``fraction`` of each class held out, seeded.

    Per class, round(fraction * n) images, at least one and at most n - 1, so every class with two or more
    images is both trained on and evaluated; single-image classes stay in train. Both parts keep the
    original order.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
    labels = np.asarray(split.labels)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        k = min(max(int(np.floor(fraction * len(idx) + 0.5)), 1), len(idx) - 1)
        held.extend(rng.permutation(idx)[:k].tolist())
    held_set = set(held)
    return subset(split, [i for i in range(len(labels)) if i not in held_set]), subset(split, sorted(held))


def tutorial_split(split: Split, fraction: float = 0.05, random_state: int = 3, rounds: int = 1) -> tuple[Split, Split]:
    """(train, held-out) exactly as the Cars tutorial's ``train_test_split(data, test_size=0.05, random_state=3)``.

    scikit-learn's shuffle depends only on the row count and the seed, so splitting row indices picks the same
    rows as splitting the annotation array did; both parts come in its (shuffled) order. On the 8,144 train
    annotations one round holds out 408 images. The notebook's printed 7,349 / 387 come from running its split
    cell twice (8,144 -> 7,736 -> 7,349 + 387): ``rounds=2`` reproduces those exact images.
    """
    from sklearn.model_selection import train_test_split

    keep = np.arange(len(split))
    for _ in range(rounds):
        keep, held = train_test_split(keep, test_size=fraction, random_state=random_state)
    return subset(split, keep.tolist()), subset(split, held.tolist())


def clean_eval_split(dataset: ImageDataset, seed: int = 0, fraction: float = 0.2) -> tuple[ImageDataset, str]:
    """A dataset whose ``test`` split shares no image (by hash) with ``train``, and a note saying what was done.

    - test overlaps train a little (at most half of test): the duplicates are dropped from test;
    - test overlaps train a lot (Pokemon mini: all of it): all splits are pooled, de-duplicated by hash, and
      a seeded stratified held-out split (``fraction`` per class) becomes the test split;
    - no test split: one is carved out of train the same way;
    - no overlap: the dataset is returned as is, with an empty note.

    Validation images found in the new train or test are dropped too. Overlap notes start with "WARNING" and
    are appended to the returned dataset's ``notes``; the input dataset is not modified.
    """
    if "train" not in dataset.splits:
        raise DataError(f"{dataset.source} has no train split to hold images out of.")
    train, test = dataset.splits["train"], dataset.splits.get("test")
    tag = f"seed {seed}, {fraction:.0%} of each class"

    if test is None or len(test) == 0:
        new_train, new_test = _held_out(train, fraction, seed)
        note = (
            f"no test split: evaluating on a seeded held-out split of {len(new_test)} of {len(train)} "
            f"train images ({tag})."
        )
        return _rebuilt(dataset, new_train, new_test, note, seed, fraction)

    train_hashes = set(split_hashes(train))
    test_hashes = split_hashes(test)
    overlap = sum(h in train_hashes for h in test_hashes)
    if overlap == 0:
        return dataset, ""

    head = f"WARNING: test split overlaps train: {overlap} of {len(test)} test images are identical to train images"
    keep, seen = [], set(train_hashes)
    for i, h in enumerate(test_hashes):
        if h not in seen:
            keep.append(i)
            seen.add(h)
    if len(keep) * 2 >= len(test):
        new_train, new_test = train, subset(test, keep)
        note = f"{head}; they were removed, and evaluation uses the remaining {len(keep)} test images."
    else:
        pool, conflicts = _pool(dataset)
        new_train, new_test = _held_out(pool, fraction, seed)
        note = (
            f"{head}; evaluating on a seeded held-out split of {len(new_test)} of the {len(pool)} unique images "
            f"of all splits ({tag}) instead, so the original test scores are not comparable."
        )
        if conflicts:
            note += f" {conflicts} duplicated image(s) carried different labels; the first label was kept."
    return _rebuilt(dataset, new_train, new_test, note, seed, fraction)


def _held_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    train, held = stratified_split(split, fraction, seed)
    if len(held) == 0:
        # every class has a single image (Pokemon mini has ~1 per class): hold out a seeded random
        # sample instead; those classes are then unseen in training, which a zero-shot model can still rank
        n = len(split)
        if n < 2:
            raise DataError("Too few images to hold any out for evaluation.")
        k = min(max(int(np.floor(fraction * n + 0.5)), 1), n - 1)
        held_idx = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
        train = subset(split, [i for i in range(n) if i not in held_idx])
        held = subset(split, sorted(held_idx))
    return train, held


def _pool(dataset: ImageDataset) -> tuple[Split, int]:
    """All splits' images, each distinct one once (first occurrence), and how many duplicates disagreed on the label."""
    first: dict[str, int] = {}
    images, labels, conflicts = [], [], 0
    for name in _ordered(dataset.splits):
        split = dataset.splits[name]
        for ref, label, h in zip(split.images, split.labels, split_hashes(split)):
            if h in first:
                conflicts += labels[first[h]] != label
                continue
            first[h] = len(labels)
            images.append(ref)
            labels.append(label)
    return Split(images, labels), conflicts


def _rebuilt(dataset, train: Split, test: Split, note: str, seed: int, fraction: float) -> tuple[ImageDataset, str]:
    splits = {"train": train}
    validation = dataset.splits.get("validation")
    if validation is not None and len(validation):
        taken = set(split_hashes(train)) | set(split_hashes(test))
        keep = [i for i, h in enumerate(split_hashes(validation)) if h not in taken]
        if len(keep) < len(validation):
            dropped = len(validation) - len(keep)
            note = f"{note} validation: dropped {dropped} of {len(validation)} images also in train or test."
        if keep:
            splits["validation"] = subset(validation, keep)
    splits["test"] = test
    cleaned = replace(
        dataset,
        splits=splits,
        fingerprint=fingerprint(dataset.fingerprint, "clean_eval_split", seed, fraction),
        notes=[*dataset.notes, note],
    )
    return cleaned, note


def _ordered(names) -> list[str]:
    order = ("train", "validation", "test")
    return [s for s in order if s in names] + sorted(s for s in names if s not in order)
