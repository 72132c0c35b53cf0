"""The scratch CLIP's hyperparameters: ``ScratchCLIPConfig`` and its ``PRESETS``, without torch (the CLI lists the
presets in ``train --help`` without importing it; ``clipdemo.scratch.model`` builds the modules from a config).

A checkpoint stores ``config.to_dict()`` and ``ScratchCLIPConfig.from_dict(that)`` gives the config back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from clipdemo.scratch.tokenizer import VOCAB_SIZE


@dataclass
class ScratchCLIPConfig:
    # --- joint space
    embed_dim: int = 64  # width of the shared image/text embedding
    # --- image tower (ViT)
    image_size: int = 32  # images are resized (squashed, as the tutorial) to image_size x image_size
    patch_size: int = 8  # image_size must be a multiple; (image_size / patch_size)^2 patch tokens + 1 cls
    stem: str = "conv"  # "patchify" (one conv, kernel = stride = patch: the tutorial, ViT) or "conv": stride-2
    #                     3x3 convs with BatchNorm down to the same grid (ViTs then learn far faster on little data)
    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 4  # head dim = width / heads; 9 / 3 = 3 (the seed preset) is fine
    # --- text tower (byte-level)
    context_length: int = 32  # bytes + start + end; longer captions are truncated, keeping the end token
    vocab_size: int = VOCAB_SIZE  # 256 bytes + pad/start/end
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    # --- blocks
    mlp_ratio: int = 4
    pos_embedding: str = "learned"  # "learned" (CLIP) or "sinusoidal" (the tutorial's fixed table)
    final_ln: bool = True  # LayerNorm before each projection (CLIP's ln_post / ln_final); the tutorial has none
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = 100.0  # CLIP clamps exp(logit_scale) here so training can't blow it up
    # --- training recipe: read by train.py, stored so a checkpoint says how it was made
    optimizer: str = "adamw"  # "adam" (the tutorial) or "adamw" (decoupled weight decay, CLIP/open_clip)
    lr: float = 2e-3
    weight_decay: float = 0.05  # adamw only; not applied to biases, norms, embeddings, temperature
    warmup_steps: int = 20
    schedule: str = "cosine"  # "cosine" (to 0 over the run) or "constant" (the tutorial)
    batch_size: int = 128
    epochs: int = 40  # used when train_scratch gets no epochs; max_seconds can end a run earlier
    augment: bool = False  # random zoom-crop + horizontal flip per batch; slowed learning in short runs here
    loss: str = "multi-positive"  # "multi-positive": same-class pairs in a batch are positives (UniCL/SupCon
    #                               targets; captions repeat per class), or "clip": only the diagonal (the tutorial)

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for width, heads, what in (
            (self.vision_width, self.vision_heads, "vision"),
            (self.text_width, self.text_heads, "text"),
        ):
            if width % heads:
                raise ValueError(f"{what}_width {width} is not divisible by {what}_heads {heads}")
        if self.stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise ValueError("the conv stem needs a power-of-two patch_size")
        if self.pos_embedding not in ("learned", "sinusoidal"):
            raise ValueError("pos_embedding must be 'learned' or 'sinusoidal'")
        if self.loss not in ("multi-positive", "clip"):
            raise ValueError("loss must be 'multi-positive' or 'clip'")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ScratchCLIPConfig:
        """Rebuild from a checkpoint's config.json, ignoring keys that are not config fields (e.g. 'kind')."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


PRESETS: dict[str, ScratchCLIPConfig] = {
    # The tutorial's hyperparameters, unchanged (its architecture too: fixed sinusoidal positions, no
    # final LayerNorm, Adam at a constant 1e-3, batch 1024, 1500 epochs, no augmentation).
    "seed": ScratchCLIPConfig(
        embed_dim=32,
        image_size=128,
        patch_size=64,
        vision_width=9,
        vision_layers=3,
        vision_heads=3,
        context_length=32,
        text_width=32,
        text_layers=4,
        text_heads=8,
        pos_embedding="sinusoidal",
        final_ln=False,
        stem="patchify",
        optimizer="adam",
        lr=1e-3,
        weight_decay=0.0,
        warmup_steps=0,
        schedule="constant",
        batch_size=1024,
        epochs=1500,
        augment=False,
        loss="clip",
    ),
    # Chosen for held-out accuracy per CPU-second on small image folders (bench/scratch_train.py).
    "default": ScratchCLIPConfig(),
}


def preset(name: str, **overrides) -> ScratchCLIPConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
