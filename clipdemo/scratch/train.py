"""Train the scratch CLIP on an ``ImageDataset``: a plain function with a progress callback.

``train_scratch(dataset, out_dir)`` decodes and resizes every image once into a uint8 tensor (optionally
cached on disk), draws one of the tutorial's six caption templates per image per epoch, trains with the
symmetric contrastive loss (in the default preset with multi-positive targets: same-class pairs in a batch are
positives), evaluates zero-shot on a validation split after each epoch, keeps the best checkpoint by
validation accuracy (written atomically, only when it improves) and reports final metrics on
the test split. A ``should_stop()`` callback (Ctrl-C handler, admin cancel) ends the run between steps
and still finishes the checkpoint; a raw KeyboardInterrupt leaves the last good checkpoint as it was.

Where the tutorial spent its time, and what replaces it: captions are tokenized once per (class,
template) instead of per item per step, and each step encodes only the distinct captions in the batch (a
batch of 1024 holds at most classes x 6 of them), then indexes the features back (gradients add up over
the duplicates, so the loss and update are the same). Attention is one fused call with a broadcast
key-padding mask instead of a Python loop over heads with a [B, T, T] mask.

The same code runs on N processes under torchrun (``clipdemo.distributed``): DDP averages gradients, the
``DistributedSampler`` shards each epoch by rank, the loss all-gathers features so every step sees the
global batch's negatives, and ``Runtime.is_main`` guards every write and progress report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from clipdemo import __version__, distributed
from clipdemo.checkpoints import save_checkpoint
from clipdemo.data import DataError, ImageDataset
from clipdemo.data.splits import SplitPlan, plan_splits
from clipdemo.devices import autocast, pick_precision
from clipdemo.distributed import Runtime, contrastive_loss_global
from clipdemo.evaluate import Scores, zero_shot_scores
from clipdemo.families import CHECKPOINT_KIND, SCRATCH
from clipdemo.features import encode_split, unreadable_line
from clipdemo.progress import typed
from clipdemo.results import TrainResult
from clipdemo.scoring import Rule
from clipdemo.scratch.encoder import TEMPLATES, PixelEncoder, to_pixels
from clipdemo.scratch.model import ScratchCLIP, ScratchCLIPConfig
from clipdemo.scratch.model import preset as get_preset
from clipdemo.scratch.tokenizer import ByteTokenizer
from clipdemo.zeroshot import ensemble

# --- data: the plan's parts, decoded once; captions as a table ---------------------------------------------


@dataclass
class CachedSplit:
    pixels: torch.Tensor  # uint8 [N, 3, S, S]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)


def decode_plan(
    plan: SplitPlan, size: int, cache_dir=None, progress=None
) -> tuple[dict[str, CachedSplit], dict[str, int]]:
    """Each part of ``plan`` as uint8 pixels, and its unreadable images (skipped) per part.

    Every dataset split the plan uses is decoded once (``PixelEncoder`` through ``encode_split``: two
    threads, cached on disk with ``cache_dir`` under the dataset fingerprint and image size) and its parts
    take their rows from it.
    """
    encoder = PixelEncoder(size)
    parts = plan.parts()
    decoded = {
        name: encode_split(
            encoder,
            plan.dataset.splits[name],
            batch_size=256,
            progress=progress,
            cache_dir=cache_dir,
            key_parts=(plan.dataset.fingerprint, name),
            name=name,
        )
        for name in dict.fromkeys(part.split for part in parts.values())
    }
    report = typed(progress)
    for name, encoded in decoded.items():
        if encoded.skipped:
            report({"phase": "encode", "message": unreadable_line(name, encoded)})
    cached = {key: CachedSplit(*decoded[part.split].rows(part.indices)) for key, part in parts.items()}
    skipped = {key: decoded[part.split].missing(part.indices) for key, part in parts.items()}
    return cached, skipped


class CaptionTable:
    """Every (class, template) caption tokenized once; caption id = class * n_templates + template."""

    def __init__(self, class_names: list[str], templates=TEMPLATES, context_length: int = 32):
        self.n_templates = len(templates)
        texts = [t.format(name) for name in class_names for t in templates]
        self.ids, self.mask = ByteTokenizer(context_length)(texts)

    def to(self, device) -> CaptionTable:
        self.ids, self.mask = self.ids.to(device), self.mask.to(device)
        return self

    def batch(self, caption_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, mask) of the distinct captions among ``caption_ids`` and the index mapping back to them."""
        unique, inverse = torch.unique(caption_ids, return_inverse=True)
        ids, mask = self.ids[unique], self.mask[unique]
        width = int(mask.sum(1).max())  # drop columns that are padding for every row
        return ids[:, :width], mask[:, :width], inverse


# --- model, optimiser, schedule ------------------------------------------------------------------------


def build_model(config: ScratchCLIPConfig, seed: int, device: torch.device) -> ScratchCLIP:
    torch.manual_seed(seed)
    return ScratchCLIP(config).to(device)


def make_optimizer(model: ScratchCLIP, config: ScratchCLIPConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    if config.optimizer != "adamw":
        raise ValueError(f"unknown optimizer {config.optimizer!r}")
    # open_clip's rule: no decay on gains, biases, embeddings, positions, class token or temperature
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or any(k in name for k in ("embed", "pos", "cls", "logit_scale"))
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def learning_rate(config: ScratchCLIPConfig, step: int, progress: float) -> float:
    """Linear warmup, then cosine to zero over ``progress`` in [0, 1] (steps or wall clock, whichever is further)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def wrap_ddp(model: ScratchCLIP, runtime: Runtime):
    """DDP averages gradients over ranks (a no-op wrapper is skipped for one process)."""
    if not runtime.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)


def make_sampler(n: int, seed: int, runtime: Runtime) -> DistributedSampler:
    """Seeded shuffling, sharded by rank (one shard today); call ``set_epoch`` before each epoch."""
    return DistributedSampler(range(n), num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True, seed=seed)


def augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random zoom-in crop (58-100% of the area), shift and horizontal flip, one batched resample."""
    B = pixels.shape[0]
    rand = torch.rand(B, 4, generator=generator).to(pixels.device)
    scale = 0.76 + 0.24 * rand[:, 0]  # side of the crop, as a fraction of the image
    flip = torch.where(rand[:, 1] < 0.5, -1.0, 1.0)
    tx, ty = (1 - scale) * (2 * rand[:, 2] - 1), (1 - scale) * (2 * rand[:, 3] - 1)
    theta = torch.zeros(B, 2, 3, device=pixels.device)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)


def train_step(
    model,
    optimizer,
    pixels,
    caption_ids,
    captions: CaptionTable,
    loss_fn=contrastive_loss_global,
    precision: str = "fp32",
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """One optimisation step on this rank's share of the batch; returns the (detached) local loss.

    ``model`` may be DDP-wrapped (its forward runs both towers); the loss all-gathers features across ranks,
    so with one process it is the plain symmetric contrastive loss. ``labels``: class of each row; given, every
    same-class pair in the batch is a positive (multi-positive targets, the ``default`` preset); None: only the
    diagonal is (the tutorial's loss). ``precision="bf16"``: the towers run under bf16 autocast (weights and
    optimizer stay fp32); the loss is always computed in fp32.
    """
    ids, mask, inverse = captions.batch(caption_ids)
    with autocast(pixels.device, precision):
        image_features, text_features, scale = model(pixels, ids, mask)
    text_features = text_features[inverse]  # each distinct caption encoded once
    loss = loss_fn(image_features.float(), text_features.float(), scale.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


# --- zero-shot evaluation ------------------------------------------------------------------------------


@torch.no_grad()
def class_embeddings(model: ScratchCLIP, captions: CaptionTable, n_classes: int) -> torch.Tensor:
    """[C, D]: each class's template embeddings, ensembled (``clipdemo.zeroshot.ensemble``)."""
    return ensemble(model.encode_text(captions.ids, captions.mask).view(n_classes, captions.n_templates, -1))


@torch.no_grad()
def image_features(model: ScratchCLIP, split: CachedSplit, device, batch: int = 512) -> torch.Tensor:
    """[N, D] normalised image embeddings of the split's pixels."""
    out = [torch.empty(0, model.config.embed_dim)]
    for i in range(0, len(split), batch):
        out.append(model.encode_image(split.pixels[i : i + batch].to(device)).float().cpu())  # uint8: scaled inside
    return torch.cat(out)


def evaluate(model, split: CachedSplit, captions: CaptionTable, n_classes: int, device) -> Scores:
    """Zero-shot metrics of ``split`` against every class name (``clipdemo.evaluate.zero_shot_scores``)."""
    was_training = model.training
    model.eval()
    try:
        classes = class_embeddings(model, captions, n_classes).cpu()
        return zero_shot_scores(
            image_features(model, split, device), split.labels, classes, Rule(scale=float(model.scale().detach()))
        )
    finally:
        model.train(was_training)


# --- the training function -----------------------------------------------------------------------------


def train_scratch(
    dataset: ImageDataset,
    out_dir,
    *,
    preset: str = "default",
    epochs: int | None = None,
    max_seconds: float | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "auto",
    eval_every: int = 1,
    cache_dir=None,
    overrides: dict | None = None,
    plan: SplitPlan | None = None,
) -> TrainResult:
    """Train a scratch CLIP on ``dataset`` and write the best checkpoint to ``out_dir``; return its metrics.

    ``preset``: a name in ``clipdemo.scratch.model.PRESETS``; ``overrides`` replaces config fields.
    The budget: ``max_seconds`` alone trains for that long (wall clock, whole run; the cosine schedule
    follows the clock and epochs are unbounded); ``epochs`` alone trains that many (the schedule follows the
    steps); both: whichever ends first (the schedule follows whichever is further along); neither: the
    preset's epochs. ``eval_every``: epochs between
    validation passes. ``cache_dir``: keep decoded images there, keyed by dataset fingerprint and size.
    ``plan``: the checked split plan (default: ``plan_splits(dataset, seed=seed)``; its leak note, if any, is
    reported and recorded). Unreadable images are skipped, counted per part and named in the log.
    ``progress`` gets ``ProgressEvent``s: "encode" while decoding, "train" per step, "eval" per validation,
    "done". Returns a ``TrainResult``: held-out metrics of the best weights on the plan's evaluation part,
    metrics of each extra split (e.g. ``unseen``), and the run (``best_val_acc``, ``best_epoch``,
    ``epochs_run``, ``steps``, ``seconds``, ``train_samples_per_s``, ``stopped``).
    """
    t0 = time.perf_counter()
    runtime = distributed.runtime(device)  # joins the process group under torchrun
    precision = pick_precision(runtime.device)  # bf16 autocast on GPUs that have it
    config = get_preset(preset, **(overrides or {}), **({"batch_size": batch_size} if batch_size else {}))
    if epochs is None and max_seconds is None:
        epochs = config.epochs
    out_dir = Path(out_dir)
    report = typed(progress if runtime.is_main else None)
    stop = should_stop or (lambda: False)

    plan = plan or plan_splits(dataset, seed=seed)
    if plan.leak:
        report({"phase": "encode", "message": plan.leak})
    parts, skipped = decode_plan(plan, config.image_size, cache_dir, progress if runtime.is_main else (lambda e: None))
    train, val = parts["train"], parts["validation"]
    for name, part in parts.items():
        if name in ("train", "validation", "evaluation") and len(part) == 0:
            raise DataError(f"{dataset.source}: none of the {name} images could be read (see the skipped files above).")
    n_classes = len(dataset.class_names)
    captions = CaptionTable(dataset.class_names, TEMPLATES, config.context_length).to(runtime.device)
    model = build_model(config, seed, runtime.device)  # same seed: every rank starts from the same weights
    trained = wrap_ddp(model, runtime)
    optimizer = make_optimizer(model, config)
    sampler = make_sampler(len(train), seed, runtime)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    per_rank_batch = max(1, config.batch_size // runtime.world_size)
    steps_per_epoch = math.ceil(len(sampler) / per_rank_batch)
    total_steps = epochs * steps_per_epoch if epochs else None  # None: bounded by the clock only

    saved_config = {"kind": CHECKPOINT_KIND[SCRATCH], **config.to_dict(), "templates": list(TEMPLATES)}
    card_base = {
        "title": "Scratch CLIP",
        "dataset": {
            "source": dataset.source,
            "fingerprint": dataset.fingerprint,
            "splits": {k: len(s) for k, s in dataset.splits.items()},
        },
        "classes": list(dataset.class_names),
        "preset": preset,
        "config": config.to_dict(),
        "seed": seed,
        "processes": runtime.world_size,
        "templates": list(TEMPLATES),
        "split": plan.description,
        "split_plan": plan.card(),
        "eval_split": plan.eval_name,
        "skipped": skipped,
        "notes": [*dataset.notes, *([plan.leak] if plan.leak else [])],
        "library_version": __version__,
    }

    best = {"acc": -1.0, "epoch": 0, "state": None}
    step, epoch, loss_value, val_acc, stopped = 0, 0, float("nan"), None, "finished"
    train_time, train_cpu, samples = 0.0, 0.0, 0

    def save(card_extra: dict) -> None:
        if runtime.is_main:  # one writer; the write itself is atomic
            save_checkpoint(out_dir, best["state"], saved_config, {**card_base, **card_extra})

    def out_of_time() -> bool:
        return max_seconds is not None and time.perf_counter() - t0 >= max_seconds

    def eta(elapsed: float) -> float:
        by_clock = max(0.0, max_seconds - elapsed) if max_seconds is not None else math.inf
        return min(elapsed / max(step, 1) * (total_steps - step) if total_steps else math.inf, by_clock)

    def schedule_progress(elapsed: float) -> float:
        """How far along the budget the run is, in [0, 1]: steps or clock, whichever is further."""
        return max(step / total_steps if total_steps else 0.0, elapsed / max_seconds if max_seconds else 0.0)

    batch_buffer = torch.empty((per_rank_batch, *train.pixels.shape[1:]), dtype=torch.uint8)
    model.train()
    while (epochs is None or epoch < epochs) and stopped == "finished":
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), dtype=torch.long)
        # one template per image per epoch, drawn for the whole set so it does not depend on sharding
        templates = torch.randint(
            len(TEMPLATES), (len(train),), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)
        )
        for start in range(0, len(order), per_rank_batch):
            reason = "cancelled" if stop() else "time budget" if out_of_time() else None
            if distributed.any_rank(reason is not None):  # one rank stopping stops all, at the same step
                stopped = reason or "stopped by another rank"
                break
            ts, cs = time.perf_counter(), time.process_time()
            idx = order[start : start + per_rank_batch]
            # gather into one reused uint8 buffer: a fresh 50 MB tensor per step (seed preset) costs page faults;
            # safe because the previous step's backward, the last reader, has finished
            pixels = torch.index_select(train.pixels, 0, idx, out=batch_buffer[: len(idx)]).to(runtime.device)
            if config.augment:
                pixels = augment(to_pixels(pixels), aug_gen)
            labels = train.labels[idx].to(runtime.device)
            caption_ids = labels * len(TEMPLATES) + templates[idx].to(runtime.device)
            elapsed = time.perf_counter() - t0
            for group in optimizer.param_groups:
                group["lr"] = lr = learning_rate(config, step, schedule_progress(elapsed))
            local_loss = train_step(
                trained,
                optimizer,
                pixels,
                caption_ids,
                captions,
                precision=precision,
                labels=labels if config.loss == "multi-positive" else None,
            )
            loss_value = distributed.mean_across_ranks(local_loss)
            step += 1
            train_time += time.perf_counter() - ts
            train_cpu += time.process_time() - cs
            samples += len(idx)
            elapsed = time.perf_counter() - t0
            report(
                {
                    "phase": "train",
                    "epoch": epoch + 1,
                    "epochs": epochs,
                    "step": step,
                    "total_steps": total_steps,
                    "loss": loss_value,
                    "lr": lr,
                    "val_acc": val_acc,
                    "best_val_acc": max(best["acc"], 0.0),
                    "elapsed": elapsed,
                    "eta": eta(elapsed),
                    "samples_per_s": samples / train_time,
                }
            )
        else:
            epoch += 1
        if step == 0:
            break  # stopped before the first step: nothing to evaluate or save
        last = (epochs is not None and epoch >= epochs) or stopped != "finished"
        if epoch % eval_every == 0 or last:
            val_acc = evaluate(model, val, captions, n_classes, runtime.device).acc1
            if val_acc > best["acc"]:
                best.update(
                    acc=val_acc, epoch=epoch, state={k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
                )
                save({"complete": False, "validation": {"acc1": val_acc, "epoch": epoch}, "metrics": {}})
            elapsed = time.perf_counter() - t0
            report(
                {
                    "phase": "eval",
                    "epoch": epoch,
                    "epochs": epochs,
                    "step": step,
                    "total_steps": total_steps,
                    "loss": loss_value,
                    "val_acc": val_acc,
                    "best_val_acc": best["acc"],
                    "elapsed": elapsed,
                    "eta": 0.0 if last else eta(elapsed),
                }
            )

    if best["state"] is None:
        raise RuntimeError("training stopped before its first step; no checkpoint was written")

    # final metrics with the best weights, on the held-out part and any extra split
    model.load_state_dict(best["state"])
    metrics = evaluate(model, parts["evaluation"], captions, n_classes, runtime.device)
    extra = {
        name: evaluate(model, parts[name], captions, n_classes, runtime.device)
        for name in plan.extra
        if len(parts[name])
    }
    seconds = time.perf_counter() - t0
    run = {
        "best_val_acc": best["acc"],
        "best_epoch": best["epoch"],
        "epochs_run": epoch,
        "steps": step,
        "seconds": round(seconds, 2),
        "train_samples_per_s": round(samples / max(train_time, 1e-9), 1),
        "train_samples_per_cpu_s": round(samples / max(train_cpu, 1e-9), 1),
        "stopped": stopped,
        "device": str(runtime.device),
        "precision": precision,
    }
    save(
        {
            "complete": True,
            "metrics": metrics.to_dict(),
            "extra_metrics": {k: v.summary() for k, v in extra.items()},
            "validation": {"acc1": best["acc"], "epoch": best["epoch"]},
            "run": run,
            "trained_on": f"{dataset.source}: {len(dataset.class_names)} classes, {len(train)} training images",
        }
    )
    report(
        {
            "phase": "done",
            "epoch": epoch,
            "epochs": epochs,
            "step": step,
            "total_steps": total_steps,
            "loss": loss_value,
            "val_acc": val_acc,
            "best_val_acc": best["acc"],
            "elapsed": seconds,
            "eta": 0.0,
            "test_acc": metrics.acc1,
        }
    )
    return TrainResult(SCRATCH, out_dir, list(dataset.class_names), metrics, plan.card(), skipped, run, extra=extra)
