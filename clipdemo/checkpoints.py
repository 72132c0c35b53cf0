"""Checkpoint folders: ``weights.safetensors`` + ``config.json`` (rebuilds the model) + ``card.json``.

Writes are atomic: everything goes into a hidden temporary sibling folder that is renamed into place
only once complete and fsynced, so a crash mid-save leaves either the old folder or the new one, never
half of one. Loading refuses damaged or foreign folders with one clear sentence.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clipdemo.atomic import fsync_dir, write_json_atomic
from clipdemo.errors import UserError
from clipdemo.families import FAMILIES  # noqa: F401 - re-exported for the UI and hub_sync

WEIGHTS, CONFIG, CARD = "weights.safetensors", "config.json", "card.json"


class CheckpointError(UserError):
    """A checkpoint folder is missing, damaged, or of another kind; the message is fit to show a user."""


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def save_checkpoint(folder, state_dict: dict[str, torch.Tensor], config: dict, card: dict) -> Path:
    """Write a complete checkpoint folder atomically; ``config['kind']`` names what it rebuilds.

    An existing folder of the same name is replaced only after the new one is complete.
    """
    folder = Path(folder)
    if "kind" not in config:
        raise ValueError("config needs a 'kind'")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".partial"))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        save_file(tensors, tmp / WEIGHTS, metadata={"kind": config["kind"]})
        card = {"created": now_iso(), **card, "kind": config["kind"]}
        for name, data in ((CONFIG, config), (CARD, card)):
            (tmp / name).write_text(json.dumps(data, indent=2, sort_keys=True))
        for name in (WEIGHTS, CONFIG, CARD):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        if folder.exists():  # swap: the old folder stays whole until the new one is in place
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
        fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


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
    return data


def load_checkpoint(folder, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Return ``(state_dict, config, card)``; refuse missing, damaged or other-kind folders clearly."""
    folder = Path(folder)
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


def new_version_dir(root, family: str, label: str = "run") -> Path:
    """A fresh, not yet existing version folder name: ``<family>/<UTC time>-<label>``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / family
    candidate, n = base / f"{stamp}-{label}", 1
    while candidate.exists():
        n += 1
        candidate = base / f"{stamp}-{label}-{n}"
    return candidate


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
        rows.append({"version": folder.name, "path": str(folder), "served": folder.name == served, "card": card, "error": error})
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


def promote(root, family: str, version: str) -> Path:
    """Serve ``version`` from now on; it must load (a damaged folder is refused, the served one stays)."""
    folder = Path(root) / family / version
    if Path(version).name != version or version.startswith("."):
        raise CheckpointError(f"'{version}' is not a version name.")
    load_checkpoint(folder)  # refuse what would not load
    state = _served_state(root, family)
    history = [v for v in state.get("history", []) if v != version]
    if state.get("current") and state["current"] != version:
        history.append(state["current"])
    write_json_atomic(Path(root) / family / SERVED, {"current": version, "history": history[-20:], "updated": now_iso()})
    return folder


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
