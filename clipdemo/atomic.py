"""The one way clipdemo writes a file or a folder that others may read while it is written: all of it, or none.

``write_atomic(path, write)`` has ``write(tmp_path)`` fill a temporary file next to ``path`` (a name unique to
this writer, so two processes never share one), fsyncs it, and renames it over ``path``; on any error, or an
interrupt, the temporary file is removed and ``path`` is left as it was. A reader sees the old file or the
new one, never half of one; a process killed mid-write leaves at worst a hidden ``.NAME.*.tmp`` file.

``write_folder_atomic(folder, fill)`` does the same for a folder: ``fill(tmp)`` writes into a hidden sibling
``.NAME.*.partial``, every file in it is fsynced, and ``publish(tmp, folder)`` renames it into place (checkpoints,
ONNX exports, the built-in dataset and Hub downloads all go through it). Who may write a folder at all is the
checkpoint lifecycle's claim (``checkpoints.Claim``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def write_atomic(path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_json_atomic(path, data) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True)))


def fsync_dir(path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories can't be opened, as on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


PARTIAL = ".partial"  # the suffix of a folder being written


def write_folder_atomic(
    folder, fill: Callable[[Path], None], publish: Callable[[Path, Path], None] = os.rename
) -> Path:
    """Write ``folder`` whole or not at all: ``fill(tmp)`` fills a new hidden sibling, its files are fsynced, then
    ``publish(tmp, folder)`` puts it in place (``os.rename`` by default, which refuses a folder that holds
    anything). On any error or interrupt the sibling is removed and ``folder`` is as it was."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=PARTIAL))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache or dataset from other users
    try:
        fill(tmp)
        for path in sorted(tmp.rglob("*"), reverse=True):  # files, then the folders that hold them
            if path.is_dir():
                fsync_dir(path)
            else:
                _fsync_file(path)
        fsync_dir(tmp)
        publish(tmp, folder)
        fsync_dir(folder.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already gone once published
    return folder


def remove_stale_partials(root, older_than: float) -> None:
    """Remove the ``*.partial`` folders under ``root`` left by writers killed more than ``older_than`` s ago."""
    for tmp in Path(root).glob(f".*{PARTIAL}"):
        try:
            if time.time() - tmp.stat().st_mtime > older_than:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
