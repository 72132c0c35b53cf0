"""One encoder interface, several back ends.

Every model the app uses answers the same three questions: ``encode_images(list of RGB PIL) -> [N, D]``,
``encode_texts(list of str) -> [M, D]`` (both L2-normalised float32 on the CPU) and ``logit_scale``.
Zero-shot, the Cars head and the Pokemon tab all sit on it, so a new back end is one class.

``load_encoder(spec)`` takes a Hub id, a local HF folder, or a clipdemo scratch checkpoint folder, loads it
once (lazily, thread-safely) and raises ``ModelUnavailable`` with one readable sentence when it can't.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image

from clipdemo.names import looks_like_path

log = logging.getLogger(__name__)

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
MODEL_ENV = "CLIPDEMO_MODEL"
PRECISION_ENV = "CLIPDEMO_PRECISION"  # auto | fp32 | bf16 | int8 (int8: ONNX engine only)


class ModelUnavailable(RuntimeError):
    """The model can't be had; the message is one sentence fit to show a user."""


@runtime_checkable
class Encoder(Protocol):
    name: str  # stable identity, used as a cache key
    logit_scale: float
    context_length: int  # in the encoder's own tokens
    device: torch.device
    precision: str  # "fp32", "bf16" or "int8"

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor: ...

    def encode_texts(self, texts: list[str]) -> torch.Tensor: ...

    def describe(self) -> str: ...


def default_model() -> str:
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable("--device cuda was asked for, but no CUDA GPU is visible.")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPUs where bf16 matmuls beat fp32 (elsewhere bf16 is emulated, far slower)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pick_precision(device: torch.device, precision: str | None = None, int8: bool = False) -> str:
    """``auto``: bf16 autocast on GPUs that support it, fp32 on CPUs; ``CLIPDEMO_PRECISION`` overrides.

    fp32 on CPUs even with AVX-512 BF16, where bf16 is 1.4x faster for ViT-B/32: it changed the top-1 of
    3 of the 240 images of our test set (``bench/zero_shot_latency.py``), and we use it only where it doesn't.
    ``int8`` (int8 weights) exists only in the ONNX engine (``clipdemo.onnx_engine``): callers that can run it
    say so with ``int8=True``; for the others (training, PyTorch inference) it means fp32.
    """
    precision = precision or os.environ.get(PRECISION_ENV, "auto")
    if precision not in ("auto", "fp32", "bf16", "int8"):
        raise ValueError(f"precision must be auto, fp32, bf16 or int8, not {precision!r}")
    if precision == "int8" and not int8:
        return "fp32"
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        log.warning("bf16 was asked for, but this CPU has no bf16 matmul units: expect it to be far slower than fp32")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


class ImageTransform:
    """CLIP's preprocessing (shortest-edge bicubic resize, centre crop, normalise), batched into one tensor.

    Same arithmetic as transformers' CLIP image processor, minus its per-call overhead.
    """

    def __init__(self, size: int, crop: int, mean, std):
        self.size, self.crop = size, crop
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255

    MAX_ASPECT = 4  # beyond this the centre crop never sees the ends: trim them before resizing (10000x1 images)

    def one(self, image: Image.Image) -> torch.Tensor:
        w, h = image.size
        if max(w, h) > self.MAX_ASPECT * min(w, h):
            keep_w, keep_h = min(w, self.MAX_ASPECT * h), min(h, self.MAX_ASPECT * w)
            image = image.crop(((w - keep_w) // 2, (h - keep_h) // 2, (w + keep_w) // 2, (h + keep_h) // 2))
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

    def __init__(
        self, spec: str, device: str = "auto", precision: str | None = None, batch_size: int = 32,
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
            self.model = CLIPModel.from_pretrained(path, use_safetensors=True, **_hub_kwargs(spec)).eval().to(self.device)
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
                out.append(_embedding(self.model.get_image_features(pixel_values=pixels)))
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
                out[rows] = _embedding(self.model.get_text_features(**batch)).float().cpu()
        return l2_normalize(out)

    def describe(self) -> str:
        engine = "ONNX Runtime" if self.onnx else "PyTorch"
        return f"{self.name} on {self.device.type} ({self.precision}, {engine})"


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


def _embedding(output) -> torch.Tensor:
    # transformers 5 returns BaseModelOutputWithPooling (projected embedding in .pooler_output); 4.x a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


# --- loading ---------------------------------------------------------------------------------------------

SCRATCH_KIND = "scratch-clip"


def is_scratch_checkpoint(path: Path) -> bool:
    try:
        return json.loads((path / "config.json").read_text()).get("kind") == SCRATCH_KIND
    except (OSError, ValueError, AttributeError):
        return False


def _hf_local_or_hub(spec: str) -> str:
    """Return what ``from_pretrained`` should get; fail fast (no 30 s of retries) when the Hub is unreachable."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path)
    if looks_like_path(spec):
        raise ModelUnavailable(
            f"Model folder '{spec}' does not exist: point {MODEL_ENV} or --model at a folder saved with save_pretrained."
        )
    if _in_hf_cache(spec) or hub_reachable():
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


def hub_reachable(timeout: float = 2.0) -> bool:
    """One TCP connect to the Hub endpoint: seconds at most, where from_pretrained would retry for ~30 s."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _unavailable_message(spec: str, error: Exception | None) -> str:
    why = "the Hub is unreachable and it is not in the local HF cache" if error is None else _short(error)
    if looks_like_path(spec):
        return (
            f"Model folder '{spec}' could not be loaded ({why}). It must hold a CLIP model saved with "
            f"save_pretrained, or a clipdemo scratch checkpoint; or point {MODEL_ENV} / --model at a Hub id."
        )
    return (
        f"Model '{spec}' could not be loaded ({why}). Provide it by downloading it once into the HF cache "
        f"(hf download {spec}), or by pointing {MODEL_ENV} / --model at a local folder."
    )


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:160]


_cache: dict[tuple, Encoder] = {}
_locks: dict[tuple, threading.Lock] = {}
_registry_lock = threading.Lock()


def load_encoder(
    spec: str | None = None, device: str = "auto", precision: str | None = None, engine: str | None = None
) -> Encoder:
    """Load (once per spec, thread-safe) a HF CLIP by Hub id or folder, or a clipdemo scratch checkpoint.
    ``engine``: ``auto`` (``CLIPDEMO_ENGINE``'s default), ``torch`` or ``onnx``, see ``clipdemo.onnx_engine``."""
    spec = spec or default_model()
    key = (spec, device, precision, engine)
    with _registry_lock:
        if key in _cache:
            return _cache[key]
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # a second caller waits for the first load instead of starting its own
        if key not in _cache:
            _cache[key] = _build(spec, device, precision, engine)
        return _cache[key]


def _build(spec: str, device: str, precision: str | None, engine: str | None) -> Encoder:
    path = Path(spec).expanduser()
    if path.is_dir() and is_scratch_checkpoint(path):
        from clipdemo.scratch.encoder import ScratchEncoder

        return ScratchEncoder(path, device=device, precision=precision, engine=engine)
    log.info("loading CLIP model %s", spec)
    return HFCLIPEncoder(spec, device=device, precision=precision, engine=engine)


def forget_encoder(spec: str) -> None:
    """Drop cached encoders for ``spec`` (after a promoted checkpoint replaced it on disk)."""
    with _registry_lock:
        for key in [k for k in _cache if k[0] == spec]:
            del _cache[key]
