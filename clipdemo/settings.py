"""Everything configurable comes from the environment, read in one place (secrets included: never from files)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from clipdemo.encoders import default_model

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Settings:
    model: str = field(default_factory=default_model)  # CLIPDEMO_MODEL: Hub id, HF folder or scratch checkpoint
    extra_models: list[str] = field(default_factory=list)  # CLIPDEMO_EXTRA_MODELS: more choices for the zero-shot tab
    checkpoint_dir: Path = REPO_ROOT / "checkpoints"  # CLIPDEMO_CHECKPOINT_DIR (on Spaces: /data/checkpoints)
    data_root: Path | None = None  # CLIPDEMO_DATA_ROOT: the only folders the admin tab may train on
    admin_token: str | None = field(default=None, repr=False)  # CLIPDEMO_ADMIN_TOKEN: enables the admin tab
    admin_users: tuple[str, ...] = ()  # CLIPDEMO_ADMIN_USERS: HF accounts let in by signing in (on a Space only)
    max_file_size: str = "10mb"  # CLIPDEMO_MAX_FILE_SIZE: Gradio's upload limit

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        env = os.environ
        values = dict(
            model=default_model(),
            extra_models=[m.strip() for m in env.get("CLIPDEMO_EXTRA_MODELS", "").split(",") if m.strip()],
            checkpoint_dir=Path(env.get("CLIPDEMO_CHECKPOINT_DIR") or REPO_ROOT / "checkpoints"),
            data_root=Path(env["CLIPDEMO_DATA_ROOT"]) if env.get("CLIPDEMO_DATA_ROOT") else None,
            admin_token=env.get("CLIPDEMO_ADMIN_TOKEN") or None,
            admin_users=tuple(u.strip() for u in env.get("CLIPDEMO_ADMIN_USERS", "").split(",") if u.strip()),
            max_file_size=env.get("CLIPDEMO_MAX_FILE_SIZE", "10mb"),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
