"""Turn one string (what a user types after ``--data``) into an ``ImageDataset``.

``load_source(spec)`` dispatches on what the spec names:

- ``shapes``: the built-in procedural dataset (works offline, no files);
- an existing folder: the Stanford Cars devkit layout if it has ``devkit/cars_meta.mat``, a saved HF dataset
  (``save_to_disk``) or a folder of parquet files if it has those, else an image folder
  (``train/<class>/…``, ``test/<class>/…`` or flat ``<class>/…``);
- a ``.parquet`` file: one split of an HF-style dataset;
- anything else shaped like ``owner/name``: a dataset on the Hugging Face Hub.

With ``data_root`` (the admin tab's setting), local specs are confined to that folder: ``..`` and paths that
resolve outside it, symlinks included, are refused.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import DataError, ImageDataset

BUILTIN = "shapes"
# Hub ids: "name" or "owner/name" (letters, digits, - _ .), as the Hub allows them.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def load_source(spec: str, config: str | None = None, data_root: Path | None = None) -> ImageDataset:
    """Load the dataset ``spec`` names; see the module docstring. Raises ``DataError`` with a readable message."""
    spec = str(spec).strip()
    if not spec:
        raise DataError("No data source given: pass a folder, 'shapes', or a Hugging Face dataset id.")
    if spec == BUILTIN:
        return _builtin()
    path = resolve_local(spec, data_root)
    if path is not None:
        return load_local(path, config=config)
    if _HUB_ID.match(spec) and ".." not in spec:
        from .hub import hub_dataset

        return hub_dataset(spec, config=config, hub_only=True)  # a same-named folder in the cwd is not it
    raise DataError(f"Data source '{spec}' does not exist: it is neither a folder nor a Hugging Face dataset id.")


def resolve_local(spec: str, data_root: Path | None = None) -> Path | None:
    """The local path ``spec`` names, or None when it names none (it may then be a Hub id).

    Raises ``DataError`` for a path that clearly is one but doesn't exist, and, under ``data_root``, for
    anything that would leave it.
    """
    raw = Path(spec).expanduser()
    looks_like_path = raw.is_absolute() or spec.startswith(("~", ".", "/")) or "\\" in spec or not _HUB_ID.match(spec)
    if data_root is None:
        if raw.exists():
            return raw.resolve()
        if looks_like_path:
            raise DataError(f"Data folder '{spec}' does not exist.")
        return None

    root = Path(data_root).expanduser().resolve()
    if ".." in Path(spec).parts or spec.startswith("~"):
        raise DataError(f"Data source '{spec}' is refused: paths must stay inside the data folder {root}.")
    candidate = raw if raw.is_absolute() else root / raw
    if not candidate.exists():
        if raw.is_absolute() or looks_like_path:
            raise DataError(f"Data folder '{spec}' does not exist inside the data folder {root}.")
        return None  # not a local path: a Hub id
    resolved = candidate.resolve()  # follows symlinks, so a link pointing outside is caught too
    if not resolved.is_relative_to(root):
        raise DataError(f"Data source '{spec}' is refused: it resolves outside the data folder {root}.")
    return resolved


def load_local(path: Path, config: str | None = None) -> ImageDataset:
    """Pick the adapter for an existing local path by what it contains."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".parquet":
            from .hub import hub_dataset

            return hub_dataset(str(path), config=config)
        raise DataError(f"Data source {path} is a file; expected a folder (or a .parquet file).")
    if (path / "devkit" / "cars_meta.mat").is_file():
        from .cars import stanford_cars

        return stanford_cars(path)
    if _is_hf_folder(path):
        from .hub import hub_dataset

        return hub_dataset(str(path), config=config)
    from .folder import image_folder

    return image_folder(path)


def _is_hf_folder(path: Path) -> bool:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return True
    # parquet files up to three levels down: <config>/<split>/0000.parquet is the deepest layout we read
    return any(any(path.glob("/".join(["*"] * depth) + ".parquet")) for depth in (1, 2, 3))


def _builtin() -> ImageDataset:
    try:
        from .shapes import shapes_dataset
    except ImportError as e:  # shapes.py is written separately; say so rather than crash obscurely
        raise DataError(f"The built-in '{BUILTIN}' dataset is not available ({e}).") from e
    return shapes_dataset(seed=0)
