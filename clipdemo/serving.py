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

    def model_choices(self) -> list[str]:
        choices = [self.settings.model, *self.settings.extra_models]
        scratch = self.checkpoint("scratch")
        if scratch is not None:
            choices.append(str(scratch))
        return list(dict.fromkeys(choices))

    def zero_shot(self, spec: str | None = None) -> ZeroShotModel:
        """The asked-for model; if it can't be had, the served scratch checkpoint with a notice saying why."""
        spec = spec or self.settings.model
        if spec not in self.model_choices():
            raise ModelUnavailable(f"Model '{spec[:80]}' is not one of this app's models.")
        try:
            return ZeroShotModel(load_encoder(spec), None)
        except ModelUnavailable as e:
            fallback = self.checkpoint("scratch")
            if fallback is None or str(fallback) == spec:
                raise
            encoder = load_encoder(str(fallback))
            return ZeroShotModel(encoder, f"{e} Using the served scratch model instead: {encoder.describe()}.")
