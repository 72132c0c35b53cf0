"""Turn one string (what a user types after ``--data``) into an ``ImageDataset``: the only place that decides
which sources may be read.

``load_source(spec, config, policy)`` dispatches on what the spec names:

- ``shapes``: the built-in procedural dataset (works offline, no files);
- an existing folder: the Stanford Cars devkit layout if it has ``devkit/cars_meta.mat``, a saved HF dataset
  (``save_to_disk``) or a folder of parquet files if it has those, else an image folder
  (``train/<class>/…``, ``test/<class>/…`` or flat ``<class>/…``);
- a ``.parquet`` file: one split of an HF-style dataset;
- anything else shaped like ``owner/name``: a dataset on the Hugging Face Hub.

A ``SourcePolicy`` says what may be read. The CLI's (``OPEN``) reads any local path. The Admin tab's
(``SourcePolicy.confined(data_root)``) reads local folders only under its data root (``..`` and paths or
links that resolve outside it are refused) and none at all without one; Hub ids and ``shapes`` always.
``resolve_source`` does every check without loading, so a job can refuse a spec before it starts and load it
later on its own thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import DataError, ImageDataset

BUILTIN = "shapes"
# Hub ids: "name" or "owner/name" (letters, digits, - _ .), as the Hub allows them.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
MAX_SPEC = 300


@dataclass(frozen=True)
class SourcePolicy:
    local: bool = True  # may read local paths at all
    data_root: Path | None = None  # ... and then only under this folder

    @classmethod
    def confined(cls, data_root) -> SourcePolicy:
        """The Admin tab's: local folders under ``data_root`` only, none without it."""
        return cls(local=data_root is not None, data_root=Path(data_root) if data_root else None)


OPEN = SourcePolicy()


def load_source(spec: str, config: str | None = None, policy: SourcePolicy = OPEN) -> ImageDataset:
    """Load the dataset ``spec`` names; see the module docstring. Raises ``DataError`` with a readable message."""
    return resolve_source(spec, config, policy)()


def resolve_source(spec: str, config: str | None = None, policy: SourcePolicy = OPEN) -> Callable[[], ImageDataset]:
    """Check ``spec`` against ``policy`` now (raising ``DataError``) and return a function that loads it."""
    spec = str(spec or "").strip()
    config = (config or "").strip() or None
    if not spec:
        raise DataError("No data source given: pass a folder, 'shapes', or a Hugging Face dataset id.")
    if len(spec) > MAX_SPEC or "\x00" in spec:
        raise DataError("That data source name is not valid.")
    if spec == BUILTIN:
        return _builtin
    if policy.local:
        path = resolve_local(spec, policy.data_root)
        if path is not None:
            return lambda: load_local(path, config=config)
    elif _looks_local(spec):
        raise DataError(
            f"Data source '{spec}' looks like a local path; reading local folders here needs "
            f"CLIPDEMO_DATA_ROOT (the only folder that may be read), which is not set."
        )
    if not _HUB_ID.match(spec) or ".." in spec:
        raise DataError(f"Data source '{spec}' is neither a folder nor a Hugging Face dataset id.")
    if not policy.local or policy.data_root is not None:
        # the Hub loader would also read a same-named folder in the working directory: not here
        if Path(spec).exists():
            raise DataError(f"Data source '{spec}' names a local folder outside the data folder; it is refused.")
    from .hub import hub_dataset

    return lambda: hub_dataset(spec, config=config, hub_only=True)  # a same-named folder in the cwd is not it


def allowed_sources(policy: SourcePolicy) -> list[str]:
    """What a picker may offer under ``policy``: ``shapes``, then each folder (and ``.parquet`` file) directly in
    the data root by its name, which ``resolve_source`` reads as a path relative to the root. Hidden names and
    links that resolve outside the root are left out; Hub ids can't be listed, the picker lets one be typed."""
    root = policy.data_root.expanduser().resolve() if policy.local and policy.data_root else None
    if root is None or not root.is_dir():
        return [BUILTIN]
    names = [
        p.name
        for p in sorted(root.iterdir())
        if not p.name.startswith(".")
        and (p.is_dir() or p.suffix == ".parquet")
        and p.resolve().is_relative_to(root)
        and p.name != BUILTIN
    ]
    return [BUILTIN, *names]


def _looks_local(spec: str) -> bool:
    return Path(spec).is_absolute() or spec.startswith(("~", ".", "/")) or "\\" in spec or not _HUB_ID.match(spec)


def resolve_local(spec: str, data_root: Path | None = None) -> Path | None:
    """The local path ``spec`` names, or None when it names none (it may then be a Hub id).

    Raises ``DataError`` for a path that clearly is one but doesn't exist, and, under ``data_root``, for
    anything that would leave it.
    """
    raw = Path(spec).expanduser()
    if data_root is None:
        if raw.exists():
            return raw.resolve()
        if _looks_local(spec):
            raise DataError(f"Data folder '{spec}' does not exist.")
        return None

    root = Path(data_root).expanduser().resolve()
    if ".." in Path(spec).parts or spec.startswith("~"):
        raise DataError(f"Data source '{spec}' is refused: paths must stay inside the data folder {root}.")
    candidate = raw if raw.is_absolute() else root / raw
    if not candidate.exists():
        if raw.is_absolute() or _looks_local(spec):
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
    from .shapes import shapes_dataset

    return shapes_dataset(seed=0)
