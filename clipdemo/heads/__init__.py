"""Heads over a frozen CLIP's image embeddings: the modules, how each is fitted and chosen, and their checkpoint.

Every head maps L2-normalised image embeddings ``[B, D]`` to class scores ``[B, C]`` (softmax gives the
probabilities), so evaluation and serving never care which one it is:

- ``zeroshot-blend`` (the default): the linear probe's log-probabilities blended with zero-shot CLIP's,
  ``(1 - a) * log_softmax(zero-shot) + a * log_softmax(probe)``, with the probe's C and the weight ``a`` chosen
  on validation. For a linear head on the same features, blending logits is WiSE-FT's weight interpolation;
  ``a = 0`` *is* zero-shot and is always a candidate, so the chosen head never scores below zero-shot on the
  images it was chosen on. Picked by measurement: ``python bench/few_shot.py``.
- ``linear``: the CLIP paper's linear probe: L2-regularised logistic regression by L-BFGS (scikit-learn,
  up to 1,000 iterations) on standardised features, C chosen on validation from a log-spaced grid. Stored as
  a torch ``Linear`` (the weights copied), so checkpoints stay safetensors and serving is unchanged.
- ``mlp-logits``: the Cars tutorial's head, faithfully: CLIP's zero-shot logits through C -> 5C -> 5C -> 5C
  -> C with BatchNorm, ReLU and Dropout as in its ``FineTuneCLIP``, Adam at 2e-4, batch 64. Its budget is
  in optimisation steps (at least 300; the tutorial's 6 epochs where that is more), so it also converges on
  small data, and the step count is chosen on validation.
- ``zeroshot-init``: a linear head starting at the class text embeddings (zero-shot before any step),
  trained by AdamW; the step count is chosen on validation, step 0 included.

Selection never rests on a handful of images: with at least ``MIN_VALIDATION`` validation images the
candidates are scored on them and the head is fit on train; with fewer, train and validation are pooled,
scored by stratified k-fold cross-validation, and the chosen head is refit on the pool. ``fit_head`` returns
the trained module with what was chosen, how, and on how many images (for the checkpoint card).

- ``specs``: ``HEADS`` and ``DEFAULT_HEAD``, without torch or scikit-learn; ``modules``: the heads and ``build_head``;
  ``fit``: ``fit_head`` and its selection (no I/O);
  ``checkpoint``: ``save_head`` and ``HeadClassifier``, the one head checkpoint format (Stanford Cars and Your
  classes are two uses of it).
"""

from __future__ import annotations

import importlib

# Each name's module, imported on first use (PEP 562): ``clipdemo.heads.specs`` then loads without torch or
# scikit-learn, which ``fit`` and ``modules`` import.
_HOMES = {
    **dict.fromkeys(("HeadClassifier", "check_backbone", "save_head"), "checkpoint"),
    **dict.fromkeys(("ALPHA_GRID", "C_GRID", "FOLDS", "MIN_VALIDATION", "FitResult", "fit_head"), "fit"),
    **dict.fromkeys(
        ("LinearProbe", "LogitsMLP", "ZeroShotBlend", "ZeroShotLinear", "accuracy", "build_head", "predict_logits"),
        "modules",
    ),
    **dict.fromkeys(("DEFAULT_HEAD", "HEADS", "HeadSpec"), "specs"),
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
