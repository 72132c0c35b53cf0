"""Heads over a frozen CLIP's image embeddings, and how each is fitted and chosen on cached features.

Every head maps L2-normalised image embeddings ``[B, D]`` to class scores ``[B, C]`` (softmax gives the
probabilities), so evaluation and serving never care which one it is:

- ``zeroshot-blend`` (the default): the linear probe's log-probabilities blended with zero-shot CLIP's,
  ``(1 - a) * log_softmax(zero-shot) + a * log_softmax(probe)``, with the probe's C and the weight ``a`` chosen
  on validation. For a linear head on the same features, blending logits is WiSE-FT's weight interpolation;
  ``a = 0`` *is* zero-shot and is always a candidate, so the chosen head never scores below zero-shot on the
  images it was chosen on. Picked by measurement: ``python bench/few_shot.py``.
- ``linear``: the CLIP paper's linear probe: L2-regularised logistic regression by L-BFGS (scikit-learn,
  up to 1,000 iterations) on standardised features, C chosen on validation from a log-spaced grid. Stored as
  a torch ``Linear`` (the weights copied), so checkpoints stay safetensors and serving is unchanged.
- ``mlp-logits``: the Cars tutorial's head, faithfully: CLIP's zero-shot logits through C -> 5C -> 5C -> 5C
  -> C with BatchNorm, ReLU and Dropout as in its ``FineTuneCLIP``, Adam at 2e-4, batch 64. Its budget is
  in optimisation steps (at least 300; the tutorial's 6 epochs where that is more), so it also converges on
  small data, and the step count is chosen on validation.
- ``zeroshot-init``: a linear head starting at the class text embeddings (zero-shot before any step),
  trained by AdamW; the step count is chosen on validation, step 0 included.

Selection never rests on a handful of images: with at least ``MIN_VALIDATION`` validation images the
candidates are scored on them and the head is fit on train; with fewer, train and validation are pooled,
scored by stratified k-fold cross-validation, and the chosen head is refit on the pool. ``fit_head`` returns
the trained module with what was chosen, how, and on how many images (for the checkpoint card).

This module does no I/O. ``build_head(name, ...)`` rebuilds any head from a checkpoint's ``head_config`` before
``load_state_dict``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MIN_VALIDATION = 20  # fewer validation images than this: k-fold cross-validation instead
FOLDS = 3  # 5 costs twice as much and chose as well (within 0.5 points, 5 draws of bench/few_shot.py)
C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 7))  # inverse L2 strength, standardised features
# L-BFGS stops when the mean loss's largest gradient component is below this: scikit-learn's default for the
# head that is saved; 10x looser while candidates are only being scored (5x fewer iterations, choices as good)
FINAL_TOL, SEARCH_TOL = 1e-4, 1e-3
ALPHA_GRID = tuple(round(float(a), 2) for a in np.linspace(0, 1, 11))  # weight of the probe in the blend
ABSENT = -1e3  # probe bias of a class with no training image: the probe never predicts it


# --- modules ----------------------------------------------------------------------------------------------


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
            nn.Linear(h, h),
            nn.BatchNorm1d(h),
            nn.ReLU(),
            nn.Linear(h, h),
            nn.BatchNorm1d(h),
            nn.ReLU(),
            nn.Dropout(0.3),
        )
        self.fc3 = nn.Sequential(nn.Linear(h, c), nn.BatchNorm1d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logit_scale * x @ self.class_embeddings.T  # = CLIP's logits_per_image
        return self.fc3(self.fc2(self.fc1(logits)))


class LinearProbe(nn.Module):
    """Standardise with the training features' mean and spread (buffers), then one linear layer."""

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(embed_dim))
        self.register_buffer("std", torch.ones(embed_dim))
        self.fc = nn.Linear(embed_dim, num_classes)

    @torch.no_grad()
    def set(self, probe: ProbeWeights) -> LinearProbe:
        """Copy a fitted probe (scikit-learn's weights) in."""
        for target, value in (
            (self.mean, probe.mean),
            (self.std, probe.std),
            (self.fc.weight, probe.weight),
            (self.fc.bias, probe.bias),
        ):
            target.copy_(torch.as_tensor(value, dtype=torch.float32))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((x - self.mean) / self.std)


class ZeroShotBlend(nn.Module):
    """``(1 - alpha) * log_softmax(zero-shot logits) + alpha * log_softmax(probe logits)``: a geometric mixture
    of the two models' probabilities; ``alpha = 0`` is exactly zero-shot CLIP."""

    def __init__(self, class_embeddings: torch.Tensor, logit_scale: float, alpha: float = 0.0):
        super().__init__()
        c, d = class_embeddings.shape
        self.register_buffer("class_embeddings", class_embeddings.detach().float().clone())
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.probe = LinearProbe(d, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zeroshot = (self.logit_scale * x @ self.class_embeddings.T).log_softmax(-1)
        return (1 - self.alpha) * zeroshot + self.alpha * self.probe(x).log_softmax(-1)


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
    """What a head is and its fixed hyperparameters (``fit_head`` overrides per run; None: not used)."""

    description: str
    uses_text: bool  # needs the class text embeddings to be built
    solver: str  # "lbfgs" (scikit-learn, C searched) or "adam" (steps searched)
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    epochs: int | None = None  # adam: the tutorial's epochs; the budget is max(min_steps, this many epochs)
    min_steps: int | None = None


HEADS: dict[str, HeadSpec] = {
    "zeroshot-blend": HeadSpec(
        "the linear probe blended with zero-shot CLIP, weight and C chosen on held-out "
        "images (WiSE-FT for a linear head)",
        True,
        "lbfgs",
    ),
    "linear": HeadSpec(
        "a linear probe on the standardised image embeddings (logistic regression, L-BFGS, C chosen "
        "on held-out images: the CLIP paper's protocol)",
        False,
        "lbfgs",
    ),
    # the tutorial's optimiser: Adam, lr 2e-4, batch 64, 6 epochs (now at least 300 steps)
    "mlp-logits": HeadSpec(
        "the tutorial's MLP over the zero-shot logits (C→5C→5C→5C→C)",
        True,
        "adam",
        lr=2e-4,
        weight_decay=0.0,
        batch_size=64,
        epochs=6,
        min_steps=300,
    ),
    "zeroshot-init": HeadSpec(
        "a linear head initialised from the class text embeddings, steps chosen on held-out images",
        True,
        "adam",
        lr=1e-3,
        weight_decay=0.0,
        batch_size=64,
        epochs=20,
        min_steps=300,
    ),
}
DEFAULT_HEAD = "zeroshot-blend"  # never below zero-shot, best on real images from 2 shots, cheap (bench/few_shot.py)


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
    if name == "zeroshot-blend":
        return ZeroShotBlend(class_embeddings, logit_scale)
    return ZeroShotLinear(class_embeddings, logit_scale)


@torch.no_grad()
def predict_logits(head: nn.Module, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Class scores for ``features`` in eval mode (BatchNorm uses its running statistics)."""
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


# --- fitting and choosing -----------------------------------------------------------------------------------


@dataclass
class FitResult:
    """A fitted head and how it was chosen (what the checkpoint card records)."""

    head: nn.Module  # eval mode, ready to serve
    name: str
    hyperparameters: dict  # the chosen ones (C, alpha, steps) and the fixed ones (lr, batch size, ...)
    selection: str  # in words: on what, how many images, among which candidates
    protocol: str  # "validation" or "k-fold"
    n_selection: int  # images the candidates were scored on
    n_fit: int  # images the saved head was fitted on
    val_acc: float  # the chosen head's accuracy on the selection images (out-of-fold for k-fold)
    zeroshot_val_acc: float  # zero-shot CLIP's on the same images
    steps: int  # optimisation steps (adam) or solver fits (lbfgs) run in all
    stopped: str  # "finished" or "cancelled"
    seconds: float
    history: list[dict] = field(default_factory=list)  # every candidate: its hyperparameters, acc, loss

    @property
    def state(self) -> dict[str, torch.Tensor]:
        return self.head.state_dict()


@dataclass
class _Context:
    num_classes: int
    class_embeddings: torch.Tensor
    logit_scale: float
    seed: int
    spec: HeadSpec
    lr: float | None
    weight_decay: float | None
    batch_size: int | None
    steps: int | None
    stop: Callable[[], bool]
    tick: Callable[[int], None]  # one more step / fit done

    def zeroshot(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * x @ self.class_embeddings.T


def fit_head(
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    class_embeddings: torch.Tensor,
    logit_scale: float,
    seed: int = 0,
    steps: int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    weight_decay: float | None = None,
    min_validation: int = MIN_VALIDATION,
    folds: int = FOLDS,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    threads: int | None = 1,
) -> FitResult:
    """Fit head ``name`` on ``train`` features ``(x [N, D], y [N])``, choosing its hyperparameters on
    ``validation`` when it holds at least ``min_validation`` images, else by stratified ``folds``-fold
    cross-validation on train + validation pooled (then refit on the pool).

    Candidates: ``linear``, the C grid ``C_GRID``; ``zeroshot-blend``, C x ``ALPHA_GRID``; the Adam heads, the
    step counts at ~20 evaluation points of one run of ``steps`` steps (default ``max(min_steps, epochs x
    steps per epoch)``; ``epochs`` sets that count of epochs instead). Chosen by accuracy, ties by the lower
    cross-entropy, then the earlier candidate (the smaller C, alpha or step count).

    ``progress(dict)`` gets ``phase`` "train" (``step``, ``total_steps``, ``elapsed``, ``eta``), "eval" per
    candidate (``val_acc``, ``best_val_acc``) and "chosen". ``should_stop()`` is polled between steps and fits:
    a stop chooses among the candidates scored so far (``stopped="cancelled"``); with none scored yet it
    returns ``steps=0`` and ``head=None``. ``threads``: torch and BLAS threads while fitting (one by default:
    a head's matmuls are small, and on a busy 2-core box a second thread mostly waits).
    """
    if name not in HEADS:
        raise ValueError(f"Unknown head '{name}': choose one of {', '.join(HEADS)}.")
    t0 = time.perf_counter()
    spec = HEADS[name]
    x, y = train[0].float(), train[1].long()
    vx, vy = (validation[0].float(), validation[1].long()) if validation is not None else (x[:0], y[:0])
    if len(y) + len(vy) < 2:
        raise ValueError("need at least two training examples to fit a head")
    report = progress or (lambda info: None)
    stop = should_stop or (lambda: False)
    class_embeddings = class_embeddings.float()
    num_classes = class_embeddings.shape[0]

    use_validation = len(vy) >= min_validation
    fit_x, fit_y = (x, y) if use_validation else (torch.cat([x, vx]), torch.cat([y, vy]))
    splits = [(np.arange(len(y)), None)] if use_validation else _folds(fit_y.numpy(), folds, seed)
    bs = batch_size or spec.batch_size
    if spec.solver == "adam" and steps is None:
        per_epoch = math.ceil(len(fit_y) / bs)
        steps = epochs * per_epoch if epochs else max(spec.min_steps, spec.epochs * per_epoch)
    runs = len(splits) + (0 if use_validation and spec.solver == "adam" else 1)
    total = runs * (steps if spec.solver == "adam" else len(C_GRID))
    done = [0]

    def tick(n: int = 1) -> None:
        done[0] += n
        elapsed = time.perf_counter() - t0
        report(
            {
                "phase": "train",
                "step": done[0],
                "total_steps": total,
                "elapsed": elapsed,
                "eta": elapsed / done[0] * max(0, total - done[0]),
            }
        )

    ctx = _Context(
        num_classes,
        class_embeddings,
        float(logit_scale),
        seed,
        spec,
        spec.lr if lr is None else lr,
        spec.weight_decay if weight_decay is None else weight_decay,
        bs,
        steps,
        stop,
        tick,
    )
    with _threads(threads):
        scores: dict[tuple, list[float]] = {}  # candidate -> [correct, cross-entropy sum, n]
        kept: dict[tuple, nn.Module] = {}  # validation + adam: the best run's module, no refit needed
        best_so_far = -1.0
        for train_idx, held_idx in splits:
            if use_validation:
                tx, ty, ex, ey = x, y, vx, vy
            else:
                tx, ty, ex, ey = fit_x[train_idx], fit_y[train_idx], fit_x[held_idx], fit_y[held_idx]
            for hp, logits, module in _candidates(name, ctx, tx, ty, ex):
                s = scores.setdefault(hp, [0.0, 0.0, 0])
                s[0] += float((logits.argmax(1) == ey).sum())
                s[1] += float(F.cross_entropy(logits, ey, reduction="sum"))
                s[2] += len(ey)
                if use_validation and module is not None and (not kept or _better(hp, s, next(iter(kept)), scores)):
                    kept = {hp: _snapshot(module)}
                best_so_far = max(best_so_far, s[0] / s[2])
                report(
                    {
                        "phase": "eval",
                        "val_acc": s[0] / s[2],
                        "best_val_acc": best_so_far,
                        "step": done[0],
                        "total_steps": total,
                    }
                )
            if stop():
                break
        complete = {hp: s for hp, s in scores.items() if s[2] == max(v[2] for v in scores.values())} if scores else {}
        if not complete:
            return FitResult(
                None,
                name,
                {},
                "stopped before any candidate was scored",
                "",
                0,
                0,
                float("nan"),
                float("nan"),
                done[0],
                "cancelled",
                time.perf_counter() - t0,
            )
        chosen = min(complete, key=lambda hp: (-complete[hp][0], complete[hp][1], list(complete).index(hp)))
        if chosen in kept:
            head = kept[chosen]
        else:
            head = _final(name, ctx, fit_x, fit_y, dict(chosen))
    head.eval()

    sel_x, sel_y = (vx, vy) if use_validation else (fit_x, fit_y)
    zs_acc = float((ctx.zeroshot(sel_x).argmax(1) == sel_y).double().mean())
    c, _, n = complete[chosen]
    fixed = {
        k: v
        for k, v in (
            ("lr", ctx.lr),
            ("weight_decay", ctx.weight_decay),
            ("batch_size", ctx.batch_size),
            ("budget_steps", steps),
        )
        if v is not None and spec.solver == "adam"
    }
    history = [{**dict(hp), "acc": round(s[0] / s[2], 4), "loss": round(s[1] / s[2], 4)} for hp, s in complete.items()]
    grid = _grid_words(spec, steps)
    if use_validation:
        words = f"{grid} scored on the {len(vy)} validation images; the head fitted on the {len(y)} training images"
    else:
        k = len(splits)
        words = (
            f"{grid} scored by {k}-fold {'stratified ' if _stratifiable(fit_y.numpy(), k) else ''}"
            f"cross-validation on {len(fit_y)} images (train {len(y)} + validation {len(vy)}: fewer than "
            f"{min_validation} validation images); the head refitted on all {len(fit_y)}"
        )
    words += f"; chosen: {_hp_words(dict(chosen))}, accuracy {c / n:.3f} against zero-shot's {zs_acc:.3f}"
    stopped = "cancelled" if stop() or any(s[2] < n for s in scores.values()) else "finished"
    result = FitResult(
        head,
        name,
        {**dict(chosen), **fixed},
        words,
        "validation" if use_validation else "k-fold",
        n,
        len(fit_y) if not use_validation else len(y),
        c / n,
        zs_acc,
        done[0],
        stopped,
        time.perf_counter() - t0,
        history,
    )
    report(
        {
            "phase": "eval",
            "val_acc": result.val_acc,
            "best_val_acc": result.val_acc,
            "step": done[0],
            "total_steps": total,
            "message": words,
        }
    )
    return result


def _better(hp, s, other, scores) -> bool:
    o = scores[other]
    return (s[0], -s[1]) > (o[0], -o[1])


def _snapshot(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module).eval()


def _stratifiable(y: np.ndarray, k: int) -> bool:
    return k >= 2 and int(np.bincount(y)[np.unique(y)].min()) >= k


def _folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold (k = folds, or the smallest class's count if smaller, at least 2); when a class has
    a single image, a plain shuffled k-fold (that image's class is then unseen by its fold's fit)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    smallest = int(np.bincount(y)[np.unique(y)].min())
    k = max(2, min(folds, smallest, len(y)))
    splitter = (
        StratifiedKFold(k, shuffle=True, random_state=seed)
        if smallest >= 2
        else KFold(min(folds, len(y)), shuffle=True, random_state=seed)
    )
    return list(splitter.split(np.zeros(len(y)), y))


def _grid_words(spec: HeadSpec, steps) -> str:
    if spec.solver == "lbfgs":
        what = f"C in {C_GRID[0]:g}..{C_GRID[-1]:g} ({len(C_GRID)}, log-spaced)"
        return what + (f" x blend weight in 0..1 ({len(ALPHA_GRID)})" if spec.uses_text else "")
    return f"the step count among ~20 points of a {steps}-step run (step 0 included)"


def _hp_words(hp: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.items())


@contextmanager
def _threads(n: int | None):
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n) if n else _nothing():
            yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _nothing():
    yield


# --- the candidates of each head --------------------------------------------------------------------------


def _candidates(name: str, ctx: _Context, x, y, ex) -> Iterator[tuple[tuple, torch.Tensor, nn.Module | None]]:
    """(hyperparameters as a hashable tuple, logits on ``ex``, the module or None) for each candidate."""
    if ctx.spec.solver == "lbfgs":
        zeroshot = ctx.zeroshot(ex).log_softmax(-1)
        for probe in _probe_path(x, y, ctx):
            logits = probe.logits(ex)
            if name == "linear":
                yield (("C", probe.C),), logits, None
            else:
                logp = logits.log_softmax(-1)
                for a in ALPHA_GRID:
                    yield (("C", probe.C), ("alpha", a)), (1 - a) * zeroshot + a * logp, None
    else:
        for step, module in _adam_path(name, ctx, x, y, ctx.steps, evaluate=True):
            yield (("steps", step),), predict_logits(module, ex), module


def _final(name: str, ctx: _Context, x, y, hp: dict) -> nn.Module:
    """The chosen candidate fitted on (x, y)."""
    d = x.shape[1]
    if ctx.spec.solver == "lbfgs":
        probe = next(_probe_path(x, y, ctx, Cs=(hp["C"],), tol=FINAL_TOL))
        if name == "linear":
            return LinearProbe(d, ctx.num_classes).set(probe)
        blend = ZeroShotBlend(ctx.class_embeddings, ctx.logit_scale, hp["alpha"])
        blend.probe.set(probe)
        return blend
    module = None
    for _, module in _adam_path(name, ctx, x, y, hp["steps"], evaluate=False):  # noqa: B007 - the last one
        pass
    return module


@dataclass
class ProbeWeights:
    C: float
    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray  # [C, D], for standardised inputs
    bias: np.ndarray

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.double().numpy() - self.mean) / self.std
        return torch.from_numpy(z @ self.weight.T + self.bias).float()


def _probe_path(x, y, ctx: _Context, Cs=C_GRID, tol: float = SEARCH_TOL) -> Iterator[ProbeWeights]:
    """scikit-learn's L-BFGS logistic regression on standardised features, for each C (increasing, each fit
    warm-started from the previous solution); weights expanded to every class (absent ones: bias ``ABSENT``).

    With fewer images than dimensions the fit runs in an orthonormal basis of the images' span: the L2-penalised
    optimum lies in that span (the loss's gradient does), so it is the same solution with fewer parameters (~2x
    faster at 228 images x 512 dimensions). The basis is randomly rotated so that the gradient is spread over
    its coordinates as over the original ones: L-BFGS's stopping rule looks at the largest component."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    xs = x.double().numpy()
    mean = xs.mean(0)
    std = xs.std(0) if len(xs) > 1 else np.ones(xs.shape[1])
    std = np.where(std > 1e-6, std, 1.0)
    z, labels = (xs - mean) / std, y.numpy()
    basis = _span_basis(z, ctx.seed) if len(z) < z.shape[1] else None
    features = (z if basis is None else z @ basis).astype(np.float32)  # float32: CLIP's own precision
    present = np.unique(labels)
    clf = LogisticRegression(max_iter=1000, tol=tol, warm_start=True)
    for C in Cs:
        if ctx.stop():
            return
        weight, bias = np.zeros((ctx.num_classes, xs.shape[1])), np.full(ctx.num_classes, ABSENT)
        if len(present) == 1:
            bias[present] = 0.0
        else:
            clf.set_params(C=C)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("ignore", UserWarning)  # "more classes than half the samples": few-shot
                clf.fit(features, labels)
            coef = clf.coef_.astype(np.float64) if basis is None else clf.coef_.astype(np.float64) @ basis.T
            if len(present) == 2:  # scikit-learn keeps one weight vector for two classes
                bias[present] = [0.0, clf.intercept_[0]]
                weight[present[1]] = coef[0]
            else:
                weight[present], bias[present] = coef, clf.intercept_
        ctx.tick()
        yield ProbeWeights(C, mean, std, weight, bias)


def _span_basis(z: np.ndarray, seed: int) -> np.ndarray:
    """[D, r]: orthonormal columns spanning the rows of ``z`` (r = its rank), in a seeded random rotation."""
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    span = vt[s > s[0] * 1e-6].T if len(s) and s[0] > 0 else vt[:1].T
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((span.shape[1],) * 2))
    return span @ rotation


def _adam_path(name: str, ctx: _Context, x, y, steps: int, evaluate: bool) -> Iterator[tuple[int, nn.Module]]:
    """Train a fresh head with cross-entropy (Adam; AdamW when weight decay is set) for ``steps`` steps of
    ``batch_size`` (reshuffled each pass over the data); yield (steps so far, head) at ~20 evaluation points,
    step 0 included (``evaluate``), or only at the end."""
    torch.manual_seed(ctx.seed)  # the head's initialisation
    head = build_head(
        name,
        num_classes=ctx.num_classes,
        embed_dim=x.shape[1],
        class_embeddings=ctx.class_embeddings,
        logit_scale=ctx.logit_scale,
    )
    params = [p for p in head.parameters() if p.requires_grad]
    opt = (
        torch.optim.AdamW(params, lr=ctx.lr, weight_decay=ctx.weight_decay)
        if ctx.weight_decay
        else torch.optim.Adam(params, lr=ctx.lr)
    )
    every = max(1, steps // 20)
    generator = torch.Generator().manual_seed(ctx.seed)
    bs = max(2, min(ctx.batch_size, len(y)))  # BatchNorm can't train on one example
    if evaluate or steps == 0:
        yield 0, head
    step, order = 0, torch.empty(0, dtype=torch.long)
    head.train()
    while step < steps:
        if ctx.stop():
            return
        if len(order) < bs:
            order = torch.cat([order, torch.randperm(len(y), generator=generator)])
        idx, order = order[:bs], order[bs:]
        loss = F.cross_entropy(head(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        ctx.tick()
        if (evaluate and step % every == 0) or step == steps:
            yield step, head
            head.train()
