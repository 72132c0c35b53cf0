"""What the app serves: the zero-shot model (with a fallback), and the promoted checkpoints of each family.

Served checkpoints are looked up on every request through ``served.json``, so a promote or rollback
(from the admin tab or the CLI) takes effect without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipdemo.checkpoints import served_checkpoint
from clipdemo.encoders import Encoder, ModelUnavailable, load_encoder
from clipdemo.settings import Settings


def _display(spec: str) -> str:
    """A Hub id as is; a local folder by its name only (its path stays on the server)."""
    path = Path(spec).expanduser()
    return f"local model '{path.name}'" if path.is_absolute() or path.exists() else spec


@dataclass
class ZeroShotModel:
    encoder: Encoder
    notice: str | None  # shown to the user when we fell back to another model


class Served:
    def __init__(self, settings: Settings):
        self.settings = settings

    def checkpoint(self, family: str) -> Path | None:
        folder = served_checkpoint(self.settings.checkpoint_dir, family)
        return folder if folder is not None and folder.is_dir() else None

    def models(self) -> dict[str, tuple[str, str]]:
        """Opaque key -> (display name, spec). Users and API callers see keys and names, never server paths."""
        models = {"default": (_display(self.settings.model), self.settings.model)}
        for i, spec in enumerate(self.settings.extra_models):
            models[f"extra-{i + 1}"] = (_display(spec), spec)
        scratch = self.checkpoint("scratch")
        if scratch is not None:
            models["scratch"] = (f"scratch CLIP (served version {scratch.name})", str(scratch))
        return models

    def model_choices(self) -> list[tuple[str, str]]:
        return [(name, key) for key, (name, _) in self.models().items()]

    def zero_shot(self, key: str | None = None) -> ZeroShotModel:
        """The asked-for model; if it can't be had, the served scratch checkpoint with a notice saying why."""
        models = self.models()
        if (key or "default") not in models:
            raise ModelUnavailable("That model is not one of this app's models.")
        spec = models[key or "default"][1]
        try:
            return ZeroShotModel(load_encoder(spec), None)
        except ModelUnavailable as e:
            fallback = self.checkpoint("scratch")
            if fallback is None or str(fallback) == spec:
                raise
            encoder = load_encoder(str(fallback))
            return ZeroShotModel(encoder, f"{e} Using the served scratch model instead: {encoder.describe()}.")
