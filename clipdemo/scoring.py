"""Zero-shot scores: how each model family turns image and class-text embeddings into scores, in one place.

A ``Rule`` is a family's rule with the constants the model learned:

- CLIP (``softmax``) ranks the labels against each other: ``softmax(scale · cos)`` over the labels. In
  multi-label mode, where each label must stand on its own, the cosine itself (clipped at 0), since CLIP has
  no calibrated per-label score.
- SigLIP (``sigmoid``) scores each label on its own, as it was trained: ``sigmoid(scale · cos + bias)``.

Every zero-shot number in clipdemo comes from here: the Zero-shot tab, evaluation, the zero-shot column of the
Cars and Your-classes tabs, the heads' zero-shot parts and the blend of zero-shot with a head. So a SigLIP
backbone shows the same zero-shot score for the same image and label on every tab. Training losses and learned
layers are not zero-shot scoring and live with their models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SOFTMAX, SIGMOID = "softmax", "sigmoid"


def logits(image_embeddings: torch.Tensor, class_embeddings: torch.Tensor, scale, bias=0.0) -> torch.Tensor:
    """``scale · cos + bias``: ``[N, D] x [C, D]`` L2-normalised embeddings -> ``[N, C]`` logits."""
    return scale * image_embeddings.float() @ class_embeddings.float().T + bias


@dataclass(frozen=True)
class Rule:
    """A family's scoring rule (``SOFTMAX`` or ``SIGMOID``) with its learned ``scale`` and ``bias``."""

    family: str = SOFTMAX
    scale: float = 100.0
    bias: float = 0.0

    @classmethod
    def of(cls, model) -> Rule:
        """The rule of an ``Encoder`` (or anything with ``scoring``, ``logit_scale`` and ``logit_bias``)."""
        return cls(getattr(model, "scoring", SOFTMAX), float(model.logit_scale), float(getattr(model, "logit_bias", 0)))

    @classmethod
    def from_config(cls, config: dict) -> Rule:
        """The rule a checkpoint's config records; checkpoints written before it was recorded are CLIP's."""
        saved = config.get("scoring") or {}
        scale = float(saved.get("scale", config.get("logit_scale", 100.0)))
        return cls(saved.get("family", SOFTMAX), scale, float(saved.get("bias", 0.0)))

    def to_config(self) -> dict:
        return {"family": self.family, "scale": self.scale, "bias": self.bias}

    @property
    def independent(self) -> bool:
        """Each label scored on its own (scores don't sum to 1)."""
        return self.family == SIGMOID

    def logits(self, image_embeddings: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        return logits(image_embeddings, class_embeddings, self.scale, self.bias)

    def probabilities(self, image_embeddings, class_embeddings, multi_label: bool = False) -> torch.Tensor:
        """What a user is shown: ``[N, C]`` scores in [0, 1] by the family's rule (see the module docstring)."""
        if self.family == SIGMOID:
            return self.logits(image_embeddings, class_embeddings).sigmoid()
        if multi_label:
            return (image_embeddings.float() @ class_embeddings.float().T).clamp(min=0)
        return self.logits(image_embeddings, class_embeddings).softmax(dim=-1)

    def log_distribution(self, image_embeddings, class_embeddings) -> torch.Tensor:
        """Log-probabilities of one class among the ``C`` (the closed-set view that the blend with a head and
        cross-entropy need): ``log_softmax`` of the logits, the same ranking as ``probabilities``."""
        return self.logits(image_embeddings, class_embeddings).log_softmax(dim=-1)


def blend(zeroshot_logits: torch.Tensor, head_logits: torch.Tensor, weight) -> torch.Tensor:
    """``(1 - weight) · log_softmax(zero-shot) + weight · log_softmax(head)``: a geometric mixture of the two
    models' class probabilities (WiSE-FT's weight interpolation for a linear head); weight 0 is zero-shot."""
    return (1 - weight) * zeroshot_logits.log_softmax(-1) + weight * head_logits.log_softmax(-1)


@dataclass(frozen=True)
class ZeroShotClassifier:
    """Classes as a zero-shot classifier: their names, the ensembled prompt embeddings ``[C, D]``
    (``zeroshot.build_classifier``), the templates those were built from, and the backbone family's rule."""

    embeddings: torch.Tensor
    rule: Rule
    names: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()

    def logits(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        return self.rule.logits(image_embeddings, self.embeddings)

    def probabilities(self, image_embeddings: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
        return self.rule.probabilities(image_embeddings, self.embeddings, multi_label)
