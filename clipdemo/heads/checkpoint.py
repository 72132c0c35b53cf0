"""A head checkpoint: one schema, one writer, one loader, for every head clipdemo trains.

The Stanford Cars head (``cars.train_head``) and a Your-classes head (``fewshot.save_head``) are two uses of it.
The folder (``checkpoints.save_checkpoint``: ``weights.safetensors``, ``config.json``, ``card.json``, kind
``clip-head``) holds the head, the class text embeddings and the backbone family's scoring rule (so serving
zero-shot needs no text tower), and the backbone's spec and fingerprint: ``HeadClassifier`` refuses any other
backbone. Heads written before the rule was recorded are CLIP heads (``scoring.Rule.from_config``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from clipdemo import __version__
from clipdemo.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from clipdemo.errors import first_line
from clipdemo.families import HEAD_KIND
from clipdemo.features import Backbone
from clipdemo.heads.fit import FitResult
from clipdemo.heads.modules import build_head, predict_logits
from clipdemo.heads.specs import HEADS
from clipdemo.scoring import Rule, ZeroShotClassifier
from clipdemo.zeroshot import Prediction, rank


def save_head(
    out_dir,
    fit: FitResult,
    zeroshot: ZeroShotClassifier,
    backbone: Backbone,
    *,
    title: str,
    seed: int,
    trained_on: str,
    card: dict,
) -> Path:
    """Write ``fit``'s head over ``backbone`` with its zero-shot classifier; ``card`` adds what the use knows
    (dataset, split, metrics, skipped images, notes) to what every head card says."""
    rule, (n_classes, embed_dim) = zeroshot.rule, zeroshot.embeddings.shape
    config = {
        "kind": HEAD_KIND,
        "head": {"name": fit.name, "num_classes": n_classes, "embed_dim": embed_dim},
        "backbone": {"spec": backbone.spec, "fingerprint": backbone.fingerprint},
        "templates": list(zeroshot.templates),
        "scoring": rule.to_config(),
        "logit_scale": rule.scale,
    }
    common = {
        "title": title,
        "head": fit.name,
        "head_description": HEADS[fit.name].description,
        "backbone": backbone.spec,
        "backbone_fingerprint": backbone.fingerprint,
        "classes": list(zeroshot.names),
        "seed": seed,
        "hyperparameters": fit.hyperparameters,
        "selection": fit.selection,
        "templates": list(zeroshot.templates),
        "scoring": rule.to_config(),
        "validation": fit.validation_card(),
        "run": fit.run_card(),
        "trained_on": trained_on,
        "library_version": __version__,
    }
    state = {**{f"head.{k}": v for k, v in fit.head.state_dict().items()}, "zeroshot.classifier": zeroshot.embeddings}
    return save_checkpoint(out_dir, state, config, {**common, **card})


class HeadClassifier:
    """A trained head checkpoint on its backbone: ``predict(image) -> (head top-k, zero-shot top-k)``.

    ``backbone``: defaults to the one the card records; any other (different weights or preprocessing, by
    fingerprint) is refused with ``CheckpointError``. ``load_backbone=False`` defers loading the model until
    an image must be encoded (evaluation on cached features never loads it); otherwise a backbone that
    can't be had raises ``ModelUnavailable`` here.
    """

    def __init__(
        self,
        checkpoint_dir,
        backbone=None,
        *,
        device: str = "auto",
        precision: str | None = None,
        load_backbone: bool = True,
    ):
        self.path = Path(checkpoint_dir)
        state, config, self.card = load_checkpoint(self.path, kind=HEAD_KIND)
        try:
            self.head, self.zeroshot = _rebuild(state, config, list(self.card.get("classes") or []))
            self.recorded = config["backbone"]
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(
                f"Checkpoint '{self.path}' is damaged: its config and weights don't fit ({first_line(e)})."
            ) from None
        self.class_names = list(self.zeroshot.names)
        self.backbone = Backbone.of(backbone or self.recorded["spec"], device, precision)
        check_backbone(self.recorded, self.backbone)
        if load_backbone:
            self.backbone.encoder  # noqa: B018 - load now, so a missing model is reported here

    @torch.no_grad()
    def scores(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(head probabilities, zero-shot scores by the family's rule), each ``[N, C]``, for embeddings ``[N, D]``."""
        return predict_logits(self.head, features).softmax(-1), self.zeroshot.probabilities(features)

    def predict(self, image, k: int = 5) -> tuple[list[Prediction], list[Prediction]]:
        """Top-``k`` (label, score) from the head and from zero-shot for one image (a PIL image or anything
        ``clipdemo.images.load_image`` opens)."""
        from clipdemo.images import load_image

        features = self.backbone.encode_images([load_image(image)])
        head, zeroshot = self.scores(features)
        return rank(head, self.class_names, k)[0], rank(zeroshot, self.class_names, k)[0]


def _rebuild(state: dict, config: dict, class_names: list[str]) -> tuple[torch.nn.Module, ZeroShotClassifier]:
    """The head module and its zero-shot classifier from a checkpoint's weights and config."""
    hc, rule = config["head"], Rule.from_config(config)
    if len(class_names) != hc["num_classes"]:
        raise ValueError(f"the card lists {len(class_names)} classes for a head of {hc['num_classes']}")
    head = build_head(hc["name"], num_classes=hc["num_classes"], embed_dim=hc["embed_dim"], rule=rule)
    weights = {k[5:]: v for k, v in state.items() if k.startswith("head.")}
    if "logit_bias" in head.state_dict():  # heads saved before the rule was recorded have no bias: CLIP's 0
        weights.setdefault("logit_bias", torch.tensor(rule.bias))
    head.load_state_dict(weights)
    head.eval()
    embeddings = state["zeroshot.classifier"].float()
    return head, ZeroShotClassifier(embeddings, rule, tuple(class_names), tuple(config.get("templates") or ()))


def check_backbone(recorded: dict, backbone: Backbone) -> None:
    """Refuse (``CheckpointError``) a backbone other than the one a head was trained on."""
    if backbone.fingerprint == recorded.get("fingerprint"):
        return
    trained = recorded.get("spec", "an unknown backbone")
    if backbone.spec == trained:
        raise CheckpointError(
            f"The backbone '{trained}' has changed since this head was trained (its weights or preprocessing "
            f"differ), so the head no longer fits its embeddings: train a new head on it."
        )
    raise CheckpointError(
        f"This head was trained on the backbone '{trained}' and can't be used with '{backbone.spec}': a head "
        f"only works on the embeddings of its own backbone. Use '{trained}', or train a new head on '{backbone.spec}'."
    )
