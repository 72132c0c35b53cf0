"""Frozen-backbone features: encode each image once, cache the embeddings on disk, reuse them forever.

Training a head on a frozen CLIP only ever needs the image embeddings, so we compute them once per
(backbone, dataset, split) and keep them in a safetensors file; every later head run, evaluation and
benchmark reads the file instead of running the ViT again. The class-prompt text embeddings get the same
treatment.

- ``Backbone(spec)``: a backbone named by its spec (Hub id, HF folder, scratch checkpoint) that loads the
  model only when something actually has to be encoded, so a warm-cache run never pays the model load.
  Its ``fingerprint`` identifies the weights from the files (config and tokenizer/processor JSON in full,
  weight files by size and three sampled 64 KiB chunks), so it is cheap, path-independent (a copied folder
  keeps its cache) and changes when the weights or the preprocessing config change.
- ``encode_split(encoder, split, ...)``: embeddings of a ``Split`` in batches (decoding the next batch on
  a thread while the model runs), unreadable images skipped and counted, cached under a key built from the
  backbone fingerprint, the precision and engine it runs at (``Backbone.numerics``), the caller's ``key_parts``
  (dataset fingerprint, split name) and ``FEATURES_VERSION`` (bumped when our preprocessing code changes). Cache
  files are written atomically (temp file + rename) and kept under the caches' budget (``clipdemo.caches``).
- Sharding (for torch.distributed, issue 8): ``encode_split(..., shard=(rank, world))`` encodes only the
  rank's strided share of the split and returns it with its indices; ``merge_shards(parts)`` puts the shares
  back in split order, and ``save_features(feature_cache_path(...), merged)`` writes the very file a single
  process would have written. A shard call whose full cache already exists just slices it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from clipdemo import caches
from clipdemo.atomic import write_atomic
from clipdemo.data import ImageDataset, Split
from clipdemo.data.splits import Part, SplitPlan
from clipdemo.fingerprints import backbone_fingerprint, backbone_folder, canonical_spec
from clipdemo.images import ImageError, load_image
from clipdemo.progress import ConsoleProgress, typed
from clipdemo.scoring import SOFTMAX, Rule, ZeroShotClassifier
from clipdemo.zeroshot import CARS_TEMPLATES, build_classifier

FEATURES_VERSION = 2  # bump when preprocessing or the file layout changes: old caches are then ignored
MAX_NAMED = 20  # unreadable images named in a cache file and the log (all are counted)


# --- backbone identity and lazy loading ------------------------------------------------------------------


class Backbone:
    """An encoder named by ``spec`` and loaded on first use (``clipdemo.encoders.load_encoder``).

    Also wraps an already built encoder (``Backbone.of(encoder)``), e.g. a test double. Answers the
    ``Encoder`` protocol by delegation.
    """

    def __init__(self, spec: str, device: str = "auto", precision: str | None = None, encoder=None):
        self.spec = canonical_spec(spec)
        self.device_choice, self.precision_choice = device, precision
        self._encoder = encoder
        self._fingerprint: str | None = None

    @classmethod
    def of(cls, backbone, device: str = "auto", precision: str | None = None) -> Backbone:
        """A ``Backbone`` from a spec string, a ``Backbone`` or any ``Encoder``."""
        if isinstance(backbone, Backbone):
            return backbone
        if isinstance(backbone, (str, os.PathLike)):
            return cls(str(backbone), device, precision)
        spec = str(getattr(backbone, "path", None) or backbone.name)
        return cls(spec, device, precision, encoder=backbone)

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    @property
    def encoder(self):
        if self._encoder is None:
            from clipdemo.encoders import load_encoder

            self._encoder = load_encoder(self.spec, device=self.device_choice, precision=self.precision_choice)
        return self._encoder

    @property
    def fingerprint(self) -> str:
        """Identity of the weights and preprocessing config (see ``folder_fingerprint``)."""
        if self._fingerprint is None:
            own = getattr(self._encoder, "fingerprint", None)
            found = own or backbone_fingerprint(self.spec)
            if found is None and self._encoder is None:
                self.encoder  # noqa: B018 - a Hub id not yet in the local cache: loading downloads it (or says why it can't)
                found = backbone_fingerprint(self.spec)
            self._fingerprint = found or f"name:{self.spec}"  # no files to look at (a test double)
        return self._fingerprint

    @property
    def numerics(self) -> tuple[str, str]:
        """``(precision, engine)`` its embeddings are made at: the loaded encoder's, else what loading would give
        (``planned_numerics``), so a warm cache still needs no model load."""
        if self._encoder is not None:
            return getattr(self._encoder, "precision", "fp32"), getattr(self._encoder, "engine", "torch")
        return planned_numerics(self.spec, self.device_choice, self.precision_choice)

    # the Encoder protocol, by delegation
    name = property(lambda self: getattr(self._encoder, "name", None) or self.spec)
    logit_scale = property(lambda self: self.encoder.logit_scale)
    logit_bias = property(lambda self: getattr(self.encoder, "logit_bias", 0.0))
    scoring = property(lambda self: getattr(self.encoder, "scoring", SOFTMAX))

    def encode_images(self, images) -> torch.Tensor:
        return self.encoder.encode_images(images)

    def encode_texts(self, texts) -> torch.Tensor:
        return self.encoder.encode_texts(texts)

    def describe(self) -> str:
        return self.encoder.describe() if self.loaded else f"{self.spec} (not loaded)"


def planned_numerics(spec: str, device: str = "auto", precision: str | None = None) -> tuple[str, str]:
    """``(precision, engine)`` that ``load_encoder(spec, device, precision)`` runs at, read from the model's files
    without loading it: the families' rules (``onnx_engine.planned``), PyTorch where ONNX Runtime is missing."""
    import importlib.util

    from clipdemo.devices import pick_device, pick_precision
    from clipdemo.encoders import is_scratch_checkpoint
    from clipdemo.onnx_engine import planned
    from clipdemo.siglip import SIGLIP_TYPES

    folder, where = backbone_folder(spec), pick_device(device)
    if folder is not None and is_scratch_checkpoint(folder):
        asked = pick_precision(where, precision, int8=True)
        auto = "onnx" if asked == "int8" else "torch"  # onnx_engine.scratch_towers's rule
    elif folder is None or _model_type(folder) in SIGLIP_TYPES:  # SigLIP: PyTorch only
        return pick_precision(where, precision), "torch"
    else:
        asked, auto = pick_precision(where, precision, int8=True), "onnx"
    if importlib.util.find_spec("onnxruntime") is None:
        return planned(where, asked, "torch")
    return planned(where, asked, auto_on_cpu=auto)


def _model_type(folder: Path) -> str:
    try:
        return str(json.loads((folder / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError, AttributeError):
        return ""


# --- image features -------------------------------------------------------------------------------------


class EncodingStopped(RuntimeError):
    """``should_stop()`` asked ``encode_split`` to stop; nothing was cached."""


@dataclass
class EncodedSplit:
    """What an encoder made of the images of a split that decoded. Unpacks as ``features, labels, skipped``.

    ``features`` are whatever the encoder returns per image: L2-normalised float32 embeddings for a CLIP, or
    uint8 pixels for the scratch trainer's ``PixelEncoder``; rows are taken with ``rows(indices)``.
    """

    features: torch.Tensor  # [K, ...]
    labels: torch.Tensor  # [K] int64
    skipped: int  # images that could not be read (ImageError), left out of the rows above
    kept: torch.Tensor  # [K] int64: each row's index in the split
    fresh: int = 0  # images this call ran through the model (0 when read from the cache)
    unreadable: tuple[str, ...] = ()  # "name: reason" of the first MAX_NAMED unreadable images, for the log

    def __iter__(self) -> Iterator:
        return iter((self.features, self.labels, self.skipped))

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, labels) of the split's images at ``indices`` (in that order), skipping unreadable ones."""
        where = {int(i): r for r, i in enumerate(self.kept.tolist())}
        pick = torch.tensor([where[int(i)] for i in indices if int(i) in where], dtype=torch.long)
        return self.features[pick], self.labels[pick]

    def missing(self, indices: Sequence[int]) -> int:
        """How many of the images at ``indices`` could not be read."""
        kept = set(self.kept.tolist())
        return sum(int(i) not in kept for i in indices)


def feature_key(
    backbone_fingerprint: str, key_parts: Sequence = (), *, precision: str = "fp32", engine: str = "torch"
) -> str:
    """The cache key of what a backbone made of ``key_parts``: its weights, and the precision and engine it ran at
    (features made at int8 or bf16 are never reused by an fp32 run)."""
    blob = json.dumps(
        {
            "v": FEATURES_VERSION,
            "backbone": backbone_fingerprint,
            "precision": precision,
            "engine": engine,
            "parts": [str(p) for p in key_parts],
        }
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def backbone_key(backbone: Backbone, key_parts: Sequence = ()) -> str:
    """``feature_key`` of ``backbone``'s fingerprint and numerics (``Backbone.numerics``)."""
    precision, engine = backbone.numerics
    return feature_key(backbone.fingerprint, key_parts, precision=precision, engine=engine)


def feature_cache_path(encoder, key_parts: Sequence, cache_dir) -> Path:
    """Where ``encode_split`` keeps the embeddings for this backbone (its weights, precision and engine) and
    ``key_parts``."""
    return Path(cache_dir) / f"features-{backbone_key(Backbone.of(encoder), key_parts)}.safetensors"


def save_features(path, encoded: EncodedSplit, n: int, meta: dict | None = None) -> Path:
    """Write ``encoded`` (for a split of ``n`` images) atomically (``clipdemo.atomic``); it is in use while
    ``encoded.features`` lives, and older cache entries are evicted beyond the budget (``clipdemo.caches``)."""
    tensors = {"features": encoded.features.contiguous(), "labels": encoded.labels.long(), "kept": encoded.kept.long()}
    metadata = {
        "n": str(n),
        "skipped": str(encoded.skipped),
        "version": str(FEATURES_VERSION),
        "unreadable": json.dumps(list(encoded.unreadable)),
        "meta": json.dumps(meta or {}),
    }
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    caches.used(path, encoded.features)
    caches.enforce_budget(Path(path).parent)
    return Path(path)


def load_features(path, split: Split) -> EncodedSplit | None:
    """The cached embeddings of ``split`` at ``path``, or None when absent, damaged or not for this split."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        data = load_file(path)
        encoded = EncodedSplit(
            data["features"],
            data["labels"],
            int(meta["skipped"]),
            data["kept"],
            unreadable=tuple(json.loads(meta.get("unreadable", "[]"))),
        )
        labels = torch.as_tensor(split.labels, dtype=torch.long)
        # the key already names the dataset; this catches a split that changed under the same name
        if int(meta["n"]) != len(split) or not torch.equal(labels[encoded.kept], encoded.labels):
            return None
        caches.used(path, encoded.features)  # the last use, and held while the features live
        return encoded
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """Rank ``rank``'s share of ``range(n)``: every ``world``-th index, so shares differ by at most one."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    return list(range(rank, n, world))


def merge_shards(parts: Sequence[EncodedSplit]) -> EncodedSplit:
    """The shards of one split (any order) as one ``EncodedSplit`` in split order, as one process makes it."""
    features = torch.cat([p.features for p in parts])
    labels = torch.cat([p.labels for p in parts])
    kept = torch.cat([p.kept for p in parts])
    order = torch.argsort(kept)
    return EncodedSplit(
        features[order],
        labels[order],
        sum(p.skipped for p in parts),
        kept[order],
        sum(p.fresh for p in parts),
        tuple(n for p in parts for n in p.unreadable)[:MAX_NAMED],
    )


def encode_split(
    encoder,
    split: Split,
    *,
    batch_size: int = 64,
    progress: Callable[[dict], None] | None = None,
    cache_dir=None,
    key_parts: Sequence = (),
    shard: tuple[int, int] | None = None,
    name: str = "images",
    should_stop: Callable[[], bool] | None = None,
) -> EncodedSplit:
    """Embed every image of ``split`` once with the frozen ``encoder`` (an ``Encoder``, a ``Backbone`` or a spec).

    Returns an ``EncodedSplit`` (unpacks as ``features [K, D], labels [K], skipped``). With ``cache_dir`` the
    result is read from / written to ``feature_cache_path(encoder, key_parts, cache_dir)``; ``key_parts``
    must identify the split's content (e.g. ``(dataset.fingerprint, "train")``). ``progress`` gets
    ``ProgressEvent(phase="encode", split=name, done, total, skipped, cached)``; without it a console bar is
    shown (on a terminal). ``shard=(rank, world)``: encode only that rank's share (see the module docstring).
    ``should_stop()`` is polled between batches; when it says so, ``EncodingStopped`` is raised.
    """
    backbone = Backbone.of(encoder)
    path = feature_cache_path(backbone, key_parts, cache_dir) if cache_dir is not None else None
    wanted = shard_indices(len(split), *shard) if shard else list(range(len(split)))
    report = typed(progress or ConsoleProgress())
    cached = load_features(path, split) if path is not None else None
    if cached is not None:
        if shard:
            mine = torch.isin(cached.kept, torch.tensor(wanted, dtype=torch.long))
            skipped = len(wanted) - int(mine.sum())  # the share's unreadable images
            cached = EncodedSplit(cached.features[mine], cached.labels[mine], skipped, cached.kept[mine])
        report(
            {
                "phase": "encode",
                "split": name,
                "done": len(wanted),
                "total": len(wanted),
                "skipped": cached.skipped,
                "cached": True,
            }
        )
        return cached
    if shard is None and _world() > 1:  # under torchrun: every rank encodes its share, merged below
        return _encode_across_ranks(
            backbone,
            split,
            path,
            key_parts,
            batch_size=batch_size,
            progress=progress,
            name=name,
            should_stop=should_stop,
        )
    encoded = _encode(backbone, split, wanted, batch_size, report, name, should_stop or (lambda: False))
    if path is not None and shard is None:
        _save_made(backbone, encoded, len(split), key_parts, path.parent)
    return encoded


def _save_made(backbone: Backbone, encoded: EncodedSplit, n: int, key_parts, cache_dir) -> None:
    """Save what ``backbone`` just made, under its key now that it is loaded: the precision and engine it ran at
    (a failed ONNX export runs PyTorch instead of the ONNX Runtime the key was first planned with)."""
    precision, engine = backbone.numerics
    meta = {
        "backbone": backbone.spec,
        "key_parts": [str(p) for p in key_parts],
        "precision": precision,
        "engine": engine,
    }
    save_features(feature_cache_path(backbone, key_parts, cache_dir), encoded, n, meta)


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_initialized() else 1


def _encode_across_ranks(backbone: Backbone, split: Split, path, key_parts, **kwargs) -> EncodedSplit:
    """Each rank encodes its strided share; the shares are gathered, merged in split order, and rank 0 writes
    the very cache file one process would have written. Every rank returns the whole split."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    part = encode_split(backbone, split, shard=(rank, world), **kwargs)
    parts = [None] * world
    dist.all_gather_object(parts, part)
    merged = merge_shards(parts)
    if rank == 0 and path is not None:
        _save_made(backbone, merged, len(split), key_parts, Path(path).parent)
    dist.barrier()  # nobody reads the cache before it is complete
    return merged


def _encode(
    backbone: Backbone, split: Split, indices: list[int], batch_size: int, report, name: str, should_stop
) -> EncodedSplit:
    batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    features, kept, unreadable, done = [], [], [], 0
    with ThreadPoolExecutor(max_workers=1) as pool:  # decode batch b+1 while the model runs on batch b
        pending = pool.submit(_decode, split, batches[0]) if batches else None
        for b in range(len(batches)):
            if should_stop():
                pending.cancel()
                raise EncodingStopped(
                    f"stopped while reading {name} ({done} of {len(indices)} done); nothing was cached"
                )
            images, ok, bad = pending.result()
            if b + 1 < len(batches):
                pending = pool.submit(_decode, split, batches[b + 1])
            if images:
                features.append(backbone.encode_images(images).cpu())
                kept.extend(ok)
            unreadable += bad
            done += len(batches[b])
            report(
                {
                    "phase": "encode",
                    "split": name,
                    "done": done,
                    "total": len(indices),
                    "skipped": len(unreadable),
                    "cached": False,
                }
            )
    kept_t = torch.tensor(kept, dtype=torch.long)
    labels = torch.as_tensor(split.labels, dtype=torch.long)[kept_t] if kept else torch.empty(0, dtype=torch.long)
    feats = torch.cat(features) if features else torch.empty(0, 0)
    return EncodedSplit(
        feats, labels, len(unreadable), kept_t, fresh=len(kept), unreadable=tuple(unreadable[:MAX_NAMED])
    )


def _decode(split: Split, indices: list[int]):
    """The images at ``indices`` that decode, their indices, and "name: reason" for each that doesn't."""
    images, ok, bad = [], [], []
    for i in indices:
        ref = split.images[i]
        try:
            images.append(load_image(ref))
            ok.append(i)
        except ImageError as e:  # unreadable: skipped, counted and named, never fatal
            where = Path(ref).name if isinstance(ref, (str, os.PathLike)) else f"row {i}"
            bad.append(f"{where}: {e}")
    return images, ok, bad


# --- a split plan's parts -------------------------------------------------------------------------------------


@dataclass
class PartRows:
    """One part's rows: ``features`` [K, ...] (embeddings, or uint8 pixels from the scratch trainer's
    ``PixelEncoder``) and ``labels`` [K]. Unpacks as ``features, labels``."""

    features: torch.Tensor
    labels: torch.Tensor

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.features, self.labels))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class EncodedPlan:
    rows: dict[str, PartRows]  # part name -> its rows (features [K, ...], labels [K])
    skipped: dict[str, int]  # part name -> unreadable images left out
    fresh: int  # images that went through the encoder (0 on a warm cache)


def encode_plan(plan: SplitPlan, encoder, *, parts=None, **kwargs) -> EncodedPlan:
    """What ``encoder`` makes of each of ``plan``'s parts (all, or those named in ``parts``), and its unreadable
    images per part: the one way a split plan is encoded, for heads (a frozen CLIP: ``Backbone``, spec or
    ``Encoder``) and for the scratch trainer (``PixelEncoder``: decoded pixels). See ``encode_parts``."""
    wanted = {k: v for k, v in plan.parts().items() if parts is None or k in parts}
    return encode_parts(plan.dataset, wanted, encoder, **kwargs)


def encode_parts(
    dataset: ImageDataset,
    parts: dict[str, Part],
    encoder,
    *,
    cache_dir=None,
    progress=None,
    batch_size: int = 64,
    should_stop=None,
) -> EncodedPlan:
    """Each dataset split the ``parts`` draw from is encoded once (cached under the encoder's fingerprint, the
    dataset fingerprint and the split name), and each part takes its rows; unreadable images are counted per
    part and named in a progress message."""
    encoded = encode_dataset_splits(
        dataset,
        encoder,
        [p.split for p in parts.values()],
        cache_dir=cache_dir,
        progress=progress,
        batch_size=batch_size,
        should_stop=should_stop,
    )
    report = typed(progress)
    for name, e in encoded.items():
        if e.skipped:
            report({"phase": "encode", "message": unreadable_line(name, e)})
    return EncodedPlan(
        {k: PartRows(*encoded[p.split].rows(p.indices)) for k, p in parts.items()},
        {k: encoded[p.split].missing(p.indices) for k, p in parts.items()},
        sum(e.fresh for e in encoded.values()),
    )


def encode_dataset_splits(
    dataset: ImageDataset,
    encoder,
    names,
    *,
    cache_dir=None,
    progress=None,
    batch_size: int = 64,
    should_stop=None,
) -> dict[str, EncodedSplit]:
    """Each named dataset split encoded once (cached under the dataset fingerprint and split name)."""
    return {
        name: encode_split(
            encoder,
            dataset.splits[name],
            batch_size=batch_size,
            progress=progress,
            cache_dir=cache_dir,
            key_parts=(dataset.fingerprint, name),
            name=name,
            should_stop=should_stop,
        )
        for name in dict.fromkeys(names)
    }


def unreadable_line(split: str, encoded: EncodedSplit) -> str:
    """One log line naming a split's unreadable images (they are skipped, never fatal)."""
    named = "; ".join(encoded.unreadable[:5]) + ("; …" if encoded.skipped > 5 else "")
    return f"{split}: skipped {encoded.skipped} unreadable image(s): {named}"


# --- class-prompt text embeddings -----------------------------------------------------------------------


def zero_shot_classifier(
    encoder, class_names: Sequence[str], templates: Sequence[str] = CARS_TEMPLATES, cache_dir=None
) -> ZeroShotClassifier:
    """The classes as a ``ZeroShotClassifier``: their ensembled prompt embeddings (``zeroshot.build_classifier``)
    and the backbone family's rule; with ``cache_dir`` kept on disk too, so a later run needs neither the text
    tower nor the model load."""
    backbone = Backbone.of(encoder)
    names, templates = tuple(class_names), tuple(templates)
    path = None
    if cache_dir is not None:
        path = _text_path(backbone, names, templates, cache_dir)
        cached = _load_classifier(path, names, templates)
        if cached is not None:
            caches.used(path, cached)  # the last use, and held while the classifier lives
            return cached
    classes = build_classifier(backbone.encoder, list(names), templates).float()  # batched by length
    classifier = ZeroShotClassifier(classes, Rule.of(backbone), names, templates)
    if path is not None:
        path = _text_path(backbone, names, templates, cache_dir)  # loaded now: the numerics it ran at
        precision, engine = backbone.numerics
        meta = {"backbone": backbone.spec, "precision": precision, "engine": engine}
        metadata = {"scoring": json.dumps(classifier.rule.to_config()), "meta": json.dumps(meta)}
        write_atomic(path, lambda tmp: save_file({"classes": classes.contiguous()}, tmp, metadata=metadata))
        caches.used(path, classifier)
        caches.enforce_budget(path.parent)
    return classifier


def _text_path(backbone: Backbone, names: tuple, templates: tuple, cache_dir) -> Path:
    key = backbone_key(backbone, ["text-v2", json.dumps([list(templates), list(names)])])
    return Path(cache_dir) / f"text-{key}.safetensors"


def _load_classifier(path: Path, names: tuple, templates: tuple) -> ZeroShotClassifier | None:
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            rule = Rule(**json.loads(f.metadata()["scoring"]))
            classes = f.get_tensor("classes")
        return ZeroShotClassifier(classes, rule, names, templates) if classes.shape[0] == len(names) else None
    except Exception:  # damaged: rebuild
        return None
