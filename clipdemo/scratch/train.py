"""Train the scratch CLIP on an ``ImageDataset``: a plain function with a progress callback.

``train_scratch(dataset, out_dir)`` decodes and resizes every image once into a uint8 tensor (optionally
cached on disk; ``features.encode_plan`` with a ``PixelEncoder``, the way heads encode their images), draws one
of the tutorial's six caption templates per image per epoch, trains with the symmetric contrastive loss (in the
default preset with multi-positive targets: same-class pairs in a batch are positives), evaluates zero-shot on a
validation split after each epoch, keeps the best checkpoint by validation accuracy (written atomically, only
when it improves) and reports final metrics on the test split. A ``should_stop()`` callback (Ctrl-C handler,
admin cancel) ends the run between steps and still finishes the checkpoint; a raw KeyboardInterrupt leaves the
last good checkpoint as it was.

``train_scratch`` reads as a table of contents: ``setup`` (device, config, budget), ``load_data`` (pixels and
captions), ``build_model``, ``TrainLoop`` (epochs of ``train_step``s, validation, saving the best weights through
the one ``CheckpointWriter``) and ``finish`` (held-out metrics of the best weights, the final save).

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
from clipdemo.features import PartRows, encode_plan
from clipdemo.progress import typed
from clipdemo.results import TrainResult
from clipdemo.scoring import Rule
from clipdemo.scratch.config import ScratchCLIPConfig
from clipdemo.scratch.config import preset as get_preset
from clipdemo.scratch.encoder import TEMPLATES, PixelEncoder, to_pixels
from clipdemo.scratch.model import ScratchCLIP
from clipdemo.scratch.tokenizer import ByteTokenizer
from clipdemo.zeroshot import ensemble

# --- captions as a table ---------------------------------------------------------------------------------


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
def image_features(model: ScratchCLIP, split: PartRows, device, batch: int = 512) -> torch.Tensor:
    """[N, D] normalised image embeddings of a part's uint8 pixels."""
    out = [torch.empty(0, model.config.embed_dim)]
    for i in range(0, len(split), batch):
        out.append(model.encode_image(split.features[i : i + batch].to(device)).float().cpu())  # uint8: scaled inside
    return torch.cat(out)


def evaluate(model, split: PartRows, captions: CaptionTable, n_classes: int, device) -> Scores:
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


# --- the training function: a table of contents ----------------------------------------------------------


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
    run = setup(preset, overrides, batch_size, epochs, max_seconds, seed, eval_every, device, progress, should_stop)
    data = load_data(dataset, plan or plan_splits(dataset, seed=seed), run, cache_dir, progress)
    model = build_model(run.config, seed, run.runtime.device)  # same seed: every rank starts from the same weights
    writer = CheckpointWriter(Path(out_dir), run, dataset, data)
    loop = TrainLoop(run, data, model, writer).train()
    return finish(run, dataset, data, loop, writer)


# --- setup and data ----------------------------------------------------------------------------------------


@dataclass
class Run:
    """What the run was asked for and where it runs; fixed once set up."""

    runtime: Runtime
    precision: str  # autocast of the towers: bf16 on GPUs that have it, else fp32
    config: ScratchCLIPConfig
    preset: str
    seed: int
    epochs: int | None  # None: bounded by the clock only
    max_seconds: float | None
    eval_every: int
    report: Callable[[dict], None]  # progress events (the main rank's only)
    should_stop: Callable[[], bool]
    t0: float  # perf_counter() at the start

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def out_of_time(self) -> bool:
        return self.max_seconds is not None and self.elapsed() >= self.max_seconds


def setup(
    preset_name, overrides, batch_size, epochs, max_seconds, seed, eval_every, device, progress, should_stop
) -> Run:
    """The process group (under torchrun), the device and precision, the config and the budget."""
    t0 = time.perf_counter()
    runtime = distributed.runtime(device)  # joins the process group under torchrun
    precision = pick_precision(runtime.device)  # bf16 autocast on GPUs that have it
    config = get_preset(preset_name, **(overrides or {}), **({"batch_size": batch_size} if batch_size else {}))
    if epochs is None and max_seconds is None:
        epochs = config.epochs
    report = typed(progress if runtime.is_main else None)
    stop = should_stop or (lambda: False)
    return Run(runtime, precision, config, preset_name, seed, epochs, max_seconds, eval_every, report, stop, t0)


@dataclass
class Data:
    plan: SplitPlan
    parts: dict[str, PartRows]  # each plan part as uint8 pixels [N, 3, S, S] and labels [N]
    skipped: dict[str, int]  # unreadable images left out, per part
    captions: CaptionTable
    n_classes: int

    @property
    def train(self) -> PartRows:
        return self.parts["train"]


def load_data(dataset: ImageDataset, plan: SplitPlan, run: Run, cache_dir, progress) -> Data:
    """The plan's parts decoded once into uint8 pixels (``features.encode_plan`` with a ``PixelEncoder``: each
    dataset split once, cached on disk with ``cache_dir``), and every caption tokenized once."""
    if plan.leak:
        run.report({"phase": "encode", "message": plan.leak})
    encoded = encode_plan(
        plan,
        PixelEncoder(run.config.image_size),
        cache_dir=cache_dir,
        progress=progress if run.runtime.is_main else (lambda event: None),
        batch_size=256,
    )
    for name, part in encoded.rows.items():
        if name in ("train", "validation", "evaluation") and len(part) == 0:
            raise DataError(f"{dataset.source}: none of the {name} images could be read (see the skipped files above).")
    captions = CaptionTable(dataset.class_names, TEMPLATES, run.config.context_length).to(run.runtime.device)
    return Data(plan, encoded.rows, encoded.skipped, captions, len(dataset.class_names))


# --- the checkpoint: one writer, the best weights so far ---------------------------------------------------


class CheckpointWriter:
    """Writes ``out_dir`` (atomically, on the main rank only): the weights, the config that rebuilds the model
    and a card saying what it was trained on. Called whenever validation improves, and once at the end."""

    def __init__(self, out_dir: Path, run: Run, dataset: ImageDataset, data: Data):
        self.out_dir, self.is_main = out_dir, run.runtime.is_main
        self.config = {"kind": CHECKPOINT_KIND[SCRATCH], **run.config.to_dict(), "templates": list(TEMPLATES)}
        self.card = run_card(run, dataset, data)

    def save(self, state: dict, card: dict) -> None:
        if self.is_main:  # one writer; the write itself is atomic
            save_checkpoint(self.out_dir, state, self.config, {**self.card, **card})


def run_card(run: Run, dataset: ImageDataset, data: Data) -> dict:
    """The card's fixed part: the data, the split plan, the config and the seed."""
    plan = data.plan
    return {
        "title": "Scratch CLIP",
        "dataset": {
            "source": dataset.source,
            "fingerprint": dataset.fingerprint,
            "splits": {k: len(s) for k, s in dataset.splits.items()},
        },
        "classes": list(dataset.class_names),
        "preset": run.preset,
        "config": run.config.to_dict(),
        "seed": run.seed,
        "processes": run.runtime.world_size,
        "templates": list(TEMPLATES),
        "split": plan.description,
        "split_plan": plan.card(),
        "eval_split": plan.eval_name,
        "skipped": data.skipped,
        "notes": [*dataset.notes, *([plan.leak] if plan.leak else [])],
        "library_version": __version__,
    }


# --- the loop ------------------------------------------------------------------------------------------


class TrainLoop:
    """Epochs of steps until the budget ends or the run is stopped, validating every ``eval_every`` epochs and
    saving the best weights so far. Its attributes say what the run has done.

    Stopping (``should_stop``, the clock, another rank) is checked before each step, so a run ends between
    steps, then validates and saves as at the end of an epoch; a raw exception (KeyboardInterrupt) leaves the
    last checkpoint written as it was."""

    def __init__(self, run: Run, data: Data, model: ScratchCLIP, writer: CheckpointWriter):
        self.run, self.data, self.model, self.writer = run, data, model, writer
        self.trained = wrap_ddp(model, run.runtime)
        self.optimizer = make_optimizer(model, run.config)
        self.sampler = make_sampler(len(data.train), run.seed, run.runtime)
        self.augment_generator = torch.Generator().manual_seed(run.seed + 1)
        self.per_rank_batch = max(1, run.config.batch_size // run.runtime.world_size)
        steps_per_epoch = math.ceil(len(self.sampler) / self.per_rank_batch)
        self.total_steps = run.epochs * steps_per_epoch if run.epochs else None  # None: bounded by the clock only
        # batches are gathered into one reused uint8 buffer: a fresh 50 MB tensor per step (seed preset) costs
        # page faults; safe because the previous step's backward, the last reader, has finished
        self.buffer = torch.empty((self.per_rank_batch, *data.train.features.shape[1:]), dtype=torch.uint8)
        self.step, self.epoch, self.loss, self.val_acc, self.stopped = 0, 0, math.nan, None, "finished"
        self.best_acc, self.best_epoch, self.best_state = -1.0, 0, None
        self.train_time, self.train_cpu, self.samples = 0.0, 0.0, 0  # inside training steps only

    def train(self) -> TrainLoop:
        epochs = self.run.epochs
        self.model.train()
        while (epochs is None or self.epoch < epochs) and self.stopped == "finished":
            if self.train_epoch():
                self.epoch += 1
            if self.step == 0:
                break  # stopped before the first step: nothing to evaluate or save
            last = (epochs is not None and self.epoch >= epochs) or self.stopped != "finished"
            if self.epoch % self.run.eval_every == 0 or last:
                self.validate(last)
        return self

    def train_epoch(self) -> bool:
        """One pass over this rank's shard of the training images; False when the run stopped part-way."""
        self.sampler.set_epoch(self.epoch)
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
        # one template per image per epoch, drawn for the whole set so it does not depend on sharding
        generator = torch.Generator().manual_seed(self.run.seed * 100_003 + self.epoch)
        templates = torch.randint(len(TEMPLATES), (len(self.data.train),), generator=generator)
        for start in range(0, len(order), self.per_rank_batch):
            reason = "cancelled" if self.run.should_stop() else "time budget" if self.run.out_of_time() else None
            if distributed.any_rank(reason is not None):  # one rank stopping stops all, at the same step
                self.stopped = reason or "stopped by another rank"
                return False
            self.train_batch(order[start : start + self.per_rank_batch], templates)
        return True

    def train_batch(self, idx: torch.Tensor, templates: torch.Tensor) -> None:
        """One optimisation step on the training rows ``idx`` (this rank's share of a batch); a "train" event."""
        run, train, device = self.run, self.data.train, self.run.runtime.device
        ts, cs = time.perf_counter(), time.process_time()
        pixels = torch.index_select(train.features, 0, idx, out=self.buffer[: len(idx)]).to(device)
        if run.config.augment:
            pixels = augment(to_pixels(pixels), self.augment_generator)
        labels = train.labels[idx].to(device)
        caption_ids = labels * len(TEMPLATES) + templates[idx].to(device)
        for group in self.optimizer.param_groups:
            group["lr"] = lr = learning_rate(run.config, self.step, self.schedule_progress(run.elapsed()))
        local_loss = train_step(
            self.trained,
            self.optimizer,
            pixels,
            caption_ids,
            self.data.captions,
            precision=run.precision,
            labels=labels if run.config.loss == "multi-positive" else None,
        )
        self.loss = distributed.mean_across_ranks(local_loss)
        self.step += 1
        self.train_time += time.perf_counter() - ts
        self.train_cpu += time.process_time() - cs
        self.samples += len(idx)
        elapsed = run.elapsed()
        run.report(
            {
                **self.position("train"),
                "epoch": self.epoch + 1,
                "lr": lr,
                "val_acc": self.val_acc,
                "best_val_acc": max(self.best_acc, 0.0),
                "elapsed": elapsed,
                "eta": self.eta(elapsed),
                "samples_per_s": self.samples / self.train_time,
            }
        )

    def validate(self, last: bool) -> None:
        """Zero-shot accuracy on the validation part; the weights are saved when it is the best so far."""
        data, model = self.data, self.model
        self.val_acc = evaluate(
            model, data.parts["validation"], data.captions, data.n_classes, self.run.runtime.device
        ).acc1
        if self.val_acc > self.best_acc:
            self.best_acc, self.best_epoch = self.val_acc, self.epoch
            self.best_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
            card = {"complete": False, "validation": {"acc1": self.val_acc, "epoch": self.epoch}, "metrics": {}}
            self.writer.save(self.best_state, card)
        elapsed = self.run.elapsed()
        self.run.report(
            {
                **self.position("eval"),
                "val_acc": self.val_acc,
                "best_val_acc": self.best_acc,
                "elapsed": elapsed,
                "eta": 0.0 if last else self.eta(elapsed),
            }
        )

    def position(self, phase: str) -> dict:
        """Where the run is, for a progress event."""
        return {
            "phase": phase,
            "epoch": self.epoch,
            "epochs": self.run.epochs,
            "step": self.step,
            "total_steps": self.total_steps,
            "loss": self.loss,
        }

    def schedule_progress(self, elapsed: float) -> float:
        """How far along the budget the run is, in [0, 1]: steps or clock, whichever is further."""
        by_steps = self.step / self.total_steps if self.total_steps else 0.0
        return max(by_steps, elapsed / self.run.max_seconds if self.run.max_seconds else 0.0)

    def eta(self, elapsed: float) -> float:
        max_seconds, total = self.run.max_seconds, self.total_steps
        by_clock = max(0.0, max_seconds - elapsed) if max_seconds is not None else math.inf
        return min(elapsed / max(self.step, 1) * (total - self.step) if total else math.inf, by_clock)

    def summary(self, seconds: float) -> dict:
        """How the run went, for the card and the result."""
        return {
            "best_val_acc": self.best_acc,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epoch,
            "steps": self.step,
            "seconds": round(seconds, 2),
            "train_samples_per_s": round(self.samples / max(self.train_time, 1e-9), 1),
            "train_samples_per_cpu_s": round(self.samples / max(self.train_cpu, 1e-9), 1),
            "stopped": self.stopped,
            "device": str(self.run.runtime.device),
            "precision": self.run.precision,
        }


# --- the end: held-out metrics of the best weights, the final save --------------------------------------------


def finish(run: Run, dataset: ImageDataset, data: Data, loop: TrainLoop, writer: CheckpointWriter) -> TrainResult:
    """The best weights scored on the plan's evaluation part and extra splits, saved as complete."""
    if loop.best_state is None:
        raise RuntimeError("training stopped before its first step; no checkpoint was written")
    model, plan, device = loop.model, data.plan, run.runtime.device
    model.load_state_dict(loop.best_state)
    metrics = evaluate(model, data.parts["evaluation"], data.captions, data.n_classes, device)
    extra = {
        name: evaluate(model, data.parts[name], data.captions, data.n_classes, device)
        for name in plan.extra
        if len(data.parts[name])
    }
    seconds = run.elapsed()
    summary = loop.summary(seconds)
    writer.save(
        loop.best_state,
        {
            "complete": True,
            "metrics": metrics.to_dict(),
            "extra_metrics": {k: v.summary() for k, v in extra.items()},
            "validation": {"acc1": loop.best_acc, "epoch": loop.best_epoch},
            "run": summary,
            "trained_on": f"{dataset.source}: {len(dataset.class_names)} classes, {len(data.train)} training images",
        },
    )
    done = {"val_acc": loop.val_acc, "best_val_acc": loop.best_acc, "elapsed": seconds, "eta": 0.0}
    run.report({**loop.position("done"), **done, "test_acc": metrics.acc1})
    skipped = data.skipped
    return TrainResult(
        SCRATCH, writer.out_dir, list(dataset.class_names), metrics, plan.card(), skipped, summary, extra=extra
    )
