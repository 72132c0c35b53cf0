"""The heads: modules that map L2-normalised image embeddings ``[B, D]`` to class scores ``[B, C]``.

Softmax of any head's output gives its class probabilities, so evaluation and serving never care which one it
is. Each head's zero-shot part (the blend's, the MLP's input) is ``clipdemo.scoring``'s rule for the backbone's
family; ``build_head`` makes a fresh one of those ``clipdemo.heads.specs.HEADS`` describes.
"""

from __future__ import annotations

import torch
from torch import nn

from clipdemo import scoring
from clipdemo.heads.specs import HEADS
from clipdemo.scoring import Rule

CLIP_DEFAULT = Rule()  # rebuilt heads get theirs from the checkpoint's buffers


class _ZeroShotPart(nn.Module):
    """The class text embeddings and the family's rule as buffers (saved with the head): ``zeroshot(x)`` gives the
    zero-shot logits by ``clipdemo.scoring``."""

    def __init__(self, class_embeddings: torch.Tensor, rule: Rule):
        super().__init__()
        self.register_buffer("class_embeddings", class_embeddings.detach().float().clone())
        self.register_buffer("logit_scale", torch.tensor(float(rule.scale)))
        self.register_buffer("logit_bias", torch.tensor(float(rule.bias)))

    def zeroshot(self, x: torch.Tensor) -> torch.Tensor:
        return scoring.logits(x, self.class_embeddings, self.logit_scale, self.logit_bias)


class LogitsMLP(_ZeroShotPart):
    """The tutorial's MLP over zero-shot logits (``FineTuneCLIP`` minus the CLIP it wrapped)."""

    def __init__(self, class_embeddings: torch.Tensor, rule: Rule, hidden_mult: int = 5):
        super().__init__(class_embeddings, rule)
        c = class_embeddings.shape[0]
        h = c * hidden_mult  # 196 -> 980 on Stanford Cars
        self.fc1 = nn.Sequential(nn.Linear(c, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(0.25))
        self.fc2 = nn.Sequential(
            nn.Linear(h, h),
            nn.BatchNorm1d(h),
            nn.ReLU(),
            nn.Linear(h, h),
            nn.BatchNorm1d(h),
            nn.ReLU(),
            nn.Dropout(0.3),
        )
        self.fc3 = nn.Sequential(nn.Linear(h, c), nn.BatchNorm1d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.fc2(self.fc1(self.zeroshot(x))))


class LinearProbe(nn.Module):
    """Standardise with the training features' mean and spread (buffers), then one linear layer."""

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(embed_dim))
        self.register_buffer("std", torch.ones(embed_dim))
        self.fc = nn.Linear(embed_dim, num_classes)

    @torch.no_grad()
    def set(self, probe) -> LinearProbe:
        """Copy a fitted probe (scikit-learn's weights) in."""
        for target, value in (
            (self.mean, probe.mean),
            (self.std, probe.std),
            (self.fc.weight, probe.weight),
            (self.fc.bias, probe.bias),
        ):
            target.copy_(torch.as_tensor(value, dtype=torch.float32))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((x - self.mean) / self.std)


class ZeroShotBlend(_ZeroShotPart):
    """The linear probe blended with zero-shot CLIP by ``scoring.blend`` at weight ``alpha``: ``alpha = 0`` is
    exactly zero-shot CLIP."""

    def __init__(self, class_embeddings: torch.Tensor, rule: Rule, alpha: float = 0.0):
        super().__init__(class_embeddings, rule)
        c, d = class_embeddings.shape
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.probe = LinearProbe(d, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scoring.blend(self.zeroshot(x), self.probe(x), self.alpha)


class ZeroShotLinear(nn.Module):
    """``logit_scale * x @ W.T + b`` with ``W`` starting at the class text embeddings and ``b`` at zero:
    exactly zero-shot CLIP before training. The scale stays fixed, so the learning rate acts on unit-norm
    rows, the same for any backbone."""

    def __init__(self, class_embeddings: torch.Tensor, rule: Rule):
        super().__init__()
        self.weight = nn.Parameter(class_embeddings.detach().float().clone())
        self.bias = nn.Parameter(torch.zeros(class_embeddings.shape[0]))
        self.register_buffer("logit_scale", torch.tensor(float(rule.scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * x @ self.weight.T + self.bias


def build_head(
    name: str,
    *,
    num_classes: int,
    embed_dim: int,
    class_embeddings: torch.Tensor | None = None,
    rule: Rule = CLIP_DEFAULT,
) -> nn.Module:
    """A fresh head. Without ``class_embeddings`` (rebuilding from a checkpoint) they are zeros, to be
    filled by ``load_state_dict``."""
    if name not in HEADS:
        raise ValueError(f"Unknown head '{name}': choose one of {', '.join(HEADS)}.")
    if class_embeddings is None:
        class_embeddings = torch.zeros(num_classes, embed_dim)
    if tuple(class_embeddings.shape) != (num_classes, embed_dim):
        raise ValueError(f"class embeddings are {tuple(class_embeddings.shape)}, expected ({num_classes}, {embed_dim})")
    if name == "mlp-logits":
        return LogitsMLP(class_embeddings, rule)
    if name == "linear":
        return LinearProbe(embed_dim, num_classes)
    if name == "zeroshot-blend":
        return ZeroShotBlend(class_embeddings, rule)
    return ZeroShotLinear(class_embeddings, rule)


@torch.no_grad()
def predict_logits(head: nn.Module, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Class scores for ``features`` in eval mode (BatchNorm uses its running statistics)."""
    was_training = head.training
    head.eval()
    try:
        out = [head(features[i : i + batch_size]) for i in range(0, len(features), batch_size)]
    finally:
        head.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def accuracy(head: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    return float((predict_logits(head, features).argmax(1) == labels).double().mean())
