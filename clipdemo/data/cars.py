"""Stanford Cars in its original devkit layout (the one the first tutorial reads)::

    root/cars_train/00001.jpg …
    root/cars_test/00001.jpg …                       (optional)
    root/devkit/cars_meta.mat                        class_names: 1 x 196 cell of strings
    root/devkit/cars_train_annos.mat                 annotations: struct of bbox_x1, bbox_y1, bbox_x2, bbox_y2,
                                                     class, fname
    root/cars_test_annos_withlabels.mat              same struct for the test images (or in devkit/)

``class`` is 1-based in the files and 0-based here. Splits: ``train`` (official train, in annotation order, so
the tutorial's ``train_test_split`` indices carry over) and ``test`` (official test, when its labelled
annotations and ``cars_test/`` are both there). Images listed but missing on disk are skipped and
counted in ``notes``; decode failures are the consumer's to count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import DataError, ImageDataset, Split, fingerprint
from .folder import _few

META = "devkit/cars_meta.mat"
TRAIN_ANNOS = "devkit/cars_train_annos.mat"
TEST_ANNOS = ("cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat")
ANNO_FIELDS = ("class", "fname")  # the bbox_* fields are there too; the tutorial (and we) don't crop


def stanford_cars(root: str | Path) -> ImageDataset:
    """Read the devkit layout at ``root``. Raises ``DataError`` naming the file at fault."""
    root = Path(root).expanduser().resolve()
    class_names = read_class_names(_need(root, META, "the class names"))
    stamp = [_file_stamp(root / META)]
    notes: list[str] = []

    annos = _need(root, TRAIN_ANNOS, "the training labels")
    images_dir = _image_dir(root, "cars_train")
    splits = {"train": _read_split(annos, images_dir, len(class_names), notes, stamp, "train")}

    test_annos = next((root / name for name in TEST_ANNOS if (root / name).is_file()), None)
    test_dir = _image_dir(root, "cars_test", required=False)
    if test_annos is not None and test_dir is not None:
        splits["test"] = _read_split(test_annos, test_dir, len(class_names), notes, stamp, "test")
    elif test_annos is not None:
        notes.append(f"no official test split: {test_annos.name} is there but the cars_test/ folder is not")
    elif test_dir is not None:
        notes.append(
            "no official test split: cars_test/ is there but its labels are not "
            "(cars_test_annos_withlabels.mat, at the root or in devkit/)"
        )
    return ImageDataset(class_names, splits, f"cars-devkit:{root}", fingerprint("cars-devkit", stamp), notes)


def read_class_names(path: Path) -> list[str]:
    """``class_names`` from cars_meta.mat, in order (index 0 is the file's class 1)."""
    mat = _loadmat(path)
    if "class_names" not in mat:
        raise DataError(f"{path} has no 'class_names' variable (found: {_variables(mat)}).")
    names = [str(_scalar(x)).strip() for x in np.ravel(mat["class_names"])]
    if not names or any(not n for n in names):
        raise DataError(f"{path}: 'class_names' is empty or has blank entries.")
    return names


def read_annotations(path: Path) -> list[tuple[int, str]]:
    """(1-based class, fname) per record of ``annotations``, in file order."""
    mat = _loadmat(path)
    if "annotations" not in mat:
        raise DataError(f"{path} has no 'annotations' variable (found: {_variables(mat)}).")
    records = np.ravel(mat["annotations"])  # stored 1 x N; ravel copes with N x 1 too
    fields = records.dtype.names or ()
    missing = [f for f in ANNO_FIELDS if f not in fields]
    if missing:
        hint = " (this looks like the unlabelled test file)" if fields and "class" in missing else ""
        raise DataError(f"{path}: 'annotations' lacks field(s) {', '.join(missing)}{hint}; has {', '.join(fields)}.")
    out = []
    for i, rec in enumerate(records):
        try:
            out.append((int(_scalar(rec["class"])), str(_scalar(rec["fname"])).strip()))
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: annotation {i + 1} is malformed ({e}).") from e
    return out


def _read_split(annos: Path, images_dir: Path, n_classes: int, notes, stamp, name: str) -> Split:
    records = read_annotations(annos)
    if not records:
        raise DataError(f"{annos} lists no images.")
    stamp.append(_file_stamp(annos))
    images, labels, unusable = [], [], []
    for i, (cls, fname) in enumerate(records):
        if not 1 <= cls <= n_classes:
            raise DataError(
                f"{annos}: annotation {i + 1} ({fname}) has class {cls}, outside 1..{n_classes} "
                f"(the classes in {META}); are these files from the same devkit?"
            )
        path = images_dir / fname
        try:
            st = path.stat()
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, 0
        stamp.append((name, fname, size, mtime))
        if size < 0:  # missing: skip and say so, as one lost file shouldn't sink a 16k-image dataset (unreadable
            # ones, empty files included, are skipped and counted where they are decoded)
            unusable.append(fname)
            continue
        images.append(str(path))
        labels.append(cls - 1)
    if not images:
        raise DataError(f"None of the {len(records)} images listed in {annos} exist in {images_dir}.")
    if unusable:
        notes.append(
            f"{name}: skipped {len(unusable)} of {len(records)} images listed in {annos.name} "
            f"(missing in {images_dir.name}/): {_few(unusable)}"
        )
    return Split(images, labels)


def _need(root: Path, rel: str, what: str) -> Path:
    path = root / rel
    if not path.is_file():
        raise DataError(f"Stanford Cars devkit at {root} is missing {rel} ({what}); expected {path}.")
    return path


def _image_dir(root: Path, name: str, required: bool = True) -> Path | None:
    folder = root / name
    # Some mirrors unpack the archive one level deeper (cars_train/cars_train/).
    if (folder / name).is_dir():
        folder = folder / name
    if folder.is_dir():
        return folder
    if required:
        raise DataError(f"Stanford Cars devkit at {root} is missing the {name}/ image folder.")
    return None


def _loadmat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except Exception as e:  # scipy raises several types for a truncated or foreign file
        raise DataError(f"{path} could not be read as a MATLAB .mat file ({type(e).__name__}: {e}).") from e


def _scalar(x):
    """Unwrap loadmat's nesting (cells of 1x1 arrays of arrays …) down to one Python value."""
    while isinstance(x, np.ndarray):
        if x.dtype.kind == "U":  # a MATLAB char array: one string, maybe split in rows
            return "".join(np.ravel(x))
        if x.size != 1:
            raise ValueError(f"expected one value, got an array of shape {x.shape}")
        x = x.reshape(-1)[0]
    return x.item() if isinstance(x, np.generic) else x


def _variables(mat: dict) -> str:
    return ", ".join(k for k in mat if not k.startswith("__")) or "nothing"


def _file_stamp(path: Path) -> tuple:
    import hashlib

    return (path.name, hashlib.sha1(path.read_bytes()).hexdigest())  # the .mat files are small
