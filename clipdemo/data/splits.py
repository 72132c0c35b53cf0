"""The one split plan of every train and eval path: which images train, pick the model, and get scored.

``plan_splits(dataset, protocol, seed)`` returns a ``SplitPlan`` whose parts (``train``, ``validation``,
``evaluation``, and ``extra`` splits such as the built-in data's ``unseen``) are row indices into the
dataset's splits, so every consumer decodes or encodes a dataset split once, cached, and takes its rows.

Protocols:

- ``official`` (the default): the dataset's own splits. Validation is its ``validation`` split, or carved
  from train; evaluation is its ``test`` split, or carved from train too when it has none (said so).
- ``tutorial``: the Cars tutorial's ``train_test_split(test_size=0.05, random_state=3)`` on train, run twice
  as its notebook did: train on its 7,349, pick the model on the 408 the first run held out, score on the
  387 it reported (on the 8,144 Stanford Cars train images).

One hold-out rule carves every split we make (``holdout``): per class, ``round(fraction * n)`` images, at
least one and at most ``n - 1``, so every class with two or more images is both trained on and evaluated;
seeded; classes of one image stay in train.

The leak check runs on every plan, always. Images are compared by their pixels, not their bytes
(``clipdemo.data.phash``: a perceptual hash and a colour thumbnail, so a training photo re-saved as JPEG or
resized is still a copy; exact byte copies too), looked at once and cached (``dataset_looks``). Files that don't
decode are unreadable, never copies: they stay in their part, and the encoders skip, count and name them.
Evaluation images that are copies of a training or validation image, and validation images that are copies of
a training image, are dropped from those parts (the pairs are named: ``plan.pairs``, the card's ``pairs``); when
more than half of the evaluation images are copies (Pokemon "mini" ships the same 70 files as train, validation
and test), every split's distinct images are pooled and a seeded held-out split of them is scored instead. Either way
``plan.leak`` says what was found and done, in a line starting with "WARNING", which the CLI prints, the
result JSON carries and the checkpoint card records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from clipdemo.atomic import write_atomic

from . import DataError, ImageDataset, ImageRef, Split, fingerprint, phash
from .phash import Looks, first_matches

PROTOCOLS = ("tutorial", "official")  # a head's held-out split, the default first
VALIDATION_FRACTION = 0.1  # of each class of train, when the dataset has no validation split
TEST_FRACTION = 0.2  # of each class, when a test split must be carved (none given, or it leaked)
STANDARD_ORDER = ("train", "validation", "test")

_hash_cache: dict[tuple, str] = {}  # (path, size, mtime) -> sha1, so a re-check doesn't re-read 16k files


# --- identity of an image ----------------------------------------------------------------------------------


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
        raise DataError(f"Image {path} can't be read to check for duplicates ({e.strerror or e}).") from None


def split_hashes(split: Split) -> list[str]:
    return [image_hash(ref) for ref in split.images]


# --- the plan ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """Rows ``indices`` of the dataset split ``split``."""

    split: str
    indices: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class SplitPlan:
    dataset: ImageDataset  # what the parts index: the dataset, or a re-split copy when its test split leaked
    train: Part
    validation: Part  # picks the checkpoint, epoch or hyperparameters; never scored as held-out
    evaluation: Part  # the held-out metrics
    protocol: str
    seed: int
    description: str  # for the card and the CLI
    extra: dict[str, Part] = field(default_factory=dict)  # more evaluation-only splits (never trained on)
    leak: str = ""  # "WARNING: ..." when overlap was found (and what was done), else ""
    overlap: int = 0  # evaluation images that were copies of training images
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (copy, original) names, the first MAX_PAIRS

    @property
    def eval_name(self) -> str:
        return self.evaluation.split if self.evaluation.split != "train" else "held-out"

    def parts(self) -> dict[str, Part]:
        return {"train": self.train, "validation": self.validation, "evaluation": self.evaluation, **self.extra}

    def card(self) -> dict:
        """What a checkpoint card records of the plan (enough for ``eval`` to rebuild it)."""
        return {
            "protocol": self.protocol,
            "seed": self.seed,
            "description": self.description,
            "leak": self.leak,
            "pairs": [list(p) for p in self.pairs],
            "sizes": {name: len(part) for name, part in self.parts().items()},
        }


def plan_splits(dataset: ImageDataset, protocol: str = "official", seed: int = 0, cache_dir=None) -> SplitPlan:
    """The checked split plan of ``dataset`` (see the module docstring). Raises ``DataError`` in one sentence
    for a dataset that can't train a classifier (no training images, fewer than two classes). ``cache_dir``: where
    the leak check keeps what it saw of the images (``dataset_looks``)."""
    if protocol not in PROTOCOLS:
        raise DataError(f"Unknown split protocol '{protocol}': use one of {', '.join(PROTOCOLS)}.")
    train = dataset.splits.get("train")
    if train is None or len(train) == 0:
        raise DataError(f"{dataset.source} has no training images.")
    classes = sorted(set(train.labels))
    if len(classes) < 2:
        only = dataset.class_names[classes[0]] if classes else "none"
        raise DataError(f"{dataset.source} has one class ({only[:60]}): a classifier needs at least two.")

    looks = dataset_looks(dataset, cache_dir)
    plan = _drop_copies(_plan(dataset, protocol, seed), looks)
    if plan.overlap * 2 > plan.overlap + len(plan.evaluation):  # most of the evaluation images were copies
        found = plan.pairs
        pooled, looks, note = _resplit(dataset, looks, seed)
        plan = _drop_copies(_plan(pooled, "official", seed), looks)
        plan.pairs = [*found, *plan.pairs][:MAX_PAIRS]
        note += f" Copies: {_pairs_text(found)}." if found else ""
        plan.leak = f"{note} {plan.leak}".strip() if plan.leak else note
        plan.protocol = protocol
    for name, part in (("training", plan.train), ("validation", plan.validation), ("evaluation", plan.evaluation)):
        if len(part) == 0:
            raise DataError(f"{dataset.source}: no {name} images are left after the split (too few images).")
    return plan


def _plan(dataset: ImageDataset, protocol: str, seed: int) -> SplitPlan:
    splits = dataset.splits
    train = _all(splits["train"], "train")
    extra = {name: _all(s, name) for name, s in splits.items() if name not in STANDARD_ORDER and len(s)}
    if protocol == "tutorial":
        first_train, first_held = tutorial_split(train.indices)  # the notebook's first run of its split cell
        final_train, final_held = tutorial_split(first_train)  # ... and its second, whose 387 it reported
        text = (
            f"tutorial protocol on the train split (train_test_split 5%, random_state=3, run twice as in the "
            f"notebook): train {len(final_train)}, validation {len(first_held)} (held out by the first run, "
            f"picks the model), evaluation {len(final_held)} (the notebook's held-out images)"
        )
        return SplitPlan(
            dataset,
            Part("train", final_train),
            Part("train", first_held),
            Part("train", final_held),
            protocol,
            seed,
            text,
            extra,
        )

    labels = splits["train"].labels
    notes = []
    if "test" in splits and len(splits["test"]):
        evaluation = _all(splits["test"], "test")
        notes.append(f"evaluation: the test split ({len(evaluation)})")
    else:
        kept, held = holdout(train.indices, labels, TEST_FRACTION, seed)
        train, evaluation = Part("train", kept), Part("train", held)
        notes.append(
            f"evaluation: {len(held)} images held out of train ({TEST_FRACTION:.0%} per class, seed {seed}; "
            f"the dataset has no test split)"
        )
    if "validation" in splits and len(splits["validation"]):
        validation = _all(splits["validation"], "validation")
        notes.insert(0, f"validation: the dataset's validation split ({len(validation)})")
    else:
        kept, held = holdout(train.indices, labels, VALIDATION_FRACTION, seed + 1)
        train, validation = Part("train", kept), Part("train", held)
        notes.insert(
            0, f"validation: {len(held)} images held out of train ({VALIDATION_FRACTION:.0%} per class, seed {seed})"
        )
    text = f"train: {len(train)} images; " + "; ".join(notes)
    return SplitPlan(dataset, train, validation, evaluation, protocol, seed, text, extra)


def _all(split: Split, name: str) -> Part:
    return Part(name, tuple(range(len(split))))


def holdout(indices, labels, fraction: float, seed: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(kept, held): ``fraction`` of each class of ``indices`` held out (``labels[i]`` is row i's class).

    Per class ``round(fraction * n)`` (halves up), at least 1 and at most n - 1; classes of one image stay.
    When no class has two images (Pokemon mini has about one per class), a seeded ``fraction`` of all rows
    is held out instead: those classes are then unseen in training, which a CLIP can still name.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
    indices = list(indices)
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i in indices:
        by_class.setdefault(labels[i], []).append(i)
    held = []
    for members in (by_class[c] for c in sorted(by_class)):
        if len(members) >= 2:
            k = min(max(int(np.floor(fraction * len(members) + 0.5)), 1), len(members) - 1)
            held += rng.permutation(members)[:k].tolist()
    if not held and len(indices) >= 2:
        k = min(max(int(np.floor(fraction * len(indices) + 0.5)), 1), len(indices) - 1)
        held = rng.permutation(indices)[:k].tolist()
    held_set = set(held)
    return tuple(i for i in indices if i not in held_set), tuple(sorted(held))


def tutorial_split(indices, fraction: float = 0.05, random_state: int = 3) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(kept, held) exactly as the Cars tutorial's ``train_test_split(data, test_size=0.05, random_state=3)``:
    scikit-learn's shuffle depends only on the row count and the seed, so splitting row indices picks the same
    rows as splitting the annotation array did; both parts come in its (shuffled) order."""
    from sklearn.model_selection import train_test_split

    keep, held = train_test_split(list(indices), test_size=fraction, random_state=random_state)
    return tuple(keep), tuple(held)


def subset(split: Split, indices) -> Split:
    """The rows of ``split`` at ``indices``, in that order."""
    return Split([split.images[i] for i in indices], [split.labels[i] for i in indices])


# --- the leak check ----------------------------------------------------------------------------------------

MAX_PAIRS = 20  # copy pairs named in the card (all are counted); the warning names the first 3


def dataset_looks(dataset: ImageDataset, cache_dir=None) -> dict[str, Looks]:
    """What the leak check sees of every image of every split (``clipdemo.data.phash``): each image looked at
    once per process (per file: path, size, mtime), and with ``cache_dir`` kept on disk under the dataset's
    fingerprint, so a warm run decodes nothing."""
    path = Path(cache_dir) / f"looks-v{phash.VERSION}-{dataset.fingerprint}.npz" if cache_dir is not None else None
    stored = _load_looks(path, dataset) if path is not None else None
    if stored is not None:
        return stored
    looks = {
        name: Looks.of_rows([_ref_name(r, name, i) for i, r in enumerate(s.images)], [phash.look(r) for r in s.images])
        for name, s in dataset.splits.items()
    }
    if path is not None:
        _save_looks(path, looks)
    return looks


def _ref_name(ref: ImageRef, split: str, i: int) -> str:
    """How a copy pair names an image: a file by its last three path parts (``test/cat/3.jpg``), a row by number."""
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return f"{split} image {i + 1}"
    return "/".join(Path(ref).parts[-3:])


def _save_looks(path: Path, looks: dict[str, Looks]) -> None:
    arrays = {}
    for name, lk in looks.items():
        arrays[f"{name}|digests"] = np.array(lk.digests, dtype=str)
        arrays[f"{name}|hashes"], arrays[f"{name}|hashed"], arrays[f"{name}|colours"] = lk.hashes, lk.hashed, lk.colours
        arrays[f"{name}|errors"] = np.array(lk.errors, dtype=str)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: _savez(tmp, arrays))
    except OSError:
        pass  # a cache that can't be written costs a re-look next time, nothing else


def _savez(tmp: Path, arrays: dict) -> None:
    with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a name
        np.savez(f, **arrays)


def _load_looks(path: Path, dataset: ImageDataset) -> dict[str, Looks] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            looks = {}
            for name, split in dataset.splits.items():
                k = f"{name}|"
                looks[name] = Looks(
                    [_ref_name(r, name, i) for i, r in enumerate(split.images)],
                    [str(d) for d in z[k + "digests"]],
                    z[k + "hashes"].astype(np.uint64),
                    z[k + "hashed"].astype(bool),
                    z[k + "colours"].astype(np.uint8),
                    [str(e) for e in z[k + "errors"]],
                )
                if len(looks[name]) != len(split) or len(looks[name].digests) != len(split):
                    return None
            return looks
    except Exception:  # absent or damaged: looked at again, never trusted
        return None


def _part_looks(looks: dict[str, Looks], part: Part) -> Looks:
    return looks[part.split].take(part.indices)


def _without(part: Part, mine: Looks, refs: Looks) -> tuple[Part, int, list[tuple[str, str]], Looks]:
    """``part`` without rows that are copies of an image in ``refs`` or of an earlier row of the part: (what is
    left, how many went, (copy, original) name pairs, the looks of what is left). Unreadable rows stay (the
    encoders skip and count them): a file that can't be read is unreadable, whatever it duplicates."""
    outside = first_matches(mine, refs)
    inside = first_matches(mine, mine, earlier_only=True)
    keep, pairs = [], []
    for r in range(len(part)):
        if outside[r] >= 0:
            pairs.append((mine.names[r], refs.names[outside[r]]))
        elif inside[r] >= 0:
            pairs.append((mine.names[r], mine.names[inside[r]]))
        else:
            keep.append(r)
    kept = Part(part.split, tuple(part.indices[r] for r in keep))
    return kept, len(part) - len(keep), pairs, mine.take(keep)


def _pairs_text(pairs: list[tuple[str, str]], k: int = 3) -> str:
    named = "; ".join(f"{a} is {b}" for a, b in pairs[:k])
    return named + (f"; and {len(pairs) - k} more" if len(pairs) > k else "")


def _drop_copies(plan: SplitPlan, looks: dict[str, Looks]) -> SplitPlan:
    train = _part_looks(looks, plan.train)
    validation, val_copies, val_pairs, val_looks = _without(plan.validation, _part_looks(looks, plan.validation), train)
    refs = Looks.concat([train, val_looks])
    evaluation, copies, pairs, _ = _without(plan.evaluation, _part_looks(looks, plan.evaluation), refs)
    extra, extra_notes, extra_pairs = {}, [], []
    for name, part in plan.extra.items():
        extra[name], n, found, _ = _without(part, _part_looks(looks, part), train)
        extra_pairs += found
        if n:
            extra_notes.append(
                f"{n} of {len(part)} '{name}' images are copies of training images and were removed "
                f"({_pairs_text(found)})"
            )
    notes = []
    if copies:
        notes.append(
            f"WARNING: {copies} of {len(plan.evaluation)} {_name(plan.evaluation)} images are copies of training or "
            f"validation images (the same picture, even re-encoded or resized: {_pairs_text(pairs)}); they were "
            f"removed, and metrics use the remaining {len(evaluation)}."
        )
    if val_copies:
        notes.append(
            f"{val_copies} of {len(plan.validation)} validation images are copies of training images and were "
            f"removed ({_pairs_text(val_pairs)})."
        )
    notes += [f"{n}." for n in extra_notes]
    if notes and not notes[0].startswith("WARNING"):
        notes[0] = "WARNING: " + notes[0]
    return replace(
        plan,
        validation=validation,
        evaluation=evaluation,
        extra=extra,
        leak=" ".join(notes),
        overlap=copies,
        pairs=[*pairs, *val_pairs, *extra_pairs][:MAX_PAIRS],
    )


def _name(part: Part) -> str:
    return f"'{part.split}'" if part.split != "train" else "held-out"


def _resplit(dataset: ImageDataset, looks: dict[str, Looks], seed: int) -> tuple[ImageDataset, dict[str, Looks], str]:
    """Every split's distinct images pooled into one train split, a seeded held-out test split carved from it."""
    names = [n for n in _ordered(dataset.splits) if n in STANDARD_ORDER]
    pool_looks = Looks.concat([looks[n] for n in names])
    refs = [r for n in names for r in dataset.splits[n].images]
    all_labels = [y for n in names for y in dataset.splits[n].labels]
    test = dataset.splits.get("test")
    overlap = int((first_matches(looks["test"], looks["train"]) >= 0).sum()) if test is not None else 0
    earlier = first_matches(pool_looks, pool_looks, earlier_only=True)
    rows = [i for i in range(len(refs)) if earlier[i] < 0]
    conflicts = sum(all_labels[i] != all_labels[earlier[i]] for i in range(len(refs)) if earlier[i] >= 0)
    pool = Split([refs[i] for i in rows], [all_labels[i] for i in rows])
    pool_looks = pool_looks.take(rows)
    kept, held = holdout(range(len(pool)), pool.labels, TEST_FRACTION, seed)
    splits = {"train": subset(pool, kept), "test": subset(pool, held)}
    splits.update({k: s for k, s in dataset.splits.items() if k not in STANDARD_ORDER})
    new_looks = {"train": pool_looks.take(kept), "test": pool_looks.take(held)}
    new_looks.update({k: v for k, v in looks.items() if k not in STANDARD_ORDER})
    tested = len(test) if test is not None else 0
    note = (
        f"WARNING: the test split overlaps training: {overlap} of {tested} test images are copies of "
        f"training images, so evaluation uses a seeded held-out split of {len(held)} of the {len(pool)} distinct "
        f"images of all splits ({TEST_FRACTION:.0%} per class, seed {seed}) instead; the dataset's own test "
        f"scores are not comparable."
    )
    if conflicts:
        note += f" {conflicts} duplicated image(s) carried different labels; the first label was kept."
    pooled = replace(
        dataset, splits=splits, fingerprint=fingerprint(dataset.fingerprint, "resplit", seed), notes=[*dataset.notes]
    )
    return pooled, new_looks, note


def _ordered(names) -> list[str]:
    return [s for s in STANDARD_ORDER if s in names] + sorted(s for s in names if s not in STANDARD_ORDER)
