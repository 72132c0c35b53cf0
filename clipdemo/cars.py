"""Stanford Cars heads: train a head on a frozen CLIP's cached features, evaluate it beside zero-shot, serve it.

    from clipdemo import pipeline
    from clipdemo.heads import HeadClassifier

    options = pipeline.TrainOptions(backbone="openai/clip-vit-base-patch32", split="tutorial")
    result = pipeline.train("cars-head", "/data/stanford_cars", "checkpoints/cars-head/v1", options,
                            cache_dir="cache/features")        # devkit layout, image folder or Hub id
    pipeline.evaluate("checkpoints/cars-head/v1", "/data/stanford_cars", "test", cache_dir="cache/features")
    head_top5, zeroshot_top5 = HeadClassifier("checkpoints/cars-head/v1").predict(image)

Splits come from the one split plan (``clipdemo.data.splits.plan_splits``, leak check included): ``tutorial``
is the Cars notebook's (train on its 7,349, pick the model on the 408 its first split held out, score on the 387
it reported); ``official`` is the dataset's own train and test splits, the model picked on its validation split
or on 10% of each class of train.

Zero-shot (the 8 Cars templates, ensembled, scored by the backbone family's rule) and the head are scored on the
same held-out images with the same metrics (acc1, acc5, mean per-class recall, weighted F1); both go into the
checkpoint card with the split, backbone, head, classes and seed. The checkpoint is a head checkpoint
(``clipdemo.heads.save_head``); ``clipdemo.heads.HeadClassifier`` serves it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from clipdemo.checkpoints import CheckpointError
from clipdemo.data import DataError, ImageDataset
from clipdemo.data.splits import Part, SplitPlan, plan_splits
from clipdemo.evaluate import Scores, classification_metrics, zero_shot_scores
from clipdemo.families import CARS_HEAD
from clipdemo.features import Backbone, EncodedPlan, encode_parts, encode_plan, zero_shot_classifier
from clipdemo.heads import DEFAULT_HEAD, HEADS, FitResult, HeadClassifier, fit_head, predict_logits, save_head
from clipdemo.progress import ConsoleProgress, Progress, typed
from clipdemo.results import TrainResult
from clipdemo.scoring import ZeroShotClassifier
from clipdemo.zeroshot import CARS_TEMPLATES

# --- training -------------------------------------------------------------------------------------------


def train_head(
    dataset: ImageDataset,
    backbone_spec,
    out_dir,
    *,
    head: str = DEFAULT_HEAD,
    epochs: int | None = None,
    split: str = "tutorial",
    seed: int = 0,
    templates: Sequence[str] = CARS_TEMPLATES,
    lr: float | None = None,
    batch_size: int | None = None,
    weight_decay: float | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    cache_dir=None,
    device: str = "auto",
    precision: str | None = None,
    encode_batch_size: int = 64,
    plan: SplitPlan | None = None,
) -> TrainResult:
    """Train a ``head`` over the frozen ``backbone_spec`` on ``dataset`` and write it to ``out_dir``.

    ``backbone_spec``: a Hub id, HF folder or scratch checkpoint (or an ``Encoder``); it is loaded only if
    some features or class embeddings are not in ``cache_dir`` yet. ``epochs``, ``lr``, ``batch_size``,
    ``weight_decay`` default to the head's (``heads.HEADS``). ``templates``: the prompts ensembled into each
    class's text embedding (zero-shot, and ``zeroshot-init``'s starting point). ``plan``: the checked split
    plan (default ``plan_splits(dataset, split, seed)``; its leak note is reported and recorded). ``progress``
    gets ``ProgressEvent``s (encode, then ``fit_head``'s train / eval, then done); without it, console bars
    are drawn (on a terminal). ``should_stop()`` ends training early and still saves the best epoch so far;
    while encoding, or before the first step, it ends the run without a checkpoint.

    Returns a ``TrainResult``: the head's and zero-shot CLIP's metrics on the plan's evaluation part and
    extra splits, unreadable images skipped per part, and the run (``best_val_acc`` and ``zeroshot_val_acc`` on
    the images the head was chosen on, see ``heads.fit_head``; ``steps``, ``stopped``, ``encoded_images`` (0 on a
    warm cache), ``seconds``, ``head``).
    """
    t0 = time.perf_counter()
    if head not in HEADS:
        raise ValueError(f"Unknown head '{head}': choose one of {', '.join(HEADS)}.")
    progress = progress or ConsoleProgress("training head")
    report = typed(progress)
    plan = plan or plan_splits(dataset, split, seed)
    if plan.leak:
        report({"phase": "encode", "message": plan.leak})
    backbone = Backbone.of(backbone_spec, device, precision)
    encoded = encode_plan(
        plan, backbone, cache_dir=cache_dir, progress=progress, batch_size=encode_batch_size, should_stop=should_stop
    )
    zeroshot = zero_shot_classifier(backbone, dataset.class_names, templates, cache_dir)
    _require_images(encoded, dataset)
    hyper = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay}
    train, validation = encoded.rows["train"], encoded.rows["validation"]
    fit = fit_head(
        head, train, validation, zeroshot=zeroshot, seed=seed, progress=report, should_stop=should_stop, **hyper
    )
    if fit.steps == 0 or fit.head is None:
        raise RuntimeError("training was stopped before its first step; no checkpoint was written")
    metrics, zs, extra = _held_out_scores(fit, zeroshot, encoded, plan)
    trained_on = f"{dataset.source}: {len(zeroshot.names)} classes, {len(train)} training images"
    card = _card(dataset, plan, metrics, zs, extra, encoded)
    save_head(out_dir, fit, zeroshot, backbone, title="Stanford Cars head", seed=seed, trained_on=trained_on, card=card)
    seconds = time.perf_counter() - t0
    report(
        {
            "phase": "done",
            "val_acc": fit.val_acc,
            "best_val_acc": fit.val_acc,
            "test_acc": metrics.acc1,
            "elapsed": seconds,
        }
    )
    run = {**fit.run_card(), "encoded_images": encoded.fresh, "seconds": round(seconds, 3), "head": head}
    names = list(zeroshot.names)
    return TrainResult(CARS_HEAD, Path(out_dir), names, metrics, plan.card(), encoded.skipped, run, zs, extra)


def _require_images(encoded: EncodedPlan, dataset: ImageDataset) -> None:
    for part, what in (("train", "training"), ("validation", "validation"), ("evaluation", "evaluation")):
        if len(encoded.rows[part]) == 0:
            raise DataError(f"{dataset.source}: none of the {what} images could be read (see the skipped files).")


def _held_out_scores(fit: FitResult, zeroshot: ZeroShotClassifier, encoded: EncodedPlan, plan: SplitPlan):
    """The head's and zero-shot's metrics on the evaluation part, and on each evaluation-only split."""
    n = len(zeroshot.names)

    def both(x, y) -> tuple[Scores, Scores]:
        head = classification_metrics(y.numpy(), predict_logits(fit.head, x).numpy(), n)
        return head, zero_shot_scores(x, y, zeroshot.embeddings, zeroshot.rule)

    metrics, zs = both(*encoded.rows["evaluation"])
    extra = {}  # evaluation-only splits (never trained on): the head, and zero-shot on the same images
    for name in plan.extra:
        if len(encoded.rows[name]):
            extra[name], extra[f"{name} (zero-shot)"] = both(*encoded.rows[name])
    return metrics, zs, extra


def _card(dataset: ImageDataset, plan: SplitPlan, metrics: Scores, zs: Scores, extra: dict, encoded) -> dict:
    """What a Cars head's card adds to every head's: the data, the split and the held-out metrics."""
    return {
        "dataset": {
            "source": dataset.source,
            "fingerprint": dataset.fingerprint,
            "splits": {k: len(s) for k, s in dataset.splits.items()},
        },
        "split": plan.description,
        "split_protocol": plan.protocol,
        "split_plan": plan.card(),
        "eval_split": plan.eval_name,
        "metrics": metrics.to_dict(),  # with the confusion matrix, for the admin view's figure
        "zeroshot_metrics": zs.to_dict(),
        "extra_metrics": {k: v.summary() for k, v in extra.items()},
        "skipped": encoded.skipped,
        "notes": [*dataset.notes, *([plan.leak] if plan.leak else [])],
    }


# --- scoring a trained head, and zero-shot, on a dataset ----------------------------------------------------


def head_scores(
    clf: HeadClassifier, dataset: ImageDataset, part: Part, *, cache_dir=None, progress=None, batch_size: int = 64
) -> tuple[Scores, int]:
    """The head's metrics on ``dataset``'s ``part``, and how many of its images could not be read."""
    if list(dataset.class_names) != clf.class_names:
        raise CheckpointError(
            f"This head was trained on {len(clf.class_names)} classes ({_dataset_name(clf.card)}); "
            f"{dataset.source} has {len(dataset.class_names)} classes"
            f"{_first_difference(clf.class_names, dataset.class_names)}: evaluate it on the data it was trained for."
        )
    encoded = encode_parts(
        dataset, {"scored": part}, clf.backbone, cache_dir=cache_dir, progress=progress, batch_size=batch_size
    )
    x, y = _readable(encoded, dataset)
    head, _ = clf.scores(x)
    return classification_metrics(y.numpy(), head.numpy(), len(clf.class_names)), encoded.skipped["scored"]


def zeroshot_scores(
    backbone,
    dataset: ImageDataset,
    part: Part,
    *,
    templates=CARS_TEMPLATES,
    cache_dir=None,
    progress=None,
    batch_size: int = 64,
) -> tuple[Scores, int]:
    """Zero-shot CLIP's metrics on ``dataset``'s ``part`` (each image and class prompt encoded once, cached with
    ``cache_dir``), and how many of its images could not be read."""
    backbone = Backbone.of(backbone)
    encoded = encode_parts(
        dataset, {"scored": part}, backbone, cache_dir=cache_dir, progress=progress, batch_size=batch_size
    )
    x, y = _readable(encoded, dataset)
    zeroshot = zero_shot_classifier(backbone, dataset.class_names, templates, cache_dir)
    return zero_shot_scores(x, y, zeroshot.embeddings, zeroshot.rule), encoded.skipped["scored"]


def _readable(encoded, dataset: ImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = encoded.rows["scored"]
    if len(y) == 0:
        raise DataError(f"{dataset.source}: none of the images to score could be read.")
    return x, y


def _dataset_name(card: dict) -> str:
    data = card.get("dataset")
    return str(data.get("source") if isinstance(data, dict) else data or "unknown data")


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f" (class {i + 1} is '{y[:60]}' there, '{x[:60]}' in the head)"
    return ""
