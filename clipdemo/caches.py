"""The on-disk caches under one budget: ONNX exports, image features and class-text embeddings.

Everything clipdemo caches on disk lives under one folder (``Settings.cache_dir``, the checkpoint dir's
``.cache/``): feature files (``features-<key>.safetensors``: embeddings of a dataset split, a search index, the
scratch trainer's decoded pixels), class-text embeddings (``text-<key>.safetensors``) and ONNX exports
(``onnx/<model>-<tower>-<key>/``, ~480 MB for a ViT-B/32 model). Together they are kept under
``CLIPDEMO_CACHE_MAX_GB`` (``settings.cache_max_bytes``, 5 GB by default):

- ``used(path, owner)``: the cache entry at ``path`` was just loaded or written. Its last use is stamped on it:
  the modification time of the file (or of the export's folder), set on every load, since access times are not
  kept on ``noatime`` mounts and are bumped by any reader (``cache list`` included). It is *in use* while ``owner``
  (the tensor, classifier or session made from it) lives: a shared ``flock`` on its file, which the kernel drops
  when the process dies, so another process's ``cache prune`` sees it too.
- ``enforce_budget(root)``: after each cache write, entries are evicted least recently used first until the total
  fits the budget; an entry in use is never evicted (so the total may stay above the budget while it is).
- ``entries(root)``, ``prune(root, everything=False)``: what ``python -m clipdemo cache list`` and ``cache prune``
  show and do.

Only what clipdemo wrote is an entry: a file or folder whose name has our pattern *and* whose contents are ours
(the safetensors metadata our writers put there; an export folder holding only ``model.onnx`` and its weights).
Anything else under the folder is never counted, listed or deleted. An export folder is renamed to a hidden
``.partial`` name before it is deleted, so a reader sees a whole export or none (a deletion killed midway is
swept up like a killed export, ``atomic.remove_stale_partials``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import struct
import threading
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

from clipdemo import settings
from clipdemo.atomic import PARTIAL

log = logging.getLogger(__name__)

FEATURES, TEXT, ONNX = "features", "text", "onnx"
ONNX_DIR = "onnx"  # the exports' subfolder of the cache folder
_FILE_NAMES = {
    FEATURES: re.compile(r"features-[0-9a-f]{24}\.safetensors"),
    TEXT: re.compile(r"text-[0-9a-f]{24}\.safetensors"),
}
_METADATA_KEYS = {FEATURES: {"n", "version"}, TEXT: {"scoring"}}  # what our writers always put in the header
_EXPORT_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*-[0-9a-f]{24}")
_EXPORT_FILES = {"model.onnx", "model.onnx.data"}
_MAX_HEADER = 1 << 20  # a safetensors header we agree to read (ours are a few KB)


@dataclass(frozen=True)
class Entry:
    """One cache entry: ``path`` is the file, or the export's folder."""

    kind: str  # features, text or onnx
    path: Path
    size: int  # bytes on disk (an export: its files together)
    last_used: float  # seconds since the epoch
    in_use: bool  # by a live object of this or another process
    what: str = ""  # what it holds, in a few words

    def to_json(self, root: Path) -> dict:
        out = asdict(self)
        out.update(path=str(self.path.relative_to(root)), last_used=_utc(self.last_used))
        return out


# --- use: stamped on each load, held while its owner lives ---------------------------------------------------

_held: dict[Path, int] = {}  # anchor file -> how many live owners in this process
_held_lock = threading.Lock()


def anchor(path) -> Path:
    """The file that stands for an entry: the file itself, or an export folder's ``model.onnx``."""
    path = Path(os.path.abspath(path))  # one key per entry in this process, however the caller named its folder
    return path / "model.onnx" if path.is_dir() else path


def used(path, owner=None) -> None:
    """``path`` (a cache file or export folder) was just loaded or written: stamp its last use, and hold it as in
    use while ``owner`` lives. Never raises: a cache that can't be stamped or held is still a cache."""
    target = anchor(path)
    try:
        os.utime(path)  # an export's folder: its files stay as they were written
        if owner is None:
            return
        fd = os.open(target, os.O_RDONLY)
    except OSError:
        return
    _share(fd)
    with _held_lock:
        _held[target] = _held.get(target, 0) + 1
    weakref.finalize(owner, _release, target, fd)


def _share(fd: int, tries: int = 50) -> None:
    """A shared lock on ``fd``: waits out another process's brief exclusive one (``in_use`` takes one to test, a
    prune while it deletes the entry, after which this process's copy in memory is all there is)."""
    for _ in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:  # no locks on this filesystem: the in-process count is all there is
            return


def _release(target: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    with _held_lock:
        left = _held.get(target, 0) - 1
        if left > 0:
            _held[target] = left
        else:
            _held.pop(target, None)


def in_use(path) -> bool:
    """Whether a live object of this process, or another process, holds the entry at ``path``."""
    target = anchor(path)
    with _held_lock:
        if target in _held:
            return True
    try:
        fd = os.open(target, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:  # no locks here: only this process's own holds are known
        return False
    finally:
        os.close(fd)


# --- what is there ---------------------------------------------------------------------------------------


def entries(root) -> list[Entry]:
    """The cache entries clipdemo wrote under ``root`` (a cache folder), least recently used first."""
    root = Path(root)
    found = []
    for path in _children(root):
        kind = next((k for k, name in _FILE_NAMES.items() if name.fullmatch(path.name)), None)
        meta = _metadata(path) if kind else None
        if meta is not None and _METADATA_KEYS[kind] <= meta.keys():
            found.append(_entry(kind, path, [path], _describe(kind, meta)))
    for folder in _children(root / ONNX_DIR):
        files = _export_files(folder)
        if files is not None:
            found.append(_entry(ONNX, folder, files, folder.name[:-25]))  # the name without "-<key>"
    return sorted((e for e in found if e is not None), key=lambda e: e.last_used)


def _children(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError:  # no such folder (yet)
        return []


def _entry(kind: str, path: Path, files: list[Path], what: str) -> Entry | None:
    try:
        size = sum(f.stat().st_size for f in files)
        return Entry(kind, path, size, path.stat().st_mtime, in_use(path), what)
    except OSError:  # removed meanwhile (another process pruned it)
        return None


def _metadata(path: Path) -> dict | None:
    """The ``__metadata__`` of a safetensors file (its header only), or None if it is not one."""
    try:
        if not path.is_file() or path.is_symlink():
            return None
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > _MAX_HEADER:
                return None
            header = json.loads(f.read(length))
        meta = header.get("__metadata__")
        return meta if isinstance(meta, dict) else None
    except (OSError, ValueError, struct.error, AttributeError):
        return None


def _export_files(folder: Path) -> list[Path] | None:
    """An export folder's files, or None when ``folder`` is not an export we wrote (any other file in it)."""
    if not _EXPORT_NAME.fullmatch(folder.name) or folder.is_symlink() or not folder.is_dir():
        return None
    try:
        files = list(folder.iterdir())
    except OSError:
        return None
    names = {f.name for f in files}
    if "model.onnx" not in names or not names <= _EXPORT_FILES or any(not f.is_file() or f.is_symlink() for f in files):
        return None
    return files


def _describe(kind: str, meta: dict) -> str:
    try:
        inner = json.loads(meta.get("meta", "{}"))
    except ValueError:
        inner = {}
    backbone = Path(str(inner.get("backbone", ""))).name
    numerics = "/".join(str(inner[k]) for k in ("precision", "engine") if k in inner)
    if kind == FEATURES:
        return " ".join(x for x in (backbone, numerics, f"{meta.get('n', '?')} images") if x)
    return " ".join(x for x in (backbone, numerics, "class prompts") if x)


# --- eviction ------------------------------------------------------------------------------------------------


@dataclass
class Pruned:
    removed: list[Entry]
    kept: list[Entry]
    budget: int

    @property
    def total(self) -> int:
        return sum(e.size for e in self.kept)


def enforce_budget(root, budget: int | None = None) -> Pruned:
    """Evict the least recently used entries under ``root`` until they fit ``budget`` bytes
    (``CLIPDEMO_CACHE_MAX_GB`` by default); entries in use stay. Never raises: it runs after every cache write."""
    try:
        return prune(root, budget)
    except Exception as e:  # a cache we can't trim must not fail the work that wrote it
        log.warning("could not trim the cache in %s: %s", root, e)
        return Pruned([], [], budget or 0)


def prune(root, budget: int | None = None, everything: bool = False) -> Pruned:
    """Down to ``budget`` bytes, least recently used first (``everything``: every entry not in use)."""
    budget = settings.cache_max_bytes() if budget is None else budget
    found = entries(root)
    total = sum(e.size for e in found)
    removed, kept = [], []
    for entry in found:
        if (everything or total > budget) and not entry.in_use and _remove(entry):
            removed.append(entry)
            total -= entry.size
            log.info(
                "cache: removed %s (%s, last used %s)", entry.path.name, size_text(entry.size), _utc(entry.last_used)
            )
        else:
            kept.append(entry)
    return Pruned(removed, kept, budget)


def _remove(entry: Entry) -> bool:
    """Delete ``entry`` unless a process holds it (checked under an exclusive lock, kept while deleting)."""
    try:
        fd = os.open(anchor(entry.path), os.O_RDONLY)
    except FileNotFoundError:
        return False  # gone already (another process pruned it)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:
            pass  # no locks on this filesystem: the in-process check in entries() is all we have
        if entry.kind == ONNX:
            doomed = entry.path.with_name(f".{entry.path.name}.{os.getpid()}-{time.monotonic_ns()}{PARTIAL}")
            os.rename(entry.path, doomed)  # readers now see no export rather than half of one
            shutil.rmtree(doomed, ignore_errors=True)
        else:
            entry.path.unlink()
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)


# --- for people --------------------------------------------------------------------------------------------------


def size_text(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def table(root, found: list[Entry], budget: int) -> str:
    """``cache list`` for people: one line per entry, most recently used first, then the total against the budget."""
    root = Path(root)
    rows = [("kind", "size", "last used", "in use", "entry", "holds")]
    for e in reversed(found):
        rows.append(
            (
                e.kind,
                size_text(e.size),
                _utc(e.last_used),
                "yes" if e.in_use else "no",
                str(e.path.relative_to(root)),
                e.what,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows] if found else []
    total = sum(e.size for e in found)
    busy = sum(e.in_use for e in found)
    lines.append(
        f"{len(found)} entries ({busy} in use) in {root}: {size_text(total)} of a {size_text(budget)} budget"
        f" ({settings.CACHE_MAX_GB_ENV})"
    )
    return "\n".join(lines)


def summary(root, found: list[Entry], budget: int) -> dict:
    """``cache list``'s JSON: every entry, most recently used first, and the total against the budget."""
    return {
        "cache_dir": str(root),
        "entries": [e.to_json(Path(root)) for e in reversed(found)],
        "total_bytes": sum(e.size for e in found),
        "budget_bytes": budget,
        "in_use": sum(e.in_use for e in found),
    }
