"""Heads over a frozen CLIP's image embeddings, and the loop that trains them on cached features.

Every head maps L2-normalised image embeddings ``[B, D]`` to class logits ``[B, C]``, so training,
evaluation and serving never care which one it is:

- ``mlp-logits``: the Cars tutorial's head, faithfully: CLIP's zero-shot logits (``logit_scale * x @ T.T``
  over the class text embeddings ``T``) through C -> 5C -> 5C -> 5C -> C with BatchNorm, ReLU and Dropout
  exactly as in its ``FineTuneCLIP`` (same layer names, so its state dict lines up with the tutorial's).
- ``linear``: a linear probe on the image embeddings (the CLIP paper's protocol, trained with AdamW and weight
  decay instead of L-BFGS so it shares the loop). Inputs are standardised with the training features' mean
  and spread, kept as buffers, which makes one learning rate work for any backbone.
- ``zeroshot-init``: a linear head whose weights start as the ensembled class text embeddings and whose
  scale is CLIP's logit scale, so before any step it *is* zero-shot CLIP; training moves it from there.

This module does no I/O. ``build_head(name, ...)`` builds any of them; a checkpoint stores the same
arguments (``head_config``) and rebuilds with ``build_head(**config)`` + ``load_state_dict``.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class LogitsMLP(nn.Module):
    """The tutorial's MLP over zero-shot logits (``FineTuneCLIP`` minus the CLIP it wrapped)."""

    def __init__(self, class_embeddings: torch.Tensor, logit_scale: float, hidden_mult: int = 5):
        super().__init__()
        c = class_embeddings.shape[0]
        h = c * hidden_mult  # 196 -> 980 on Stanford Cars
        self.register_buffer("class_embeddings", class_embeddings.detach().float().clone())
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.fc1 = nn.Sequential(nn.Linear(c, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(0.25))
        self.fc2 = nn.Sequential(
            nn.Linear(h, h), nn.BatchNorm1d(h), nn.ReLU(),
            nn.Linear(h, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(0.3),
        )  # fmt: skip
        self.fc3 = nn.Sequential(nn.Linear(h, c), nn.BatchNorm1d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logit_scale * x @ self.class_embeddings.T  # = CLIP's logits_per_image
        return self.fc3(self.fc2(self.fc1(logits)))


class LinearProbe(nn.Module):
    """Standardise, then one linear layer. ``set_input_stats`` fixes the standardisation from training data."""

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(embed_dim))
        self.register_buffer("std", torch.ones(embed_dim))
        self.fc = nn.Linear(embed_dim, num_classes)

    @torch.no_grad()
    def set_input_stats(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-6) if len(features) > 1 else torch.ones_like(self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((x - self.mean) / self.std)


class ZeroShotLinear(nn.Module):
    """``logit_scale * x @ W.T + b`` with ``W`` starting at the class text embeddings and ``b`` at zero:
    exactly zero-shot CLIP before training. The scale stays fixed, so the learning rate acts on unit-norm
    rows, the same for any backbone."""

    def __init__(self, class_embeddings: torch.Tensor, logit_scale: float):
        super().__init__()
        self.weight = nn.Parameter(class_embeddings.detach().float().clone())
        self.bias = nn.Parameter(torch.zeros(class_embeddings.shape[0]))
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * x @ self.weight.T + self.bias


@dataclass(frozen=True)
class HeadSpec:
    """What a head is and how it trains by default (every default can be overridden per run)."""

    description: str
    uses_text: bool  # needs the class text embeddings to be built
    lr: float
    epochs: int
    weight_decay: float = 0.0
    batch_size: int = 64


HEADS: dict[str, HeadSpec] = {
    # the tutorial's optimiser: Adam, lr 2e-4, batch 64, 6 epochs
    "mlp-logits": HeadSpec("the tutorial's MLP over the zero-shot logits (C→5C→5C→5C→C)", True, 2e-4, 6),
    "linear": HeadSpec("a linear probe on the image embeddings", False, 1e-3, 30, weight_decay=1e-2),
    "zeroshot-init": HeadSpec("a linear head initialised from the class text embeddings", True, 1e-3, 20),
}
DEFAULT_HEAD = "zeroshot-init"  # best on validation in our measurements (simulated features, no real CLIP
# weights here): 0.900 vs linear 0.738 vs mlp-logits 0.559; `python bench/cars_head.py --compare-heads`


def build_head(
    name: str,
    *,
    num_classes: int,
    embed_dim: int,
    class_embeddings: torch.Tensor | None = None,
    logit_scale: float = 100.0,
) -> nn.Module:
    """A fresh head. Without ``class_embeddings`` (rebuilding from a checkpoint) they are zeros, to be
    filled by ``load_state_dict``."""
    if name not in HEADS:
        raise ValueError(f"Unknown head '{name}': choose one of {', '.join(HEADS)}.")
    if class_embeddings is None:
        class_embeddings = torch.zeros(num_classes, embed_dim)
    if tuple(class_embeddings.shape) != (num_classes, embed_dim):
        raise ValueError(f"class embeddings are {tuple(class_embeddings.shape)}, expected ({num_classes}, {embed_dim})")
    if name == "mlp-logits":
        return LogitsMLP(class_embeddings, logit_scale)
    if name == "linear":
        return LinearProbe(embed_dim, num_classes)
    return ZeroShotLinear(class_embeddings, logit_scale)


# --- training on feature tensors ------------------------------------------------------------------------


@dataclass
class FitResult:
    state: dict[str, torch.Tensor]  # the best epoch's weights (already loaded into the head)
    best_val_acc: float
    best_epoch: int  # 0 = the head as built, before any step
    epochs_run: int
    steps: int
    stopped: str  # "finished" or "cancelled"
    seconds: float
    history: list[dict] = field(default_factory=list)  # one row per validation pass


@torch.no_grad()
def predict_logits(head: nn.Module, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Class logits for ``features`` in eval mode (BatchNorm uses its running statistics)."""
    was_training = head.training
    head.eval()
    try:
        out = [head(features[i : i + batch_size]) for i in range(0, len(features), batch_size)]
    finally:
        head.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def accuracy(head: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    return float((predict_logits(head, features).argmax(1) == labels).double().mean())


def fit_head(
    head: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    lr: float,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    threads: int | None = 1,
) -> FitResult:
    """Train ``head`` on ``train`` features with cross-entropy (AdamW; Adam when ``weight_decay`` is 0, as in
    the tutorial), validate after every epoch and before the first, and leave the best epoch's weights in it.

    ``progress(dict)`` gets ``phase`` ("train" per step, "eval" per epoch, the first before any step),
    ``epoch``, ``epochs``, ``step``, ``total_steps``, ``loss``, ``elapsed`` and ``eta`` (s, train), ``val_acc``
    and ``best_val_acc`` (eval). ``should_stop()`` is polled between steps; a stop keeps the best weights so far.

    ``threads``: torch intra-op threads while training (restored after; None leaves torch's setting). One by
    default: a head's matmuls are small, so a second thread gains little on an idle machine, while on a
    busy shared one (a 2-vCPU Space, our CI box) every op waits for it: 72 ms per mlp-logits step with one
    thread against 1.3 s with two, measured with other jobs on the cores.
    """
    with _threads(threads):
        return _fit(head, train, validation, epochs, lr, weight_decay, batch_size, seed, progress, should_stop)


@contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit(head, train, validation, epochs, lr, weight_decay, batch_size, seed, progress, should_stop) -> FitResult:
    t0 = time.perf_counter()
    x, y = train
    vx, vy = validation
    if len(y) < 2:
        raise ValueError("need at least two training examples to train a head")
    report = progress or (lambda info: None)
    stop = should_stop or (lambda: False)
    if isinstance(head, LinearProbe):
        head.set_input_stats(x)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if weight_decay
           else torch.optim.Adam(params, lr=lr))  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(y) / batch_size)
    total = epochs * steps_per_epoch

    def snapshot():
        return {k: v.detach().clone() for k, v in head.state_dict().items()}

    best_acc, best_epoch, best_state = accuracy(head, vx, vy), 0, snapshot()
    history = [{"epoch": 0, "val_acc": best_acc}]
    report({"phase": "eval", "epoch": 0, "epochs": epochs, "step": 0, "total_steps": total, "val_acc": best_acc,
            "best_val_acc": best_acc})
    step, epoch, stopped, loss = 0, 0, "finished", float("nan")
    head.train()
    while epoch < epochs and stopped == "finished":
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(order), batch_size):
            if stop():
                stopped = "cancelled"
                break
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # BatchNorm can't train on one example; it is seen again next epoch
                continue
            loss_t = F.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            opt.step()
            step += 1
            loss = loss_t.detach().item()
            elapsed = time.perf_counter() - t0
            report({"phase": "train", "epoch": epoch + 1, "epochs": epochs, "step": step, "total_steps": total,
                    "loss": loss, "elapsed": elapsed, "eta": elapsed / step * (total - step)})
        else:
            epoch += 1
        if stopped != "finished" and step == 0:
            break
        val_acc = accuracy(head, vx, vy)
        history.append({"epoch": epoch, "val_acc": val_acc, "loss": loss})
        if val_acc > best_acc:  # ties keep the earlier (for zeroshot-init: the zero-shot start)
            best_acc, best_epoch, best_state = val_acc, epoch, snapshot()
        report({"phase": "eval", "epoch": epoch, "epochs": epochs, "step": step, "total_steps": total,
                "loss": loss, "val_acc": val_acc, "best_val_acc": best_acc})
    head.load_state_dict(best_state)
    head.eval()
    return FitResult(best_state, best_acc, best_epoch, epoch, step, stopped, time.perf_counter() - t0, history)
