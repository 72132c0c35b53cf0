"""Fitting a head on cached features and choosing its hyperparameters honestly.

Selection never rests on a handful of images: with at least ``MIN_VALIDATION`` validation images the
candidates are scored on them and the head is fit on train; with fewer, train and validation are pooled,
scored by stratified k-fold cross-validation, and the chosen head is refit on the pool. ``fit_head`` returns
the trained module with what was chosen, how, and on how many images (for the checkpoint card). No I/O here.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipdemo import scoring
from clipdemo.heads.modules import LinearProbe, ZeroShotBlend, build_head, predict_logits
from clipdemo.heads.specs import HEADS, HeadSpec
from clipdemo.scoring import ZeroShotClassifier

MIN_VALIDATION = 20  # fewer validation images than this: k-fold cross-validation instead
FOLDS = 3  # 5 costs twice as much and chose as well (within 0.5 points, 5 draws of bench/few_shot.py)
C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 7))  # inverse L2 strength, standardised features
# L-BFGS stops when the mean loss's largest gradient component is below this: scikit-learn's default for the
# head that is saved; 10x looser while candidates are only being scored (5x fewer iterations, choices as good)
FINAL_TOL, SEARCH_TOL = 1e-4, 1e-3
ALPHA_GRID = tuple(round(float(a), 2) for a in np.linspace(0, 1, 11))  # weight of the probe in the blend
ABSENT = -1e3  # probe bias of a class with no training image: the probe never predicts it


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

    def run_card(self) -> dict:
        """How the fit went, as a checkpoint card and a training result record it."""
        return {
            "best_val_acc": self.val_acc,
            "zeroshot_val_acc": self.zeroshot_val_acc,
            "steps": self.steps,
            "stopped": self.stopped,
            "train_seconds": round(self.seconds, 3),
        }

    def validation_card(self) -> dict:
        """How the head was chosen: on how many images, by which protocol, every candidate's score."""
        return {
            "acc1": self.val_acc,
            "zeroshot_acc1": self.zeroshot_val_acc,
            "n": self.n_selection,
            "protocol": self.protocol,
            "fitted_on": self.n_fit,
            "candidates": self.history,
        }


@dataclass
class _Data:
    """The images a fit sees: train and validation, and how candidates are scored on them."""

    x: torch.Tensor
    y: torch.Tensor
    vx: torch.Tensor
    vy: torch.Tensor
    use_validation: bool  # scored on validation; else k-fold on train + validation pooled
    fit_x: torch.Tensor  # what the saved head is fitted on
    fit_y: torch.Tensor
    splits: list  # (train indices, held-out indices) per fold; one (all, None) with validation

    @classmethod
    def of(cls, train, validation, min_validation: int, folds: int, seed: int) -> _Data:
        x, y = train
        vx, vy = validation if validation is not None else (x[:0], y[:0])
        x, y, vx, vy = x.float(), y.long(), vx.float(), vy.long()
        if len(y) + len(vy) < 2:
            raise ValueError("need at least two training examples to fit a head")
        if len(vy) >= min_validation:
            return cls(x, y, vx, vy, True, x, y, [(np.arange(len(y)), None)])
        fit_x, fit_y = torch.cat([x, vx]), torch.cat([y, vy])
        return cls(x, y, vx, vy, False, fit_x, fit_y, _folds(fit_y.numpy(), folds, seed))

    def fold(self, train_idx, held_idx):
        """(train x, train y, held-out x, held-out y) of one fold."""
        if self.use_validation:
            return self.x, self.y, self.vx, self.vy
        return self.fit_x[train_idx], self.fit_y[train_idx], self.fit_x[held_idx], self.fit_y[held_idx]

    @property
    def selection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The images the candidates were scored on."""
        return (self.vx, self.vy) if self.use_validation else (self.fit_x, self.fit_y)


@dataclass
class _Context:
    zeroshot: ZeroShotClassifier
    seed: int
    spec: HeadSpec
    lr: float | None
    weight_decay: float | None
    batch_size: int | None
    steps: int | None
    stop: Callable[[], bool]
    report: Callable[[dict], None]
    total: int = 0  # steps / fits the whole search will run, for progress
    done: int = 0
    t0: float = field(default_factory=time.perf_counter)

    @property
    def num_classes(self) -> int:
        return self.zeroshot.embeddings.shape[0]

    def tick(self, n: int = 1) -> None:
        """One more step / fit done."""
        self.done += n
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * max(0, self.total - self.done)
        self.report({"phase": "train", "step": self.done, "total_steps": self.total, "elapsed": elapsed, "eta": eta})


@dataclass
class _Search:
    """Every candidate's score summed over the folds, and (validation + adam) the best run's module."""

    scores: dict = field(default_factory=dict)  # candidate -> [correct, cross-entropy sum, n]
    kept: dict = field(default_factory=dict)

    @property
    def complete(self) -> dict:
        """The candidates scored on every fold (a stop can leave the last ones short)."""
        if not self.scores:
            return {}
        n = max(s[2] for s in self.scores.values())
        return {hp: s for hp, s in self.scores.items() if s[2] == n}

    def best(self) -> tuple:
        """By accuracy, ties by the lower cross-entropy, then the earlier candidate."""
        complete = self.complete
        order = list(complete)
        return min(complete, key=lambda hp: (-complete[hp][0], complete[hp][1], order.index(hp)))


def fit_head(
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    zeroshot: ZeroShotClassifier,
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
    data = _Data.of(train, validation, min_validation, folds, seed)
    spec = HEADS[name]
    zeroshot = replace(zeroshot, embeddings=zeroshot.embeddings.float())
    ctx = _Context(
        zeroshot,
        seed,
        spec,
        spec.lr if lr is None else lr,
        spec.weight_decay if weight_decay is None else weight_decay,
        batch_size or spec.batch_size,
        _budget(spec, steps, epochs, batch_size or spec.batch_size, len(data.fit_y)),
        should_stop or (lambda: False),
        progress or (lambda info: None),
    )
    runs = len(data.splits) + (0 if data.use_validation and spec.solver == "adam" else 1)
    ctx.total = runs * (ctx.steps if spec.solver == "adam" else len(C_GRID))
    with _threads(threads):
        search = _search(name, ctx, data)
        if not search.complete:
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
                ctx.done,
                "cancelled",
                time.perf_counter() - ctx.t0,
            )
        chosen = search.best()
        head = search.kept[chosen] if chosen in search.kept else _final(name, ctx, data.fit_x, data.fit_y, dict(chosen))
    head.eval()
    return _result(name, ctx, data, search, chosen, head, min_validation)


def _budget(spec: HeadSpec, steps, epochs, batch_size, n: int) -> int | None:
    """The Adam heads' step budget: ``steps``, else ``epochs`` epochs, else max(min_steps, the spec's epochs)."""
    if spec.solver != "adam" or steps is not None:
        return steps
    per_epoch = math.ceil(n / batch_size)
    return epochs * per_epoch if epochs else max(spec.min_steps, spec.epochs * per_epoch)


def _search(name: str, ctx: _Context, data: _Data) -> _Search:
    """Score every candidate on every fold (or on validation), reporting each."""
    search, best_so_far = _Search(), -1.0
    for train_idx, held_idx in data.splits:
        tx, ty, ex, ey = data.fold(train_idx, held_idx)
        for hp, logits, module in _candidates(name, ctx, tx, ty, ex):
            s = search.scores.setdefault(hp, [0.0, 0.0, 0])
            s[0] += float((logits.argmax(1) == ey).sum())
            s[1] += float(F.cross_entropy(logits, ey, reduction="sum"))
            s[2] += len(ey)
            if data.use_validation and module is not None:
                if not search.kept or _better(s, search.scores[next(iter(search.kept))]):
                    search.kept = {hp: _snapshot(module)}
            best_so_far = max(best_so_far, s[0] / s[2])
            ctx.report(
                {
                    "phase": "eval",
                    "val_acc": s[0] / s[2],
                    "best_val_acc": best_so_far,
                    "step": ctx.done,
                    "total_steps": ctx.total,
                }
            )
        if ctx.stop():
            break
    return search


def _result(name: str, ctx: _Context, data: _Data, search: _Search, chosen: tuple, head, min_validation) -> FitResult:
    """The chosen head with its card's words: what was searched, on what, and how it compares to zero-shot."""
    sel_x, sel_y = data.selection
    zs_acc = float((ctx.zeroshot.logits(sel_x).argmax(1) == sel_y).double().mean())
    c, _, n = search.complete[chosen]
    fixed = {"lr": ctx.lr, "weight_decay": ctx.weight_decay, "batch_size": ctx.batch_size, "budget_steps": ctx.steps}
    fixed = {k: v for k, v in fixed.items() if v is not None and ctx.spec.solver == "adam"}
    history = [
        {**dict(hp), "acc": round(s[0] / s[2], 4), "loss": round(s[1] / s[2], 4)} for hp, s in search.complete.items()
    ]
    words = _selection_words(ctx, data, min_validation)
    words += f"; chosen: {_hp_words(dict(chosen))}, accuracy {c / n:.3f} against zero-shot's {zs_acc:.3f}"
    stopped = "cancelled" if ctx.stop() or any(s[2] < n for s in search.scores.values()) else "finished"
    protocol = "validation" if data.use_validation else "k-fold"
    n_fit = len(data.y) if data.use_validation else len(data.fit_y)
    result = FitResult(
        head,
        name,
        {**dict(chosen), **fixed},
        words,
        protocol,
        n,
        n_fit,
        c / n,
        zs_acc,
        ctx.done,
        stopped,
        time.perf_counter() - ctx.t0,
        history,
    )
    ctx.report(
        {
            "phase": "eval",
            "val_acc": result.val_acc,
            "best_val_acc": result.val_acc,
            "step": ctx.done,
            "total_steps": ctx.total,
            "message": words,
        }
    )
    return result


def _selection_words(ctx: _Context, data: _Data, min_validation: int) -> str:
    grid = _grid_words(ctx.spec, ctx.steps)
    if data.use_validation:
        v, t = len(data.vy), len(data.y)
        return f"{grid} scored on the {v} validation images; the head fitted on the {t} training images"
    k, n = len(data.splits), len(data.fit_y)
    stratified = "stratified " if _stratifiable(data.fit_y.numpy(), k) else ""
    return (
        f"{grid} scored by {k}-fold {stratified}cross-validation on {n} images (train {len(data.y)} + "
        f"validation {len(data.vy)}: fewer than {min_validation} validation images); the head refitted on all {n}"
    )


def _better(s: list, other: list) -> bool:
    """More correct, or as many with a lower cross-entropy."""
    return (s[0], -s[1]) > (other[0], -other[1])


def _snapshot(module: nn.Module) -> nn.Module:
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
        with threadpool_limits(limits=n) if n else nullcontext():
            yield
    finally:
        torch.set_num_threads(before)


# --- the candidates of each head --------------------------------------------------------------------------


def _candidates(name: str, ctx: _Context, x, y, ex) -> Iterator[tuple[tuple, torch.Tensor, nn.Module | None]]:
    """(hyperparameters as a hashable tuple, logits on ``ex``, the module or None) for each candidate."""
    if ctx.spec.solver == "lbfgs":
        zeroshot = ctx.zeroshot.logits(ex)
        for probe in _probe_path(x, y, ctx):
            logits = probe.logits(ex)
            if name == "linear":
                yield (("C", probe.C),), logits, None
            else:
                for a in ALPHA_GRID:
                    yield (("C", probe.C), ("alpha", a)), scoring.blend(zeroshot, logits, a), None
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
        blend = ZeroShotBlend(ctx.zeroshot.embeddings, ctx.zeroshot.rule, hp["alpha"])
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
        class_embeddings=ctx.zeroshot.embeddings,
        rule=ctx.zeroshot.rule,
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
