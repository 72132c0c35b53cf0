"""Checkpoint folders: ``weights.safetensors`` + ``config.json`` (rebuilds the model) + ``card.json``.

Writes are atomic: everything goes into a hidden temporary sibling folder that is renamed into place
only once complete and fsynced, so a crash mid-save leaves either the old folder or the new one, never
half of one. Loading refuses damaged or foreign folders with one clear sentence.

A save never deletes what it did not write: it replaces only a new or empty folder, or a checkpoint of the
same kind holding nothing but the three checkpoint files. A run claims its folder for its whole length
(``claim_version``, ``claim_output``): an exclusive lock on a hidden ``.<name>.lock`` sibling that the kernel
drops if the process dies, so two runs never write the same folder and a killed run blocks nothing.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError

from clipdemo.atomic import fsync_dir, write_folder_atomic, write_json_atomic
from clipdemo.errors import UserError
from clipdemo.families import (  # noqa: F401 - FAMILIES re-exported for the UI
    CHECKPOINT_KIND,
    FAMILIES,
    FAMILY_OF_KIND,
    canonical_kind,
)

if TYPE_CHECKING:  # tensors are read and written through safetensors, imported when they are
    import torch

WEIGHTS, CONFIG, CARD = "weights.safetensors", "config.json", "card.json"


class CheckpointError(UserError):
    """A checkpoint folder is missing, damaged, or of another kind; the message is fit to show a user."""


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def check_replaceable(folder, kind: str) -> None:
    """Refuse (``CheckpointError``, one sentence) unless writing a ``kind`` checkpoint to ``folder`` loses
    nothing: it must not exist, be an empty folder, or hold only a ``kind`` checkpoint's three files."""
    kind = canonical_kind(kind)
    folder, family = Path(folder), FAMILY_OF_KIND.get(kind, kind)
    if not os.path.lexists(folder):
        return
    if folder.is_symlink() or not folder.is_dir():
        raise CheckpointError(f"'{folder}' exists and is not a folder; give a new folder to write the checkpoint to.")
    names = sorted(os.listdir(folder))
    foreign = [n for n in names if n not in (WEIGHTS, CONFIG, CARD)]
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise CheckpointError(
            f"'{folder}' already holds other files ({', '.join(foreign[:3])}{more}); give a new "
            f"folder, or an existing {family} checkpoint folder to replace."
        )
    if names:
        found = _read_json(folder, CONFIG).get("kind")
        if found != kind:
            found = FAMILY_OF_KIND.get(found, found or "non-clipdemo")
            raise CheckpointError(f"'{folder}' holds a {found} checkpoint, not a {family} one; give a new folder.")


def save_file(tensors: dict, path, metadata: dict | None = None) -> None:
    """safetensors' writer, imported on first use: listing or promoting versions never pays for torch."""
    from safetensors.torch import save_file

    save_file(tensors, path, metadata=metadata)


def load_file(path) -> dict:
    """safetensors' reader (never pickle), imported on first use."""
    from safetensors.torch import load_file

    return load_file(path)


def _remove_ours(folder: Path) -> None:
    """Delete a checkpoint folder file by file: anything else in it stays, and so does the folder."""
    for name in (WEIGHTS, CONFIG, CARD):
        (folder / name).unlink(missing_ok=True)
    os.rmdir(folder)


def save_checkpoint(folder, state_dict: dict[str, torch.Tensor], config: dict, card: dict) -> Path:
    """Write a complete checkpoint folder atomically; ``config['kind']`` names what it rebuilds.

    An existing folder of the same name is replaced only after the new one is complete, and only if that
    loses nothing (``check_replaceable``); anything else is refused with ``CheckpointError``.
    """
    folder = Path(folder)
    if "kind" not in config:
        raise ValueError("config needs a 'kind'")
    config = {**config, "kind": canonical_kind(config["kind"])}
    check_replaceable(folder, config["kind"])

    def fill(tmp: Path) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        save_file(tensors, tmp / WEIGHTS, metadata={"kind": config["kind"]})
        for name, data in ((CONFIG, config), (CARD, {"created": now_iso(), **card, "kind": config["kind"]})):
            (tmp / name).write_text(json.dumps(data, indent=2, sort_keys=True))

    return write_folder_atomic(folder, fill, lambda tmp, target: _swap_in(tmp, target, config["kind"]))


def _swap_in(new: Path, folder: Path, kind: str) -> None:
    """Rename the complete folder ``new`` to ``folder``. An existing ``folder`` stays whole until the new one is in
    place (a crash in between leaves ``.<name>.old``, which loading puts back), then is deleted file by file."""
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old")
        if os.path.lexists(old):  # left by a save killed after its second rename
            check_replaceable(old, kind)
            _remove_ours(old)
        os.replace(folder, old)
        os.replace(new, folder)
        _remove_ours(old)
    else:
        os.replace(new, folder)
    fsync_dir(folder.parent)


def recover_interrupted_save(folder: Path) -> None:
    """A save killed between its two renames leaves only ``.<name>.old``: put it back."""
    old = folder.with_name(f".{folder.name}.old")
    if not folder.exists() and old.is_dir():
        try:
            os.replace(old, folder)
        except OSError:  # another process got there first
            pass


def read_card(folder) -> dict:
    return _read_json(Path(folder), CARD)


def _read_json(folder: Path, name: str) -> dict:
    try:
        data = json.loads((folder / name).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"'{folder}' is not a clipdemo checkpoint: {name} is missing.") from None
    except (OSError, ValueError):
        raise CheckpointError(f"Checkpoint '{folder}' is damaged: {name} is not valid JSON.") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"Checkpoint '{folder}' is damaged: {name} is not a JSON object.")
    if name == CONFIG and "kind" in data:
        data["kind"] = canonical_kind(data["kind"])
    return data


def load_checkpoint(folder, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Return ``(state_dict, config, card)``; refuse missing, damaged or other-kind folders clearly."""
    folder, kind = Path(folder), canonical_kind(kind)
    recover_interrupted_save(folder)
    if not folder.is_dir():
        raise CheckpointError(f"Checkpoint folder '{folder}' does not exist.")
    config, card = _read_json(folder, CONFIG), _read_json(folder, CARD)
    if kind is not None and config.get("kind") != kind:
        found = config.get("kind") or "not a clipdemo checkpoint"
        raise CheckpointError(f"'{folder}' holds a {found!s} checkpoint, not a {kind} one.")
    try:
        state = load_file(folder / WEIGHTS)  # safetensors only: never pickle
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint '{folder}' is damaged: {WEIGHTS} is missing.") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"Checkpoint '{folder}' is damaged: {WEIGHTS} can't be read ({e}).") from None
    return state, config, card


# --- versions: <root>/<family>/<version>/ plus <root>/<family>/served.json ------------------------------------
#
# A family is "scratch" or "cars-head". Each training run writes a new version folder; ``served.json`` names
# the one the app serves and keeps the previous ones for rollback. It is replaced atomically, so the app
# always reads a whole pointer to a whole checkpoint.

SERVED = "served.json"


class Claim:
    """The exclusive right to write ``folder`` while held: an ``flock`` on ``.<name>.lock`` beside it, which the
    kernel releases if the process dies. Use as a context manager, or call ``release()``.

    The run writes to ``out``: ``folder`` itself, or, when ``folder`` already holds a checkpoint, a hidden
    ``.<name>.run`` beside it, so what is there (perhaps the served version) stays whole while the run trains.
    ``commit()`` then puts a finished run's checkpoint in its place; ``set_aside()`` leaves it alone and keeps an
    interrupted run's checkpoint beside it, as ``<name>-interrupted``.
    """

    def __init__(self, folder: Path, fd: int, staged: bool = False):
        self.folder, self._fd = folder, fd
        self.out = folder.with_name(f".{folder.name}.run") if staged else folder

    def commit(self) -> Path:
        if self.out != self.folder and self.out.exists():
            _swap_in(self.out, self.folder, _read_json(self.out, CONFIG).get("kind"))
        return self.folder

    def set_aside(self) -> Path:
        if self.out == self.folder or not self.out.exists():
            return self.folder
        with _claim_new(self.folder.parent, f"{self.folder.name}-interrupted") as aside:
            os.replace(self.out, aside.folder)
            return aside.folder

    def release(self) -> None:
        if self._fd is None:
            return
        lock = _lock_path(self.folder)
        try:  # remove the lock file while still holding it; a waiting claimer re-checks the inode (_try_lock)
            if os.stat(lock).st_ino == os.fstat(self._fd).st_ino:
                lock.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_path(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.lock")


def _holder(folder: Path) -> str:
    """Who holds ``folder``'s claim, as its lock file says (pid, host, since when)."""
    try:
        return _lock_path(folder).read_text().strip() or "another process"
    except OSError:
        return "another process"


def _try_lock(folder: Path) -> int | None:
    """An fd holding the exclusive lock of ``folder``, or None when another run holds it."""
    path = _lock_path(folder)
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {now_iso()}".encode())
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder released and removed it after we opened it: take the new one


def claim_version(root, family: str, label: str = "run") -> Claim:
    """Claim a new version folder ``<root>/<family>/<UTC time>-<label>[-n]``: unique even for runs started in
    the same second, in this process or another. The folder itself appears with the run's first save."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / family
    base.mkdir(parents=True, exist_ok=True)
    return _claim_new(base, f"{stamp}-{label}")


def _claim_new(base: Path, stem: str) -> Claim:
    """Claim ``base/<stem>``, or ``<stem>-2``, ``-3``… : the first name that no folder and no other run has."""
    for n in itertools.count(1):
        folder = base / (stem if n == 1 else f"{stem}-{n}")
        fd = None if os.path.lexists(folder) else _try_lock(folder)
        if fd is not None:
            claim = Claim(folder, fd)
            if not os.path.lexists(folder):  # still free now that we hold its lock
                return claim
            claim.release()


def claim_output(folder, family: str) -> Claim:
    """Claim a folder a run was told to write (``--out``): a new or empty folder, or a checkpoint of ``family``
    that a finished run replaces (see ``Claim``). Anything else, or a folder another run is writing, is refused
    before any work."""
    folder, kind = Path(folder), CHECKPOINT_KIND[family]
    check_replaceable(folder, kind)  # before creating anything
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        fd = _try_lock(folder)
    except OSError as e:
        raise CheckpointError(f"Can't write to '{folder}': {e.strerror or e}.") from None
    if fd is None:
        raise CheckpointError(
            f"Another run is writing '{folder}' ({_holder(folder)}); wait for it to finish or give another --out."
        )
    try:
        check_replaceable(folder, kind)  # again, now that no other run can change it
        claim = Claim(folder, fd, staged=folder.is_dir() and any(folder.iterdir()))
        if os.path.lexists(claim.out):  # left by a killed run (we hold the lock: no live run writes it)
            check_replaceable(claim.out, kind)
            _remove_ours(claim.out)
    except BaseException:
        Claim(folder, fd).release()
        raise
    return claim


def list_versions(root, family: str) -> list[dict]:
    """Every complete version (newest first) with its card; damaged folders are listed with their error."""
    base = Path(root) / family
    served = served_version(root, family)
    rows = []
    for folder in sorted((p for p in base.glob("*") if p.is_dir() and not p.name.startswith(".")), reverse=True):
        try:
            card, error = read_card(folder), None
        except CheckpointError as e:
            card, error = {}, str(e)
        rows.append(
            {"version": folder.name, "path": str(folder), "served": folder.name == served, "card": card, "error": error}
        )
    return rows


def _served_state(root, family: str) -> dict:
    try:
        state = json.loads((Path(root) / family / SERVED).read_text())
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def served_version(root, family: str) -> str | None:
    return _served_state(root, family).get("current")


def served_checkpoint(root, family: str) -> Path | None:
    """The folder the app serves for ``family``, or None when nothing is promoted yet."""
    version = served_version(root, family)
    return Path(root) / family / version if version else None


def check_not_running(folder, mine: Claim | None = None) -> None:
    """Refuse (``CheckpointError``, one sentence naming the run) when a live run holds ``folder`` (its claim's lock):
    what it has written so far may be replaced at its next save. ``mine``: the caller's own claim of it."""
    folder = Path(folder)
    if mine is not None and mine._fd is not None and mine.folder.resolve() == folder.resolve():
        return
    if not _lock_path(folder).exists():
        return
    fd = _try_lock(folder)
    if fd is not None:  # nobody holds it (a killed run's lock: the kernel dropped it)
        Claim(folder, fd).release()
        return
    raise CheckpointError(
        f"'{folder.name}' is still being written by a live run ({_holder(folder)}); promote it once that run has "
        "finished."
    )


def promote(root, family: str, version: str, *, claim: Claim | None = None) -> Path:
    """Serve ``version`` from now on; it must load (a damaged folder is refused, the served one stays) and no live
    run may be writing it (``check_not_running``; ``claim``: the caller's own, as a run promoting what it wrote)."""
    folder = Path(root) / family / version
    if Path(version).name != version or version.startswith("."):
        raise CheckpointError(f"'{version}' is not a version name.")
    check_not_running(folder, claim)
    load_checkpoint(folder)  # refuse what would not load
    state = _served_state(root, family)
    history = [v for v in state.get("history", []) if v != version]
    if state.get("current") and state["current"] != version:
        history.append(state["current"])
    write_json_atomic(
        Path(root) / family / SERVED, {"current": version, "history": history[-20:], "updated": now_iso()}
    )
    return folder


def import_checkpoint(root, family: str, folder, *, claim: Claim | None = None) -> Path:
    """Copy the checkpoint ``folder`` (anywhere) into ``<root>/<family>/`` as a new version; return that version.

    It must load and be of ``family``'s kind; the copy is written atomically and the original is left as is.
    For the CLI only: the admin tab's clients name versions, never server paths.
    """
    folder = Path(folder)
    check_not_running(folder, claim)
    state, config, card = load_checkpoint(folder, kind=CHECKPOINT_KIND[family])
    label = "".join(c if c.isalnum() or c in "-_" else "-" for c in folder.resolve().name)[:40].strip("-_") or "import"
    with claim_version(root, family, label) as claim:
        return save_checkpoint(claim.folder, state, config, card)


def folder_stamp(folder) -> tuple | None:
    """Changes whenever ``folder`` is replaced or a file in it is rewritten (inode, size, mtime of each file);
    None if it can't be read. Cheap enough to check on every request (one ``scandir``)."""
    try:
        with os.scandir(folder) as entries:
            files = sorted((e.name, e.inode(), e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file())
        return (os.stat(folder).st_ino, *files)
    except OSError:
        return None


def rollback(root, family: str) -> Path:
    """Serve the previously served version again."""
    state = _served_state(root, family)
    history = list(state.get("history", []))
    while history:
        previous = history.pop()
        if (Path(root) / family / previous).is_dir():
            write_json_atomic(
                Path(root) / family / SERVED, {"current": previous, "history": history, "updated": now_iso()}
            )
            return Path(root) / family / previous
    raise CheckpointError(f"There is no earlier {family} version to roll back to.")
