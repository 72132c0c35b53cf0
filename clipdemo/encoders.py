"""One encoder interface, several back ends.

Every model the app uses answers the same questions: ``encode_images(list of RGB PIL) -> [N, D]``,
``encode_texts(list of str) -> [M, D]`` (both L2-normalised float32 on the CPU), ``token_lengths`` (to say which
labels its context cuts), and how its family scores (``scoring``: "softmax" for CLIP, "sigmoid" for SigLIP,
with ``logit_scale`` and ``logit_bias``; ``clipdemo.scoring`` applies the rule). ViT back ends also give
``encode_patches`` (patch tokens in the joint space, for relevancy maps) and ``view`` (what part of a photo the
model sees). Zero-shot, the Cars head and the Pokemon tab all sit on it, so a new back end is one class
(``clipdemo.siglip`` is one).

``load_encoder(spec)`` takes a Hub id, a local HF folder, or a clipdemo scratch checkpoint folder, loads it
once (lazily, thread-safely) and raises ``ModelUnavailable`` with one readable sentence when it can't.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from clipdemo import hub_access
from clipdemo.devices import autocast, embedding, l2_normalize, pick_device, pick_precision
from clipdemo.errors import ModelUnavailable, first_line
from clipdemo.families import CHECKPOINT_KIND, SCRATCH
from clipdemo.names import looks_like_path
from clipdemo.settings import MODEL_ENV, default_model
from clipdemo.siglip import SIGLIP_TYPES

log = logging.getLogger(__name__)


@runtime_checkable
class Encoder(Protocol):
    name: str  # stable identity, used as a cache key
    scoring: str  # "softmax" (over the labels: CLIP) or "sigmoid" (each label on its own: SigLIP)
    logit_scale: float
    logit_bias: float  # 0 for softmax families
    context_length: int  # in the encoder's own tokens
    device: torch.device
    precision: str  # "fp32", "bf16" or "int8"

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor: ...

    def encode_texts(self, texts: list[str]) -> torch.Tensor: ...

    def token_lengths(self, texts: list[str]) -> list[int]: ...

    def describe(self) -> str: ...


class ImageTransform:
    """CLIP's preprocessing (shortest-edge bicubic resize, centre crop, normalise), batched into one tensor.

    Same arithmetic as transformers' CLIP image processor, minus its per-call overhead.
    """

    def __init__(self, size: int, crop: int, mean, std):
        self.size, self.crop = size, crop
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255

    MAX_ASPECT = 4  # beyond this the centre crop never sees the ends: trim them before resizing (10000x1 images)

    def _trimmed(self, image: Image.Image) -> Image.Image:
        """``image`` with the ends of its long side cut to ``MAX_ASPECT`` times its short side (centred)."""
        w, h = image.size
        if max(w, h) <= self.MAX_ASPECT * min(w, h):
            return image
        keep_w, keep_h = min(w, self.MAX_ASPECT * h), min(h, self.MAX_ASPECT * w)
        return image.crop(((w - keep_w) // 2, (h - keep_h) // 2, (w + keep_w) // 2, (h + keep_h) // 2))

    def view(self, image: Image.Image) -> Image.Image:
        """The part of ``image`` the model sees (the centre crop), at the image's own resolution."""
        w, h = self._trimmed(image).size
        side = min(w, h) * self.crop / self.size
        left, top = (image.size[0] - side) / 2, (image.size[1] - side) / 2
        return image.crop((round(left), round(top), round(left + side), round(top + side)))

    def one(self, image: Image.Image) -> torch.Tensor:
        image = self._trimmed(image)
        w, h = image.size  # shortest edge -> size, the other scaled and floored, as transformers does
        new = (self.size, int(self.size * h / w)) if w <= h else (int(self.size * w / h), self.size)
        image = image.resize(new, Image.BICUBIC)
        left, top = (new[0] - self.crop) // 2, (new[1] - self.crop) // 2
        image = image.crop((left, top, left + self.crop, top + self.crop))
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float()
        return (x - self.mean) / self.std

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.one(im) for im in images])


class HFCLIPEncoder:
    """A transformers ``CLIPModel`` from the Hub or a local folder."""

    scoring, logit_bias = "softmax", 0.0

    def __init__(
        self,
        spec: str,
        device: str = "auto",
        precision: str | None = None,
        batch_size: int = 32,
        engine: str | None = None,
    ):
        from transformers import CLIPModel, CLIPTokenizerFast
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as CLIPImageProcessor
        from transformers.utils import logging as hf_logging

        from clipdemo import onnx_engine

        hf_logging.disable_progress_bar()  # a loading bar per model is noise in the CLI and the server log

        self.name = spec
        self.device = pick_device(device)
        self.precision = pick_precision(self.device, precision, int8=True)
        self.batch_size = batch_size
        path = _hf_local_or_hub(spec)
        try:
            # safetensors only: a repo with just pickled weights is refused, never unpickled
            self.model = (
                CLIPModel.from_pretrained(path, use_safetensors=True, **_hub_kwargs(spec)).eval().to(self.device)
            )
            self.tokenizer = CLIPTokenizerFast.from_pretrained(path, **_hub_kwargs(spec))
            processor = CLIPImageProcessor.from_pretrained(path, **_hub_kwargs(spec))
        except (OSError, ValueError, KeyError) as e:
            raise ModelUnavailable(_unavailable_message(spec, e)) from e
        self.model.requires_grad_(False)
        self.context_length = self.model.config.text_config.max_position_embeddings
        self.logit_scale = float(self.model.logit_scale.exp())
        self.transform = ImageTransform(
            processor.size["shortest_edge"], processor.crop_size["height"], processor.image_mean, processor.image_std
        )
        # The towers in ONNX Runtime (CPUs, by default) or None: PyTorch runs them; projection and normalisation
        # below are the same either way.
        self.onnx, self.precision = onnx_engine.hf_clip_towers(self.model, spec, self.device, self.precision, engine)
        self.engine = "onnx" if self.onnx else "torch"

    @torch.inference_mode()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        out = []
        for i in range(0, len(images), self.batch_size):
            pixels = self.transform(images[i : i + self.batch_size]).to(self.device)
            if self.onnx:
                out.append(self.onnx.image(pixels))
                continue
            with autocast(self.device, self.precision):
                out.append(embedding(self.model.get_image_features(pixel_values=pixels)))
        return l2_normalize(torch.cat(out)).cpu()

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], max_tokens: int = 640) -> torch.Tensor:
        # Prompts sorted by length, in batches of at most ``max_tokens`` padded tokens: little padding, and
        # activations small enough to stay in cache. On the 1,568 prompts of the Cars template ensemble this is
        # 1.7x faster than batches of 256 prompts (bench/cars_head.py), with the same embeddings.
        texts = list(texts)
        ids = self.tokenizer(texts, truncation=True, max_length=self.context_length)["input_ids"] if texts else []
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = torch.empty(len(ids), self.model.config.projection_dim)
        for rows in _token_batches(order, [len(x) for x in ids], max_tokens):
            batch = self.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt").to(self.device)
            if self.onnx:
                out[rows] = self.onnx.text(batch["input_ids"], batch["attention_mask"])
                continue
            with autocast(self.device, self.precision):
                out[rows] = embedding(self.model.get_text_features(**batch)).float().cpu()
        return l2_normalize(out)

    def describe(self) -> str:
        engine = "ONNX Runtime" if self.onnx else "PyTorch"
        return f"{self.name} on {self.device.type} ({self.precision}, {engine})"

    def token_lengths(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]] if texts else []

    def view(self, image: Image.Image) -> Image.Image:
        return self.transform.view(image)

    @torch.inference_mode()
    def encode_patches(self, image: Image.Image) -> torch.Tensor:
        """[h, w, D] L2-normalised patch tokens projected into the joint space (the last layer's tokens through
        the same post-layernorm and projection as the class token)."""
        pixels = self.transform([image]).to(self.device)
        with autocast(self.device, self.precision):
            hidden = self.model.vision_model(pixel_values=pixels).last_hidden_state[0, 1:]
            tokens = self.model.visual_projection(self.model.vision_model.post_layernorm(hidden))
        side = int(round(tokens.shape[0] ** 0.5))
        return l2_normalize(tokens.float().cpu()).view(side, side, -1)


def _token_batches(order: list[int], lengths: list[int], max_tokens: int):
    """Consecutive runs of ``order`` (sorted by length) whose padded size, rows x longest, fits ``max_tokens``."""
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) + 1) * lengths[i] > max_tokens:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


# --- loading ---------------------------------------------------------------------------------------------


def is_scratch_checkpoint(path: Path) -> bool:
    try:
        return json.loads((path / "config.json").read_text()).get("kind") == CHECKPOINT_KIND[SCRATCH]
    except (OSError, ValueError, AttributeError):
        return False


def _hf_local_or_hub(spec: str) -> str:
    """Return what ``from_pretrained`` should get; fail fast (no 30 s of retries) when the Hub is unreachable."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path)
    if looks_like_path(spec):
        raise ModelUnavailable(
            f"Model folder '{spec}' does not exist: "
            f"point {MODEL_ENV} or --model at a folder saved with save_pretrained."
        )
    if _in_hf_cache(spec) or hub_access.hub_reachable():
        return spec
    raise ModelUnavailable(_unavailable_message(spec, None))


def _hub_kwargs(spec: str) -> dict:
    return {"local_files_only": True} if (Path(spec).expanduser().is_dir() or _in_hf_cache(spec)) else {}


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # malformed id and the like
        return False


def _unavailable_message(spec: str, error: Exception | None) -> str:
    why = "the Hub is unreachable and it is not in the local HF cache" if error is None else first_line(error)
    if looks_like_path(spec):
        return (
            f"Model folder '{spec}' could not be loaded ({why}). It must hold a CLIP or SigLIP model saved with "
            f"save_pretrained, or a clipdemo scratch checkpoint; or point {MODEL_ENV} / --model at a Hub id."
        )
    return (
        f"Model '{spec}' could not be loaded ({why}). Provide it by downloading it once into the HF cache "
        f"(hf download {spec}), or by pointing {MODEL_ENV} / --model at a local folder."
    )


_cache: dict[tuple, Encoder] = {}
_locks: dict[tuple, threading.Lock] = {}
_registry_lock = threading.Lock()


def load_encoder(
    spec: str | None = None, device: str = "auto", precision: str | None = None, engine: str | None = None
) -> Encoder:
    """Load (once per spec, thread-safe) a HF CLIP by Hub id or folder, or a clipdemo scratch checkpoint.
    ``engine``: ``auto`` (``CLIPDEMO_ENGINE``'s default), ``torch`` or ``onnx``, see ``clipdemo.onnx_engine``.

    A local folder is loaded again once its files change on disk (replaced by a new save, or rewritten in
    place); the previous load is dropped.
    """
    from clipdemo.checkpoints import folder_stamp

    spec = spec or default_model()
    stamp = folder_stamp(Path(spec).expanduser())  # None for a Hub id
    key = (spec, device, precision, engine, stamp)
    with _registry_lock:
        if key in _cache:
            return _cache[key]
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # a second caller waits for the first load instead of starting its own
        if key not in _cache:
            encoder = _build(spec, device, precision, engine)
            with _registry_lock:
                for old in [k for k in _cache if k[:4] == key[:4]]:  # the folder's previous contents
                    del _cache[old]
                    _locks.pop(old, None)
                _cache[key] = encoder
        return _cache[key]


SUPPORTED_TYPES = ("clip", *SIGLIP_TYPES)  # transformers' model_type of the families we run


def _build(spec: str, device: str, precision: str | None, engine: str | None) -> Encoder:
    path = Path(spec).expanduser()
    if path.is_dir() and is_scratch_checkpoint(path):
        from clipdemo.scratch.encoder import ScratchEncoder

        return ScratchEncoder(path, device=device, precision=precision, engine=engine)
    model_type = _model_type(spec)
    log.info("loading %s model %s", model_type, spec)
    if model_type in SIGLIP_TYPES:
        from clipdemo.siglip import SiglipEncoder

        try:
            return SiglipEncoder(spec, _hf_local_or_hub(spec), _hub_kwargs(spec), device=device, precision=precision)
        except (OSError, ValueError, KeyError) as e:
            raise ModelUnavailable(_unavailable_message(spec, e)) from e
    return HFCLIPEncoder(spec, device=device, precision=precision, engine=engine)


def _model_type(spec: str) -> str:
    """The family a HF folder or Hub id holds (its config's ``model_type``); one sentence if we don't run it."""
    from transformers import AutoConfig

    source = _hf_local_or_hub(spec)
    try:
        model_type = AutoConfig.from_pretrained(source, **_hub_kwargs(spec)).model_type
    except (OSError, ValueError, KeyError) as e:
        raise ModelUnavailable(_unavailable_message(spec, e)) from e
    if model_type not in SUPPORTED_TYPES:
        shown = Path(spec).name if looks_like_path(spec) else spec
        raise ModelUnavailable(
            f"Model '{shown}' is a {model_type[:40]} model; clipdemo runs CLIP and SigLIP / SigLIP 2 models "
            f"(model_type {', '.join(SUPPORTED_TYPES)}) and its own scratch checkpoints."
        )
    return model_type


def is_loaded(spec: str | None = None) -> bool:
    """Whether ``load_encoder(spec)`` would answer at once (the UI says "loading model…" otherwise)."""
    spec = spec or default_model()
    with _registry_lock:
        return any(key[0] == spec for key in _cache)


def forget_encoder(spec: str) -> None:
    """Drop cached encoders for ``spec`` (after a promoted checkpoint replaced it on disk)."""
    with _registry_lock:
        for key in [k for k in _cache if k[0] == spec]:
            del _cache[key]
