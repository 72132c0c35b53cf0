"""The one way clipdemo writes a file that others may read while it is written: all of it, or none of it.

``write_atomic(path, write)`` has ``write(tmp_path)`` fill a temporary file next to ``path`` (a name unique to
this writer, so two processes never share one), fsyncs it, and renames it over ``path``; on any error, or an
interrupt, the temporary file is removed and ``path`` is left as it was. A reader sees the old file or the
new one, never half of one; a process killed mid-write leaves at worst a hidden ``.NAME.*.tmp`` file.
"""

from __future__ import annotations

import json
import os
import tempfile
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
