"""A local image folder as a dataset.

Two layouts::

    root/train/<class>/*.jpg          root/<class>/*.jpg     (flat: everything is "train")
    root/test/<class>/*.jpg
    root/validation/<class>/*.jpg     (or val/; optional)
    root/<other>/<class>/*.jpg        (optional: extra evaluation splits, such as demo-data's unseen/)

Class names are train's subfolder names, sorted, then the classes only extra splits have (sorted): training
never sees those, but a CLIP can still name them, which is what an unseen-combinations split is for. Only
image files count (by extension); decoding is left to the consumer, which skips, counts and names the files
that can't be read (``clipdemo.features.encode_split``, through ``clipdemo.images.load_image``).
"""

from __future__ import annotations

from pathlib import Path

from . import DataError, ImageDataset, Split, fingerprint

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# folder name -> split name; "val" is a common spelling of "validation"
SPLIT_DIRS = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}


def image_folder(root: str | Path) -> ImageDataset:
    """Read an image folder (either layout above). Raises ``DataError`` naming what is wrong."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist or is not a folder.")
    split_dirs = {SPLIT_DIRS[d.name]: d for d in _subdirs(root) if d.name in SPLIT_DIRS}
    if "validation" in split_dirs and (root / "val").is_dir() and (root / "validation").is_dir():
        raise DataError(f"Image folder {root} has both val/ and validation/; keep one.")

    if split_dirs:
        if "train" not in split_dirs:
            raise DataError(f"Image folder {root} has {', '.join(sorted(split_dirs))}/ but no train/ folder.")
        class_names = sorted(d.name for d in _subdirs(split_dirs["train"]))
        if not class_names:
            raise DataError(f"{split_dirs['train']} has no class subfolders (expected train/<class>/<image>).")
        ordered = {name: split_dirs[name] for name in ("train", "validation", "test") if name in split_dirs}
        extra = {d.name: d for d in _subdirs(root) if d.name not in SPLIT_DIRS and _has_class_images(d)}
        trained = len(class_names)
        class_names += sorted({c.name for d in extra.values() for c in _subdirs(d)} - set(class_names))
        ordered.update(extra)
    else:
        class_names = sorted(d.name for d in _subdirs(root))
        if not class_names:
            raise DataError(f"Image folder {root} has no class subfolders (expected <class>/<image>).")
        ordered, trained = {"train": root}, len(class_names)

    index = {name: i for i, name in enumerate(class_names)}
    splits, notes, stamp = {}, [], []
    for split_name, folder in ordered.items():
        unknown = sorted(d.name for d in _subdirs(folder) if d.name not in index)
        if unknown:
            raise DataError(
                f"{folder} has class folder(s) missing from train/: {', '.join(unknown)}; "
                f"every class needs training images."
            )
        images, labels = [], []
        stray = sum(f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS for f in folder.iterdir())
        for name in class_names:
            class_dir = folder / name
            if not class_dir.is_dir():
                continue
            for f in _image_files(class_dir):  # unreadable ones (empty, truncated, not images) are skipped later
                st = f.stat()
                stamp.append((split_name, str(f.relative_to(root)), st.st_size, st.st_mtime_ns))
                images.append(str(f))
                labels.append(index[name])
        if stray:
            notes.append(f"{split_name}: ignored {stray} image(s) lying outside class folders in {folder}")
        if split_name not in ("train", "validation", "test"):
            notes.append(f"{split_name}: an extra split of {len(images)} images, evaluated, never trained on")
        if split_name == "train":
            present = set(labels)
            missing = [c for c in class_names[:trained] if index[c] not in present]
            if missing:
                notes.append(f"train: {len(missing)} class(es) have no images: {_few(missing)}")
        splits[split_name] = Split(images, labels)

    if not len(splits["train"]):
        raise DataError(f"Image folder {root} has no images in its train classes (extensions: {_exts()}).")
    return ImageDataset(class_names, splits, f"folder:{root}", fingerprint("folder", stamp), notes)


def _has_class_images(folder: Path) -> bool:
    return any(_image_files(d) for d in _subdirs(folder))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (any depth), sorted, skipping hidden files such as .DS_Store."""
    return sorted(
        f
        for f in folder.rglob("*")
        if f.suffix.lower() in IMAGE_EXTENSIONS
        and f.is_file()
        and not any(p.startswith(".") for p in f.relative_to(folder).parts)
    )


def _few(items: list[str], k: int = 5) -> str:
    return ", ".join(items[:k]) + (f" and {len(items) - k} more" if len(items) > k else "")


def _exts() -> str:
    return " ".join(sorted(IMAGE_EXTENSIONS))
