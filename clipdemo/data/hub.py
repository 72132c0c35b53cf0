"""Image-classification datasets in Hugging Face form: on the Hub by id, or local (parquet files or ``save_to_disk``).

Any dataset with an image column (``datasets.Image``) and a label column (``ClassLabel``, or ints / strings)
works; both columns are auto-detected. Images stay encoded bytes (the ``Image(decode=False)`` storage), so
nothing is decoded until a consumer asks ``clipdemo.images.load_image``.

From the Hub we download parquet files only, and only those of the config and splits asked for:

- ``tanganke/stanford_cars``: its own parquet files (``splits=["train"]`` fetches ~1 GB, not the ~6 GB repo);
- ``fcakyon/pokemon-classification`` is script-based (``datasets`` >= 4 refuses it): its parquet conversion
  (``revision="refs/convert/parquet"``, configs ``mini`` and ``full``);
- any other id: the parquet files of its main branch, else of its parquet conversion.

Layouts understood, locally and on the Hub: ``data/<split>-00000-of-00001.parquet`` (push_to_hub),
``<config>/<split>-….parquet``, ``<config>/<split>/0000.parquet`` (the Hub's conversion), ``<split>.parquet``.
Before any network call the Hub is probed (2 s); when it is unreachable the local HF cache is used, and
failing that one ``DataError`` sentence says how to provide the data.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from clipdemo import hub_access
from clipdemo.errors import first_line

from . import DataError, ImageDataset, Split, fingerprint
from .folder import _few

PARQUET_REVISION = "refs/convert/parquet"
# id -> how to load it; "config" is the default config when none is given
KNOWN = {
    "fcakyon/pokemon-classification": {"revision": PARQUET_REVISION, "config": "mini"},
    "tanganke/stanford_cars": {"revision": None, "config": None},
}
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
SPLIT_ORDER = ("train", "validation", "test")
IMAGE_NAMES = ("image", "img", "images", "picture", "photo")
LABEL_NAMES = ("label", "labels", "fine_label", "class", "category", "target")


def hub_dataset(
    repo_id: str,
    config: str | None = None,
    revision: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    splits: list[str] | str | None = None,
    cache_dir: str | Path | None = None,
    hub_only: bool = False,
) -> ImageDataset:
    """Load an image-classification dataset by Hub id, or from a local parquet file/folder or saved dataset.

    ``splits`` limits what is read (and downloaded), e.g. ``["train"]``; names like ``val`` are normalised to
    ``validation``. ``hub_only``: never read ``repo_id`` as a local path (the caller already ruled that out,
    e.g. under a data root). Raises ``DataError`` with a readable message.
    """
    wanted = _wanted_splits(splits)
    local = Path(repo_id).expanduser()
    if not hub_only and local.exists():
        local = local.resolve()
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            tables, fp = _read_saved(local, wanted)
            return _to_dataset(tables, f"hf-disk:{local}", fp, [], image_column, label_column, None)
        root = local.parent if local.is_file() else local
        rels = [local.name] if local.is_file() else _parquet_under(local)
        config, chosen, notes = select_parquet(rels, config, wanted, where=str(local), default_config=None)
        stats = {rel: (root / rel).stat() for files in chosen.values() for rel in files}
        stamp = [(rel, st.st_size, st.st_mtime_ns) for rel, st in stats.items()]
        tables = {split: _read_parquet([root / r for r in files]) for split, files in chosen.items()}
        source = f"parquet:{local}" + (f":{config}" if config != "default" else "")
        return _to_dataset(tables, source, fingerprint("parquet", stamp), notes, image_column, label_column, root)

    known = KNOWN.get(repo_id, {})
    revision = revision or known.get("revision")
    folder, config, chosen, notes = _fetch(repo_id, config, revision, wanted, cache_dir, known.get("config"))
    tables = {split: _read_parquet([folder / r for r in files]) for split, files in chosen.items()}
    # the snapshot folder is named by commit hash: a new commit on the Hub gives a new fingerprint
    fp = fingerprint("hf", repo_id, config, folder.name, sorted(r for f in chosen.values() for r in f))
    source = f"hf:{repo_id}" + (f":{config}" if config != "default" else "")
    return _to_dataset(tables, source, fp, notes, image_column, label_column, folder)


# --- choosing files ---------------------------------------------------------------------------------------


def split_of(rel: str) -> tuple[str, str | None, bool]:
    """(config, split or None, partial) for a parquet file's path inside a dataset repo or folder."""
    parts = rel.replace("\\", "/").split("/")
    dirs, stem = parts[:-1], parts[-1].rsplit(".", 1)[0]
    config = "default"
    if dirs and dirs[0] == "data":
        dirs = dirs[1:]
    elif dirs and _split_dir(dirs[0]) is None:
        config, dirs = dirs[0], dirs[1:]
    for d in dirs:
        if (found := _split_dir(d)) is not None:
            return config, found[0], found[1]
    tokens = re.split(r"[-_]", stem.lower())
    for token in (tokens[0], tokens[-1]):  # train-00000-of-00001 / pokemon-classification-train
        if token in SPLIT_ALIASES:
            return config, SPLIT_ALIASES[token], False
    return config, None, False


def select_parquet(
    rels: list[str], config: str | None, wanted: list[str] | None, where: str, default_config: str | None
) -> tuple[str, dict[str, list[str]], list[str]]:
    """Pick the files of one config and the wanted splits: (config, {split: sorted files}, notes)."""
    by_config: dict[str, dict[str, list[str]]] = {}
    unplaced, partial = [], set()
    for rel in sorted(rels):
        cfg, split, is_partial = split_of(rel)
        if split is None:
            unplaced.append(rel)
            continue
        by_config.setdefault(cfg, {}).setdefault(split, []).append(rel)
        if is_partial:
            partial.add((cfg, split))
    if not by_config:
        raise DataError(f"{where} has no parquet files named by split (train/validation/test){_found(unplaced)}.")
    configs = sorted(by_config)
    if config is None:
        if len(configs) == 1:
            config = configs[0]
        elif default_config in by_config or "default" in by_config:
            config = default_config if default_config in by_config else "default"
        else:
            raise DataError(f"{where} has several configs ({', '.join(configs)}): choose one with --config.")
    elif config not in by_config:
        raise DataError(f"{where} has no config '{config}'; it has: {', '.join(configs)}.")
    available = by_config[config]
    missing = [s for s in wanted or [] if s not in available]
    if missing:
        raise DataError(
            f"{where} (config {config}) has no {', '.join(missing)} split; it has: {', '.join(_ordered(available))}."
        )
    chosen = {s: available[s] for s in _ordered(available) if wanted is None or s in wanted}
    notes = [f"ignored parquet file(s) whose split can't be told from the name: {_few(unplaced)}"] if unplaced else []
    notes += [f"{s}: only part of this split was converted to parquet by the Hub" for c, s in partial if c == config]
    return config, chosen, notes


def _fetch(repo_id, config, revision, wanted, cache_dir, default_config) -> tuple[Path, str, dict, list[str]]:
    """The snapshot folder holding the chosen files, downloading them when the Hub is reachable."""
    if not _hub_online():
        return _from_cache(repo_id, config, revision, wanted, cache_dir, default_config)
    from huggingface_hub import list_repo_files, snapshot_download

    where = f"Dataset '{repo_id}'"
    try:
        rev, files = revision, list_repo_files(repo_id, repo_type="dataset", revision=revision)
        if revision is None and not any(f.endswith(".parquet") for f in files):
            rev = PARQUET_REVISION  # e.g. an image-folder or script repo: the Hub's parquet conversion
            files = list_repo_files(repo_id, repo_type="dataset", revision=rev)
        rels = [f for f in files if f.endswith(".parquet")]
        config, chosen, notes = select_parquet(rels, config, wanted, where, default_config)
        patterns = [r for f in chosen.values() for r in f] + ["README.md"]
        folder = snapshot_download(
            repo_id, repo_type="dataset", revision=rev, cache_dir=cache_dir, allow_patterns=patterns
        )
    except DataError:
        raise
    except Exception as e:  # the Hub's errors come in many classes; one sentence each is enough
        raise DataError(_hub_error(repo_id, revision, e)) from e
    return Path(folder), config, chosen, notes


def _from_cache(repo_id, config, revision, wanted, cache_dir, default_config):
    """Offline: the files a previous download left in the HF cache, with no network call at all."""
    for rev in [revision] if revision else ["main", PARQUET_REVISION]:
        folder = cached_snapshot(repo_id, rev, cache_dir)
        rels = _parquet_under(folder) if folder else []
        if rels:
            config, chosen, notes = select_parquet(rels, config, wanted, f"Cached dataset '{repo_id}'", default_config)
            notes.append(f"the Hub is unreachable: loaded {', '.join(chosen)} from the local HF cache ({folder})")
            return folder, config, chosen, notes
    raise DataError(
        f"Dataset '{repo_id}' is not a local folder and can't be loaded: the Hugging Face Hub is unreachable "
        f"and the dataset is not in the local HF cache; load it once on a machine that reaches the Hub "
        f"(the files then stay in the HF cache, which can be copied along) or pass a local folder (image "
        f"folder, Stanford Cars devkit, parquet files or a save_to_disk dataset) instead."
    )


def cached_snapshot(repo_id: str, revision: str = "main", cache_dir: str | Path | None = None) -> Path | None:
    """The HF cache's snapshot folder for a dataset revision, or None; reads the cache only."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    storage = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="dataset")
    ref = storage / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    folder = storage / "snapshots" / commit
    return folder if folder.is_dir() else None


def _hub_online() -> bool:
    return hub_access.hub_reachable()


def _hub_error(repo_id: str, revision: str | None, e: Exception) -> str:
    kind = type(e).__name__
    at = f" at revision {revision}" if revision else ""
    if kind == "RepositoryNotFoundError":
        return (
            f"Dataset '{repo_id}' was not found on the Hugging Face Hub "
            f"(if it is private or gated, log in with `hf auth login`)."
        )
    if kind == "GatedRepoError":
        return (
            f"Dataset '{repo_id}' is gated on the Hugging Face Hub: accept its terms on its page "
            f"and log in with `hf auth login`."
        )
    if kind == "RevisionNotFoundError":
        return f"Dataset '{repo_id}' has no revision '{revision}' on the Hugging Face Hub."
    first = first_line(e, 200)
    return f"Dataset '{repo_id}'{at} could not be downloaded from the Hugging Face Hub ({kind}: {first})."


# --- reading ----------------------------------------------------------------------------------------------


def _read_parquet(paths: list[Path]):
    """(arrow table, datasets.Features) of parquet files; features come from the files' HF metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features

    try:
        tables = [pq.read_table(p) for p in paths]
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        return table, Features.from_arrow_schema(tables[0].schema)
    except Exception as e:
        names = _few([str(p) for p in paths], 2)
        raise DataError(f"Parquet file(s) {names} could not be read ({type(e).__name__}: {e}).") from e


def _read_saved(path: Path, wanted: list[str] | None):
    """A ``save_to_disk`` folder: {split: (arrow table, features)} and a fingerprint of its arrow files."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"Saved dataset {path} could not be loaded ({type(e).__name__}: {e}).") from e
    parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    parts = {SPLIT_ALIASES.get(k.lower(), k): v for k, v in parts.items()}
    missing = [s for s in wanted or [] if s not in parts]
    if missing:
        raise DataError(f"Saved dataset {path} has no {', '.join(missing)} split; it has: {', '.join(parts)}.")
    tables, stamp = {}, []
    for split in _ordered(parts):
        if wanted is not None and split not in wanted:
            continue
        ds = parts[split]
        # Image(decode=False): the arrow view below must carry the encoded bytes, never decoded pixels
        for name, feature in ds.features.items():
            if isinstance(feature, datasets.Image) and feature.decode:
                ds = ds.cast_column(name, datasets.Image(decode=False))
        tables[split] = (ds.with_format("arrow")[:], ds.features)  # [:] honours any select()/shuffle()
        stamp += [(split, f["filename"], os.path.getsize(f["filename"])) for f in ds.cache_files]
    return tables, fingerprint("hf-disk", stamp)


def _to_dataset(tables, source, fp, notes, image_column, label_column, base: Path | None) -> ImageDataset:
    """The shared conversion: detect the columns, map labels to class names, keep images as bytes."""
    first_table, first_features = next(iter(tables.values()))
    image_col = image_column or _detect_image_column(first_features, source)
    label_col = label_column or _detect_label_column(first_features, image_col, source)
    for split, (table, _) in tables.items():
        for col in (image_col, label_col):
            if col not in table.column_names:
                columns = ", ".join(table.column_names)
                raise DataError(f"{source}: split {split} has no column '{col}' (columns: {columns}).")

    class_names, to_index = _label_mapping(tables, label_col, source, base)
    splits, notes = {}, list(notes)
    for split, (table, _) in tables.items():
        images, labels, dropped, unlabelled = [], [], 0, 0
        for ref, raw in zip(table.column(image_col).to_pylist(), table.column(label_col).to_pylist()):
            label = to_index(raw)
            if label is None:
                unlabelled += 1
                continue
            image = _image_ref(ref, base)
            if image is None:
                dropped += 1
                continue
            images.append(image)
            labels.append(label)
        if dropped:
            notes.append(f"{split}: skipped {dropped} of {table.num_rows} rows with neither image bytes nor a file")
        if unlabelled:
            notes.append(f"{split}: skipped {unlabelled} unlabelled rows (label -1 or empty)")
        if images:
            splits[split] = Split(images, labels)
    if not splits:
        raise DataError(f"{source} has no labelled images.")
    if "train" not in splits:
        notes.append(f"no train split: only {', '.join(splits)}")
    return ImageDataset(class_names, splits, source, fp, notes)


def _detect_image_column(features, source: str) -> str:
    from datasets import Image

    def is_image(f):
        return isinstance(f, Image) or (isinstance(f, dict) and {"bytes", "path"} <= set(f))  # metadata-less parquet

    found = [name for name, f in features.items() if is_image(f)]
    if not found:
        raise DataError(f"{source} has no image column (columns: {', '.join(features)}); pass image_column.")
    return next((n for n in found if n.lower() in IMAGE_NAMES), found[0])


def _detect_label_column(features, image_col: str, source: str) -> str:
    from datasets import ClassLabel, Value

    class_labels = [n for n, f in features.items() if isinstance(f, ClassLabel)]
    if class_labels:
        return next((n for n in class_labels if n.lower() in LABEL_NAMES), class_labels[0])
    for name, f in features.items():
        if name != image_col and name.lower() in LABEL_NAMES and isinstance(f, Value):
            return name
    raise DataError(f"{source} has no label column (a ClassLabel, or one named 'label'); pass label_column.")


def _label_mapping(tables, label_col: str, source: str, base: Path | None):
    """(class names, raw label -> 0-based index or None) across all splits."""
    from datasets import ClassLabel

    features = [f[label_col] for _, f in tables.values()]
    if isinstance(features[0], ClassLabel):
        names = list(features[0].names)
        for f in features[1:]:
            if isinstance(f, ClassLabel) and list(f.names) != names:
                raise DataError(f"{source}: the splits disagree on the class names of '{label_col}'.")
        return names, lambda v: v if isinstance(v, int) and 0 <= v < len(names) else None

    values = {v for table, _ in tables.values() for v in table.column(label_col).to_pylist() if v is not None}
    if all(isinstance(v, str) for v in values):  # string labels: the classes are the sorted distinct values
        names = sorted(v for v in values if v.strip())
        index = {n: i for i, n in enumerate(names)}
        return names, lambda v: index.get(v)
    if not all(isinstance(v, int) for v in values):
        raise DataError(f"{source}: column '{label_col}' holds neither class indices nor class names.")
    names = _readme_class_names(base, label_col) if base else None
    if names is None or max(values, default=-1) >= len(names):
        names = [str(i) for i in range(max(values, default=-1) + 1)]
    return names, lambda v: v if isinstance(v, int) and 0 <= v < len(names) else None


def _readme_class_names(base: Path, label_col: str) -> list[str] | None:
    """Class names from a dataset card's ``dataset_info`` YAML, for parquet files written without HF metadata."""
    readme = base / "README.md"
    if not readme.is_file():
        return None
    try:
        import yaml
        from datasets import ClassLabel, Features

        front = readme.read_text(encoding="utf-8").split("---")[1]
        info = yaml.safe_load(front).get("dataset_info")
        for entry in info if isinstance(info, list) else [info]:
            feature = Features._from_yaml_list(entry["features"]).get(label_col)
            if isinstance(feature, ClassLabel):
                return list(feature.names)
    except Exception:  # a card we can't parse just means numeric class names
        return None
    return None


def _image_ref(ref, base: Path | None):
    """Encoded bytes when the row has them, else an existing file path, else None."""
    if isinstance(ref, (bytes, bytearray)):
        return bytes(ref) or None
    if not isinstance(ref, dict):
        return None
    if ref.get("bytes"):
        return ref["bytes"]
    path = ref.get("path")
    if path:
        p = Path(path) if Path(path).is_absolute() or base is None else base / path
        if p.is_file() and p.stat().st_size > 0:
            return str(p)
    return None


# --- small helpers ----------------------------------------------------------------------------------------


def _split_dir(name: str) -> tuple[str, bool] | None:
    name = name.lower()
    partial = name.startswith("partial-")  # the Hub's conversion of a too-large split
    name = name.removeprefix("partial-")
    return (SPLIT_ALIASES[name], partial) if name in SPLIT_ALIASES else None


def _wanted_splits(splits) -> list[str] | None:
    if splits is None:
        return None
    splits = [splits] if isinstance(splits, str) else list(splits)
    return [SPLIT_ALIASES.get(s.lower(), s) for s in splits]


def _ordered(names) -> list[str]:
    return [s for s in SPLIT_ORDER if s in names] + sorted(s for s in names if s not in SPLIT_ORDER)


def _parquet_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet") if ".cache" not in p.parts)


def _found(unplaced: list[str]) -> str:
    return f" (found: {_few(unplaced, 3)})" if unplaced else ""
