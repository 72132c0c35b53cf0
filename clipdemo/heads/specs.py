"""What each head is: ``HEADS`` (a description and fixed hyperparameters per name) and ``DEFAULT_HEAD``, without torch
or scikit-learn (the CLI lists the heads in ``train --help`` without importing either)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeadSpec:
    """What a head is and its fixed hyperparameters (``fit_head`` overrides per run; None: not used)."""

    description: str
    uses_text: bool  # needs the class text embeddings to be built
    solver: str  # "lbfgs" (scikit-learn, C searched) or "adam" (steps searched)
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    epochs: int | None = None  # adam: the tutorial's epochs; the budget is max(min_steps, this many epochs)
    min_steps: int | None = None


HEADS: dict[str, HeadSpec] = {
    "zeroshot-blend": HeadSpec(
        "the linear probe blended with zero-shot CLIP, weight and C chosen on held-out "
        "images (WiSE-FT for a linear head)",
        True,
        "lbfgs",
    ),
    "linear": HeadSpec(
        "a linear probe on the standardised image embeddings (logistic regression, L-BFGS, C chosen "
        "on held-out images: the CLIP paper's protocol)",
        False,
        "lbfgs",
    ),
    # the tutorial's optimiser: Adam, lr 2e-4, batch 64, 6 epochs (now at least 300 steps)
    "mlp-logits": HeadSpec(
        "the tutorial's MLP over the zero-shot logits (C→5C→5C→5C→C)",
        True,
        "adam",
        lr=2e-4,
        weight_decay=0.0,
        batch_size=64,
        epochs=6,
        min_steps=300,
    ),
    "zeroshot-init": HeadSpec(
        "a linear head initialised from the class text embeddings, steps chosen on held-out images",
        True,
        "adam",
        lr=1e-3,
        weight_decay=0.0,
        batch_size=64,
        epochs=20,
        min_steps=300,
    ),
}
DEFAULT_HEAD = "zeroshot-blend"  # never below zero-shot, best on real images from 2 shots, cheap (bench/few_shot.py)
