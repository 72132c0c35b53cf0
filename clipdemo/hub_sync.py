"""Keep promoted checkpoints across Space restarts: push one to a Hub model repo, pull it back at start-up.

A Space's disk is wiped on restart except ``/data`` (persistent storage, a paid option). Without it, push a
promoted checkpoint to a model repo (``CLIPDEMO_HUB_REPO``, e.g. ``you/clipdemo-checkpoints``; the write token
from the ``HF_TOKEN`` Space secret) and let ``pull_at_startup`` bring it back. The repo holds one folder per
family (``scratch/``, ``cars-head/``), each a plain clipdemo checkpoint.

Every call first probes the Hub (one TCP connect, 2 s at most), so an unreachable Hub gives one clear sentence
at once instead of ~30 s of retries. Tokens come from the environment (or an argument) and are never logged.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from clipdemo import hub_access
from clipdemo.atomic import write_folder_atomic
from clipdemo.checkpoints import CheckpointError, claim_version, load_checkpoint, promote, served_checkpoint
from clipdemo.errors import UserError, first_line
from clipdemo.families import FAMILIES
from clipdemo.settings import HUB_REPO_ENV, hf_token, hub_repo

log = logging.getLogger(__name__)

UNREACHABLE = (
    "The Hugging Face Hub is unreachable from this machine, so nothing was {what}; the local checkpoints are unchanged."
)


class HubSyncError(UserError):
    """A push or pull could not be done; the message is one sentence fit to show an admin."""


def _token(token: str | None) -> str | None:
    return token or hf_token() or None


def _require_hub(what: str) -> None:

    if not hub_access.hub_reachable():
        raise HubSyncError(UNREACHABLE.format(what=what))


def _hub_failure(action: str, repo_id: str, e: Exception) -> HubSyncError:
    kind = type(e).__name__
    if kind == "RepositoryNotFoundError":
        return HubSyncError(f"Model repo '{repo_id}' was not found on the Hub (or the token can't see it).")
    return HubSyncError(f"Could not {action} '{repo_id}' ({kind}: {first_line(e)}).")


def push_checkpoint(folder, repo_id: str, token: str | None = None, family: str | None = None) -> str:
    """Upload the checkpoint ``folder`` to ``<repo_id>/<family>/`` (a private model repo, created if needed).

    ``family`` defaults to the folder's parent name (``<root>/<family>/<version>``). Returns a short report.
    """
    folder = Path(folder)
    load_checkpoint(folder)  # push only what would load
    family = family or folder.parent.name
    if family not in FAMILIES:
        raise HubSyncError(f"Can't tell which family '{folder.name}' belongs to; pass one of {', '.join(FAMILIES)}.")
    _require_hub("pushed")
    from huggingface_hub import HfApi

    api = HfApi(token=_token(token))
    try:
        api.create_repo(repo_id, repo_type="model", private=True, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=str(folder),
            path_in_repo=family,
            commit_message=f"clipdemo: {family} version {folder.name}",
            delete_patterns=["*"],
        )
    except Exception as e:  # the Hub's errors come in many classes; one sentence each is enough
        log.warning("push of %s to %s failed", folder, repo_id, exc_info=True)
        raise _hub_failure("push to", repo_id, e) from None
    return f"Pushed {family} version {folder.name} to the Hub repo {repo_id}."


def pull_checkpoint(repo_id: str, dest_root, family: str, token: str | None = None) -> Path:
    """Download ``<repo_id>/<family>/`` into a new version folder under ``dest_root`` and promote it.

    The download goes to a hidden temporary folder that is checked (it must load) before it is renamed into
    place, so a failed pull leaves the served version as it was. Returns the new version folder.
    """
    if family not in FAMILIES:
        raise HubSyncError(f"Unknown family '{family}'; choose one of {', '.join(FAMILIES)}.")
    _require_hub("pulled")
    from huggingface_hub import snapshot_download

    base = Path(dest_root) / family
    base.mkdir(parents=True, exist_ok=True)

    def fill(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(dir=base, prefix=".hub-") as download:
            try:
                snapshot_download(
                    repo_id, repo_type="model", allow_patterns=[f"{family}/*"], local_dir=download, token=_token(token)
                )
            except Exception as e:
                log.warning("pull of %s/%s failed", repo_id, family, exc_info=True)
                raise _hub_failure("download from", repo_id, e) from None
            try:
                load_checkpoint(Path(download) / family)
            except CheckpointError:
                raise HubSyncError(f"The Hub repo {repo_id} has no loadable {family} checkpoint.") from None
            for f in (Path(download) / family).iterdir():  # the checkpoint's files, not the Hub's .cache beside them
                os.replace(f, tmp / f.name)

    with claim_version(dest_root, family, "hub") as claim:
        write_folder_atomic(claim.folder, fill)
        promote(dest_root, family, claim.folder.name, claim=claim)
    return claim.folder


def pull_at_startup(settings) -> str:
    """Pull each family that has nothing served locally yet from ``CLIPDEMO_HUB_REPO``; never raises.

    Families already served locally (e.g. on ``/data`` persistent storage) are left alone, so a restart never
    undoes a promote. Returns one line for the log.
    """
    repo_id = hub_repo()
    if not repo_id:
        return f"{HUB_REPO_ENV} is not set: no checkpoints pulled from the Hub."
    missing = [f for f in FAMILIES if served_checkpoint(settings.checkpoint_dir, f) is None]
    if not missing:
        return "Every family already has a served checkpoint: nothing pulled from the Hub."
    try:
        _require_hub("pulled")
    except HubSyncError as e:
        return str(e)
    notes = []
    for family in missing:
        try:
            notes.append(f"pulled {family} as version {pull_checkpoint(repo_id, settings.checkpoint_dir, family).name}")
        except (HubSyncError, CheckpointError, OSError) as e:
            notes.append(f"{family}: {e}")
        except Exception as e:  # start-up must go on whatever the Hub says
            log.warning("start-up pull of %s failed", family, exc_info=True)
            notes.append(f"{family}: failed ({type(e).__name__})")
    return f"Hub {repo_id}: " + "; ".join(notes) + "."
