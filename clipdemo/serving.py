"""What the app serves: the zero-shot model (with a fallback), and the promoted checkpoints of each family.

Served checkpoints are looked up on every request through ``served.json``, so a promote or rollback
(from the admin tab or the CLI) takes effect without a restart; a served folder rewritten in place is loaded
again on the next request (``load_encoder`` notices its files changed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipdemo.checkpoints import served_checkpoint
from clipdemo.encoders import Encoder, is_loaded, load_encoder
from clipdemo.errors import ModelUnavailable
from clipdemo.names import hide_path, model_name
from clipdemo.settings import Settings


@dataclass
class ZeroShotModel:
    encoder: Encoder
    notice: str | None  # after a fallback: why, and which model answers instead (the start-up log line)
    description: str  # the model (by its display name), device and precision, for the status line
    stand_in: str | None = None  # the display name of the model answering in its place, after a fallback
    banner: str | None = None  # after a fallback: which model answers, why, and what its scores are worth
    warning: str | None = None  # after a fallback: the same in one short sentence, for a result's reader


class Served:
    def __init__(self, settings: Settings):
        self.settings = settings

    def checkpoint(self, family: str) -> Path | None:
        folder = served_checkpoint(self.settings.checkpoint_dir, family)
        return folder if folder is not None and folder.is_dir() else None

    def models(self) -> dict[str, tuple[str, str]]:
        """Opaque key -> (display name, spec). Users and API callers see keys and names, never server paths."""
        models = {"default": (model_name(self.settings.model), self.settings.model)}
        for i, spec in enumerate(self.settings.extra_models):
            models[f"extra-{i + 1}"] = (model_name(spec), spec)
        scratch = self.checkpoint("scratch")
        if scratch is not None:
            models["scratch"] = (f"scratch CLIP (served version {scratch.name})", str(scratch))
        return models

    def model_choices(self) -> list[tuple[str, str]]:
        """(display name, key) for the zero-shot tab. ``scratch`` is always offered, so a model promoted after
        start-up can be asked for (through the API too) without the choices going stale."""
        choices = [(name, key) for key, (name, _) in self.models().items()]
        if "scratch" not in self.models():
            choices.append(("scratch CLIP (none served yet)", "scratch"))
        return choices

    def zero_shot(self, key: str | None = None) -> ZeroShotModel:
        """The asked-for model; if it can't be had, the served scratch checkpoint with a notice saying why."""
        models = self.models()
        if key == "scratch" and key not in models:
            raise ModelUnavailable(
                "No scratch CLIP is served yet; an admin can promote one (Admin tab, or "
                "python -m clipdemo promote scratch VERSION)."
            )
        if (key or "default") not in models:
            raise ModelUnavailable("That model is not one of this app's models.")
        name, spec = models[key or "default"]
        try:
            encoder = load_encoder(spec, background_export=True)  # a first start answers before its ONNX export
            return ZeroShotModel(encoder, None, hide_path(encoder.describe(), spec, name))
        except ModelUnavailable as e:
            why = hide_path(str(e), spec, Path(spec).name)  # visitors read it: the server's paths stay out
            fallback = self.checkpoint("scratch")
            if fallback is None or str(fallback) == spec:
                raise ModelUnavailable(why) from None
            encoder = load_encoder(str(fallback))
            described, stand_in = encoder.describe(), f"scratch CLIP (served version {fallback.name})"
            trained_on = encoder.card.get("trained_on") or "a small dataset"  # read with the checkpoint
            trained_on = hide_path(trained_on, str(fallback), fallback.name)  # visitors read it too
            banner = (
                f"**{stand_in} is answering in place of {name}**, which can't be loaded here: {why} "
                f"The stand-in was trained from scratch on {trained_on} and has never seen a photo, so its scores on "
                "photos mean nothing."
            )
            warning = (
                f"{stand_in} answered in place of {name}, which can't be loaded here; trained from scratch on "
                f"{trained_on}, it has never seen a photo, so its scores on photos mean nothing."
            )
            notice = f"{why} Using the served scratch model instead: {described}."
            return ZeroShotModel(encoder, notice, described, stand_in, banner, warning)

    def startup_line(self) -> str:
        """One log line at start-up: which model answers zero-shot requests, and why when it is a stand-in."""
        name = self.models()["default"][0]
        try:
            choice = self.zero_shot()
        except ModelUnavailable as e:
            return f"zero-shot: no model can answer ({name} can't be loaded and no scratch CLIP is served): {e}"
        if choice.stand_in:
            return f"zero-shot: {choice.stand_in} answers in place of {name}: {choice.notice}"
        return f"zero-shot: {choice.description} answers"

    def loaded(self, key: str | None = None) -> bool:
        """Whether the model behind ``key`` is in memory already (else the first call loads or downloads it)."""
        models = self.models()
        return (key or "default") in models and is_loaded(models[key or "default"][1])
