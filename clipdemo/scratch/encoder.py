"""A scratch CLIP checkpoint folder as an ``Encoder`` (see ``clipdemo.encoders``), and the image
preprocessing that training and inference share.

Preprocessing is the tutorial's: squash-resize to ``image_size`` x ``image_size`` (bilinear, as
torchvision's ``Resize((s, s))`` on a PIL image) and scale to [0, 1]. It is split in two so training can
run the slow half once: ``images_to_uint8`` (decoded PIL -> uint8 [N, 3, S, S], cacheable); the model
takes that uint8 batch as is and scales it to [0, 1] itself (folded into its first layer), and
``to_pixels`` gives the float [0, 1] version where one is needed (augmentation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipdemo.checkpoints import CheckpointError, folder_stamp, load_checkpoint
from clipdemo.devices import autocast, l2_normalize, pick_device, pick_precision
from clipdemo.errors import first_line
from clipdemo.families import CHECKPOINT_KIND, SCRATCH
from clipdemo.names import source_name
from clipdemo.scratch.config import ScratchCLIPConfig
from clipdemo.scratch.model import ScratchCLIP
from clipdemo.scratch.tokenizer import ByteTokenizer

# The tutorial's six caption templates; training draws one per image per epoch, zero-shot averages them.
TEMPLATES = ("An image of {}", "A {}", "A photo of {}", "A {} in a photo", "A picture of {}", "A {} image")


def image_to_uint8(image: Image.Image, size: int) -> torch.Tensor:
    """One RGB PIL image -> uint8 [3, size, size] (aspect ratio not kept, as in the tutorial)."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


def images_to_uint8(images: list[Image.Image], size: int) -> torch.Tensor:
    return (
        torch.stack([image_to_uint8(im, size) for im in images])
        if images
        else torch.empty(0, 3, size, size, dtype=torch.uint8)
    )


def to_pixels(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, S, S] -> float32 in [0, 1] (on the batch's device)."""
    return batch.float().div_(255.0)


class PixelEncoder:
    """The scratch trainer's "encoder": decoded images as uint8 ``[N, 3, S, S]``, the slow half of preprocessing.

    It goes through ``clipdemo.features.encode_split`` like a frozen CLIP does, so decoding, the on-disk
    cache, and skipping, counting and naming unreadable files are the same code for both families.
    """

    def __init__(self, size: int):
        self.size = size
        self.name = self.fingerprint = f"pixels:squash-bilinear:{size}"

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        return images_to_uint8(images, self.size)


class ScratchEncoder:
    """Loads a folder written by ``clipdemo.scratch.train.train_scratch`` (or ``save_checkpoint`` with
    ``config={"kind": "scratch-clip", ...}``) and answers the ``Encoder`` protocol.

    Besides the protocol it exposes ``model``, ``config``, ``card``, ``class_names`` (what it was trained
    to tell apart) and ``templates`` (the captions it was trained on), for the Pokemon tab.
    """

    scoring, logit_bias = "softmax", 0.0

    def __init__(
        self, path, device: str = "auto", precision: str | None = None, batch_size: int = 256, engine: str | None = None
    ):
        from clipdemo import onnx_engine

        self.path = Path(path)
        stamp = folder_stamp(self.path)  # before loading: a later rewrite then changes it, never the reverse
        state, config, card = load_checkpoint(self.path, kind=CHECKPOINT_KIND[SCRATCH])
        try:
            self.config = ScratchCLIPConfig.from_dict(config)
            model = ScratchCLIP(self.config)
            model.load_state_dict(state)
        except (TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(
                f"Checkpoint '{self.path}' is damaged: its weights do not fit "
                f"the scratch CLIP its config describes ({first_line(e)})."
            ) from None
        self.device = pick_device(device)
        self.precision = pick_precision(self.device, precision, int8=True)
        self.model = model.eval().requires_grad_(False).to(self.device)
        # the towers in ONNX Runtime, or None: PyTorch runs them (see onnx_engine.scratch_towers for when)
        self.onnx, self.precision = onnx_engine.scratch_towers(
            self.model, self.path, self.device, self.precision, engine
        )
        self.engine = "onnx" if self.onnx else "torch"
        self.card = card
        self.batch_size = batch_size
        self.tokenizer = ByteTokenizer(self.config.context_length)
        self.context_length = self.config.context_length
        self.logit_scale = float(model.scale())
        self.class_names = list(card.get("classes") or [])
        self.templates = tuple(config.get("templates") or TEMPLATES)
        # the files' stamp makes the name change when the folder is replaced or rewritten (it keys embedding caches)
        self.name = f"scratch:{self.path.resolve()}@{card.get('created', '')}#{hash(stamp) & 0xFFFFFFFF:08x}"

    @torch.inference_mode()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        out = [torch.empty(0, self.config.embed_dim)]
        for i in range(0, len(images), self.batch_size):
            pixels = images_to_uint8(images[i : i + self.batch_size], self.config.image_size).to(self.device)
            if self.onnx:
                out.append(self.onnx.image(pixels))
                continue
            with autocast(self.device, self.precision):
                out.append(self.model.encode_image(pixels).float().cpu())
        return self._normalized(torch.cat(out))

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        out = [torch.empty(0, self.config.embed_dim)]
        for i in range(0, len(texts), self.batch_size):
            ids, mask = self.tokenizer(texts[i : i + self.batch_size])
            if self.onnx:
                out.append(self.onnx.text(ids, mask))
                continue
            with autocast(self.device, self.precision):
                out.append(self.model.encode_text(ids.to(self.device), mask.to(self.device)).float().cpu())
        return self._normalized(torch.cat(out))

    def token_lengths(self, texts: list[str]) -> list[int]:
        return [len(t.encode("utf-8")) + 2 for t in texts]  # bytes plus start and end tokens

    def _normalized(self, x: torch.Tensor) -> torch.Tensor:
        # the model already L2-normalises in fp32; renormalising would only flip low bits of its output
        return x if self.precision == "fp32" else l2_normalize(x)

    def describe(self) -> str:
        engine = "ONNX Runtime" if self.onnx else "PyTorch"
        return f"{describe_card(self.card)} ({self.device.type}, {self.precision}, {engine})"


def describe_card(card: dict) -> str:
    """One sentence saying what a scratch checkpoint was trained on and how well it did on held-out data."""
    data = card.get("dataset") or {}
    source = source_name(data.get("source", "an unknown dataset"))  # shown to visitors: no server paths
    n = len(card.get("classes") or [])
    text = f"Scratch CLIP (preset {card.get('preset', '?')}) trained on {source}, {n} classes"
    metrics = card.get("metrics") or {}
    if "acc1" in metrics:
        text += (
            f"; top-1 {metrics['acc1']:.1%} on {card.get('eval_split', 'held-out')} ({metrics.get('n', '?')} images)"
        )
    if not card.get("complete", True):
        text += "; training did not finish (best checkpoint so far)"
    if card.get("created"):
        text += f"; saved {card['created'][:10]}"
    return text
