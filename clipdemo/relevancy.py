"""Where in the image: a relevancy map per label, from patch-token similarity, overlaid on the photo.

Each patch token of the ViT's last layer, taken into the joint space the way the pooled token is
(``Encoder.encode_patches``), is scored against the labels with the model's own rule (``clipdemo.scoring``): a
softmax over the labels for CLIP (so a patch is hot when it matches this label better than the others), a sigmoid
for SigLIP; with a single label, its cosine similarity. The map is stretched to [0, 1] for display (red: most
relevant, blue: least), upsampled and laid over the part of the photo the model sees (``Encoder.view``). It
costs one image-tower forward, the same as classifying a new image; label embeddings come from the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from clipdemo.encoders import Encoder
from clipdemo.errors import UserError
from clipdemo.scoring import Rule
from clipdemo.zeroshot import TEXT_CACHE, EmbeddingCache, build_classifier

MAX_SIDE = 512  # the overlay's longest side, in pixels


class RelevancyError(UserError):
    """A relevancy map can't be drawn for this model or label; the message says why."""


@dataclass
class Relevancy:
    label: str
    heat: np.ndarray  # [h, w] in [0, 1], one value per patch
    picture: Image.Image  # the heat laid over the photo


def relevancy(
    encoder: Encoder,
    image: Image.Image,
    labels: list[str],
    templates: tuple[str, ...],
    label: str,
    text_cache: EmbeddingCache = TEXT_CACHE,
) -> Relevancy:
    if not hasattr(encoder, "encode_patches"):
        raise RelevancyError("Relevancy maps need a ViT from transformers (a CLIP or SigLIP model), not this model.")
    if label not in labels:
        raise RelevancyError(f"'{label[:40]}' is not one of the labels: pick one of them to see where it is.")
    classifier = build_classifier(encoder, labels, templates, text_cache)
    patches = encoder.encode_patches(image)  # [h, w, D]
    h, w, d = patches.shape
    flat = patches.reshape(h * w, d)
    j = labels.index(label)
    if len(labels) == 1 and encoder.scoring != "sigmoid":
        per_patch = (flat @ classifier.T)[:, 0]
    else:
        per_patch = Rule.of(encoder).probabilities(flat, classifier)[:, j]
    heat = stretch(per_patch.view(h, w))
    return Relevancy(label, heat, overlay(encoder.view(image), heat))


def stretch(x: torch.Tensor) -> np.ndarray:
    x = x.float().numpy()
    low, high = float(x.min()), float(x.max())
    return (x - low) / (high - low) if high > low else np.zeros_like(x)


def overlay(photo: Image.Image, heat: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """``heat`` [h, w] in [0, 1] upsampled (bilinear) over ``photo``, coloured blue (low) to red (high)."""
    from matplotlib import colormaps

    photo = photo.convert("RGB")
    photo.thumbnail((MAX_SIDE, MAX_SIDE))
    grid = Image.fromarray((heat * 255).astype(np.uint8), mode="L").resize(photo.size, Image.BILINEAR)
    colours = (colormaps["jet"](np.asarray(grid) / 255.0)[..., :3] * 255).astype(np.uint8)
    return Image.blend(photo, Image.fromarray(colours, mode="RGB"), alpha)
