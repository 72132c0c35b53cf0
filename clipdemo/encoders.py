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
from clipdemo.hf_files import TextTokenizer, model_json
from clipdemo.names import looks_like_path
from clipdemo.onnx_cache import HF_CLIP
from clipdemo.settings import MODEL_ENV, default_model
from clipdemo.siglip import SIGLIP_TYPES
from clipdemo.torch_worker import TorchWorker

log = logging.getLogger(__name__)

# What ``from_pretrained`` raises for a model it can't load (RuntimeError: weights that do not fit the config)
LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


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
        self.mean = np.asarray(mean, dtype=np.float32) * 255  # per channel, last axis (height, width, channel)
        self.std = np.asarray(std, dtype=np.float32) * 255

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
        # In numpy, single-threaded: torch's thread pool would wake for these 150k values and then spin on the
        # cores ONNX Runtime is about to run the tower on (the same float32 arithmetic, so the same pixels).
        return ((np.asarray(image, dtype=np.float32) - self.mean) / self.std).transpose(2, 0, 1)

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.stack([self.one(im) for im in images])))


class HFCLIPEncoder:
    """A transformers CLIP from the Hub or a local folder.

    With both towers' ONNX exports cached (every start after the first), it holds the tokenizer, the preprocessing
    config and two ONNX Runtime sessions only: the PyTorch ``CLIPModel`` (and transformers' model classes) is loaded
    when something needs it (``encode_patches``, the torch engine, GPUs). With ``background_export`` (the server),
    an export not cached yet runs in a child process while PyTorch answers from another (``torch_worker``: the
    server never imports transformers' modeling stack for it); the encoder then switches to ONNX Runtime and the
    PyTorch child ends (``exporting`` says the export is still running).
    """

    scoring, logit_bias = "softmax", 0.0

    def __init__(
        self,
        spec: str,
        device: str = "auto",
        precision: str | None = None,
        batch_size: int = 32,
        engine: str | None = None,
        background_export: bool = False,
    ):
        from clipdemo import onnx_engine

        self.name = spec
        self.device = pick_device(device)
        self.batch_size = batch_size
        self._path, self._hub_kwargs = _hf_local_or_hub(spec), _hub_kwargs(spec)
        self._model, self._lock, self.exporting, self._worker = None, threading.Lock(), False, None
        try:  # the config, tokenizer and preprocessing config as files: no transformers import (``hf_files``)
            config = _config_json(spec, self._hub_kwargs)
            # save_pretrained leaves out values equal to transformers' defaults: these are CLIP's
            self.context_length = _text_config(config).get("max_position_embeddings", 77)
            self.projection_dim = config.get("projection_dim", 512)
            self.tokenizer = TextTokenizer.load(spec, self._path, self.context_length, self._hub_kwargs)
            self.transform = _clip_transform(spec, self._path, self._hub_kwargs)
        except Exception as e:  # unreadable files, the Hub's errors: one sentence
            raise ModelUnavailable(_unavailable_message(spec, e)) from e
        self._asked = asked = pick_precision(self.device, precision, int8=True)
        # The towers in ONNX Runtime (CPUs, by default) or None: PyTorch runs them; projection and normalisation
        # below are the same either way.
        wanted = onnx_engine.planned(self.device, asked, engine)[1] == "onnx"
        self.onnx, self.precision = (
            (onnx_engine.cached_towers(HF_CLIP, spec, asked) if wanted else None),
            asked,
        )
        if self.onnx is None and wanted and background_export and _exportable(spec):
            self.precision, self.exporting = ("fp32" if asked == "int8" else asked), True
            self._worker = TorchWorker(spec)  # PyTorch answers from a child now, and the export is not waited for
            onnx_engine.export_in_background(HF_CLIP, spec, asked, self._switch)
        elif self.onnx is None:
            self.onnx, self.precision = onnx_engine.hf_clip_towers(self.model, spec, self.device, asked, engine)
        self.logit_scale = self._logit_scale()
        if self.onnx:  # exported here: ONNX Runtime answers, the model can go (no gc pass: the CLI runs without)
            self._model = None

    @property
    def engine(self) -> str:
        return "onnx" if self.onnx else "torch"

    @property
    def model(self):
        """The PyTorch ``CLIPModel``, loaded on first use (relevancy maps, the torch engine, training)."""
        with self._lock:
            return self._load_model()

    def _load_model(self):
        if self._model is None:
            from clipdemo.onnx_engine import clip_model

            try:
                model = clip_model(self._path, **self._hub_kwargs)
            except LOAD_ERRORS as e:
                raise ModelUnavailable(_unavailable_message(self.name, e)) from e
            self._model = model.to(self.device)
        return self._model

    def _runner(self):
        """``(towers, None, precision)`` (ONNX Runtime, or the PyTorch child while the export runs) or
        ``(None, PyTorch model, precision)``, read together: a request keeps the engine it started with while a
        background export switches the encoder."""
        with self._lock:
            if self.onnx:
                return self.onnx, None, self.precision
            if self._worker is not None and self._worker.ready():
                return self._worker, None, self.precision
            self._worker = None  # it could not load the model, or died: this process loads it (or says why not)
            return None, self._load_model(), self.precision

    def _switch(self, towers) -> None:
        """The background export ended: ONNX Runtime answers from now on, and the PyTorch child and model go."""
        from clipdemo.memory import release_freed_memory

        if towers is not None:
            with self._lock:  # the PyTorch child ends once no request uses it (``torch_worker``)
                self.onnx, self.precision, self._model, self._worker = towers, self._asked, None, None
            release_freed_memory()
        self.exporting = False

    def _logit_scale(self) -> float:
        """The model's temperature: from the weights file (one tensor) when the model is not loaded."""
        if self._model is None:
            scale = _safetensors_tensor(self.name, "logit_scale")
            if scale is not None:
                return float(scale.exp())
        return float(self.model.logit_scale.exp())

    @torch.inference_mode()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        towers, model, precision = self._runner()
        out = []
        for i in range(0, len(images), self.batch_size):
            pixels = self.transform(images[i : i + self.batch_size]).to(self.device)
            if towers:
                out.append(towers.image(pixels))
                continue
            with autocast(self.device, precision):
                out.append(embedding(model.get_image_features(pixel_values=pixels)))
        return l2_normalize(torch.cat(out)).cpu()

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], max_tokens: int = 640) -> torch.Tensor:
        # Prompts sorted by length, in batches of at most ``max_tokens`` padded tokens: little padding, and
        # activations small enough to stay in cache. On the 1,568 prompts of the Cars template ensemble this is
        # 1.7x faster than batches of 256 prompts (bench/cars_head.py), with the same embeddings.
        ids = self.tokenizer.ids(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        towers, model, precision = self._runner() if ids else (None, None, self.precision)
        out = torch.empty(len(ids), self.projection_dim)
        for rows in _token_batches(order, [len(x) for x in ids], max_tokens):
            input_ids, attention_mask = map(torch.from_numpy, self.tokenizer.pad([ids[i] for i in rows]))
            if towers:
                out[rows] = towers.text(input_ids, attention_mask)
                continue
            with autocast(self.device, precision):
                batch = {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}
                out[rows] = embedding(model.get_text_features(**batch)).float().cpu()
        return l2_normalize(out)

    def describe(self) -> str:
        engine = "ONNX Runtime" if self.onnx else ("PyTorch, ONNX export running" if self.exporting else "PyTorch")
        return f"{self.name} on {self.device.type} ({self.precision}, {engine})"

    def token_lengths(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer.ids(texts, truncate=False)]

    def view(self, image: Image.Image) -> Image.Image:
        return self.transform.view(image)

    @torch.inference_mode()
    def encode_patches(self, image: Image.Image) -> torch.Tensor:
        """[h, w, D] L2-normalised patch tokens projected into the joint space (the last layer's tokens through
        the same post-layernorm and projection as the class token)."""
        pixels, model = self.transform([image]).to(self.device), self.model  # loaded now on a lean encoder
        with autocast(self.device, "fp32" if self.precision == "int8" else self.precision):
            hidden = model.vision_model(pixel_values=pixels).last_hidden_state[0, 1:]
            tokens = model.visual_projection(model.vision_model.post_layernorm(hidden))
        side = int(round(tokens.shape[0] ** 0.5))
        return l2_normalize(tokens.float().cpu()).view(side, side, -1)


def _exportable(spec: str) -> bool:
    """Whether a background export can work: ONNX Runtime installed and the weights on disk to key the cache by."""
    import importlib.util

    from clipdemo.fingerprints import backbone_folder

    return importlib.util.find_spec("onnxruntime") is not None and backbone_folder(spec) is not None


def _clip_transform(spec: str, path: str, hub_kwargs: dict) -> ImageTransform:
    """The model's preprocessing from its processor config file, read as JSON: transformers' image processor class
    imports its modeling stack (and dynamo), which a process running the ONNX towers does without."""
    for name, inner in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        config = model_json(spec, name, hub_kwargs)
        if config is not None:
            config = config.get(inner, {}) if inner else config
            if "image_mean" in config:
                size, crop = config.get("size", 224), config.get("crop_size", 224)
                size = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
                crop = crop["height"] if isinstance(crop, dict) else crop
                return ImageTransform(size, crop, config["image_mean"], config["image_std"])
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    p = CLIPImageProcessorPil.from_pretrained(path, **hub_kwargs)  # laid out otherwise: transformers reads it
    return ImageTransform(p.size["shortest_edge"], p.crop_size["height"], p.image_mean, p.image_std)


def _safetensors_tensor(spec: str, name: str) -> torch.Tensor | None:
    """One tensor of ``spec``'s safetensors weights (a single file or shards with an index), or None."""
    from safetensors import safe_open

    from clipdemo.fingerprints import backbone_folder

    folder = backbone_folder(spec)
    if folder is None:
        return None
    try:
        index = folder / "model.safetensors.index.json"
        file = folder / (json.loads(index.read_text())["weight_map"][name] if index.is_file() else "model.safetensors")
        with safe_open(str(file), framework="numpy") as f:
            return torch.from_numpy(f.get_tensor(name))
    except Exception:  # unreadable or laid out otherwise: the caller loads the model instead
        return None


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


def _config_json(spec: str, hub_kwargs: dict) -> dict:
    """``spec``'s ``config.json``, read as JSON (transformers' ``AutoConfig`` imports its whole catalogue of models,
    about 1 s); OSError when it has none."""
    config = model_json(spec, "config.json", hub_kwargs)
    if config is None:
        raise OSError("it has no config.json")
    return config


def _text_config(config: dict) -> dict:
    """The text tower's config as transformers reads it: an old config's ``text_config_dict`` wins over its
    ``text_config``."""
    old = config.get("text_config_dict")
    return (old if old is not None else config.get("text_config")) or {}


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
    if error is None:
        why = "the Hub is unreachable and it is not in the local HF cache"
    elif "ignore_mismatched_sizes" in str(error):  # transformers' own line only says "look at the above report!"
        why = "its weights do not have the shapes its config.json gives; the log lists them"
    else:
        why = first_line(error)
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
    spec: str | None = None,
    device: str = "auto",
    precision: str | None = None,
    engine: str | None = None,
    background_export: bool = False,
) -> Encoder:
    """Load (once per spec, thread-safe) a HF CLIP by Hub id or folder, or a clipdemo scratch checkpoint.
    ``engine``: ``auto`` (``CLIPDEMO_ENGINE``'s default), ``torch`` or ``onnx``, see ``clipdemo.onnx_engine``.
    ``background_export`` (the server's choice): a HF CLIP whose ONNX export is not cached answers in PyTorch at
    once and switches when a child process has exported it; otherwise the export is waited for (the CLI: a one-shot
    process would lose a background export, and every later run loads the cached one).

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
            encoder = _build(spec, device, precision, engine, background_export)
            with _registry_lock:
                for old in [k for k in _cache if k[:4] == key[:4]]:  # the folder's previous contents
                    del _cache[old]
                    _locks.pop(old, None)
                _cache[key] = encoder
        return _cache[key]


SUPPORTED_TYPES = ("clip", *SIGLIP_TYPES)  # transformers' model_type of the families we run


def _build(spec: str, device: str, precision: str | None, engine: str | None, background_export: bool) -> Encoder:
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
        except LOAD_ERRORS as e:
            raise ModelUnavailable(_unavailable_message(spec, e)) from e
    return HFCLIPEncoder(spec, device=device, precision=precision, engine=engine, background_export=background_export)


def _model_type(spec: str) -> str:
    """The family a HF folder or Hub id holds (its config's ``model_type``); one sentence if we don't run it."""
    _hf_local_or_hub(spec)  # a missing folder, an unreachable Hub: one sentence, at once
    try:
        model_type = str(_config_json(spec, _hub_kwargs(spec)).get("model_type", "unknown"))
    except Exception as e:  # unreadable JSON, the Hub's errors
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
