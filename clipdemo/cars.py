"""Stanford Cars heads: train a head on a frozen CLIP's cached features, evaluate it beside zero-shot, serve it.

    from clipdemo import pipeline
    from clipdemo.cars import CarsClassifier

    options = pipeline.TrainOptions(backbone="openai/clip-vit-base-patch32", split="tutorial")
    result = pipeline.train("cars-head", "/data/stanford_cars", "checkpoints/cars-head/v1", options,
                            cache_dir="cache/features")        # devkit layout, image folder or Hub id
    pipeline.evaluate("checkpoints/cars-head/v1", "/data/stanford_cars", "test", cache_dir="cache/features")
    head_top5, zeroshot_top5 = CarsClassifier("checkpoints/cars-head/v1").predict(image)

Splits come from the one split plan (``clipdemo.data.splits.plan_splits``, leak check included): ``tutorial``
is the Cars notebook's (train on its 7,349, pick the model on the 408 its first split held out, score on the 387
it reported); ``official`` is the dataset's own train and test splits, the model picked on its validation split
or on 10% of each class of train.

Zero-shot (the 8 Cars templates, ensembled) and the head are scored on the same held-out images with the
same metrics (acc1, acc5, mean per-class recall, weighted F1); both go into the checkpoint card with the
split, backbone, head, classes and seed. The checkpoint (``kind="cars-head"``) holds the head, the class
text embeddings (so serving zero-shot needs no text tower) and the backbone's spec and fingerprint:
``CarsClassifier`` refuses any other backbone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from clipdemo import __version__
from clipdemo.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from clipdemo.data import DataError, ImageDataset
from clipdemo.data.splits import Part, SplitPlan, plan_splits
from clipdemo.evaluate import Scores, classification_metrics, zero_shot_logits, zero_shot_scores
from clipdemo.families import CARS_HEAD, CHECKPOINT_KIND
from clipdemo.features import Backbone, class_text_embeddings, encode_parts, encode_plan
from clipdemo.heads import DEFAULT_HEAD, HEADS, build_head, fit_head, predict_logits
from clipdemo.progress import ConsoleProgress, Progress, typed
from clipdemo.results import TrainResult
from clipdemo.zeroshot import CARS_TEMPLATES, Prediction, rank

HEAD_KIND = CHECKPOINT_KIND[CARS_HEAD]
SPLIT_PROTOCOLS = ("tutorial", "official")


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
    spec = HEADS[head]
    progress = progress or ConsoleProgress("training head")
    report = typed(progress)
    plan = plan or plan_splits(dataset, split, seed)
    if plan.leak:
        report({"phase": "encode", "message": plan.leak})
    backbone = Backbone.of(backbone_spec, device, precision)

    encoded = encode_plan(
        plan, backbone, cache_dir=cache_dir, progress=progress, batch_size=encode_batch_size, should_stop=should_stop
    )
    fresh = encoded.fresh
    templates = tuple(templates)
    classes, scale = class_text_embeddings(backbone, dataset.class_names, templates, cache_dir)
    x_train, y_train = encoded.rows["train"]
    x_val, y_val = encoded.rows["validation"]
    x_eval, y_eval = encoded.rows["evaluation"]
    for what, y in (("training", y_train), ("validation", y_val), ("evaluation", y_eval)):
        if len(y) == 0:
            raise DataError(f"{dataset.source}: none of the {what} images could be read (see the skipped files).")
    n_classes, embed_dim = classes.shape

    fit = fit_head(
        head,
        (x_train, y_train),
        (x_val, y_val),
        class_embeddings=classes,
        logit_scale=scale,
        seed=seed,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        progress=report,
        should_stop=should_stop,
    )
    if fit.steps == 0 or fit.head is None:
        raise RuntimeError("training was stopped before its first step; no checkpoint was written")
    model = fit.head

    n = len(dataset.class_names)
    zeroshot = zero_shot_scores(x_eval, y_eval, classes, scale)
    metrics = classification_metrics(y_eval.numpy(), predict_logits(model, x_eval).numpy(), n)
    extra = {}  # evaluation-only splits (never trained on): the head, and zero-shot on the same images
    for name in plan.extra:
        x, y = encoded.rows[name]
        if len(y):
            extra[name] = classification_metrics(y.numpy(), predict_logits(model, x).numpy(), n)
            extra[f"{name} (zero-shot)"] = zero_shot_scores(x, y, classes, scale)
    skipped = encoded.skipped
    head_config = {"name": head, "num_classes": n_classes, "embed_dim": embed_dim, "logit_scale": scale}
    config = {
        "kind": HEAD_KIND,
        "head": head_config,
        "backbone": {"spec": backbone.spec, "fingerprint": backbone.fingerprint},
        "templates": list(templates),
        "logit_scale": scale,
    }
    run = {
        "best_val_acc": fit.val_acc,
        "zeroshot_val_acc": fit.zeroshot_val_acc,
        "steps": fit.steps,
        "stopped": fit.stopped,
        "train_seconds": round(fit.seconds, 3),
    }
    card = {
        "title": "Stanford Cars head",
        "head": head,
        "head_description": spec.description,
        "backbone": backbone.spec,
        "backbone_fingerprint": backbone.fingerprint,
        "dataset": {
            "source": dataset.source,
            "fingerprint": dataset.fingerprint,
            "splits": {k: len(s) for k, s in dataset.splits.items()},
        },
        "classes": list(dataset.class_names),
        "split": plan.description,
        "split_protocol": plan.protocol,
        "split_plan": plan.card(),
        "eval_split": plan.eval_name,
        "seed": seed,
        "hyperparameters": fit.hyperparameters,
        "selection": fit.selection,
        "templates": list(templates),
        "metrics": metrics.to_dict(),  # with the confusion matrix, for the admin view's figure
        "zeroshot_metrics": zeroshot.to_dict(),
        "extra_metrics": {k: v.summary() for k, v in extra.items()},
        "validation": {
            "acc1": fit.val_acc,
            "zeroshot_acc1": fit.zeroshot_val_acc,
            "n": fit.n_selection,
            "protocol": fit.protocol,
            "fitted_on": fit.n_fit,
            "candidates": fit.history,
        },
        "run": run,
        "skipped": skipped,
        "notes": [*dataset.notes, *([plan.leak] if plan.leak else [])],
        "trained_on": f"{dataset.source}: {n} classes, {len(y_train)} training images",
        "library_version": __version__,
    }
    state = {**{f"head.{k}": v for k, v in model.state_dict().items()}, "zeroshot.classifier": classes}
    save_checkpoint(out_dir, state, config, card)
    seconds = time.perf_counter() - t0
    run.update(encoded_images=fresh, seconds=round(seconds, 3), head=head)
    report(
        {
            "phase": "done",
            "val_acc": fit.val_acc,
            "best_val_acc": fit.val_acc,
            "test_acc": metrics.acc1,
            "elapsed": seconds,
        }
    )
    return TrainResult(
        CARS_HEAD,
        Path(out_dir),
        list(dataset.class_names),
        metrics,
        plan.card(),
        skipped,
        run,
        zeroshot=zeroshot,
        extra=extra,
    )


# --- using a trained head -------------------------------------------------------------------------------


class CarsClassifier:
    """A trained head checkpoint on its backbone: ``predict(image) -> (head top-k, zero-shot top-k)``.

    ``backbone``: defaults to the one the card records; any other (different weights or preprocessing, by
    fingerprint) is refused with ``CheckpointError``. ``load_backbone=False`` defers loading the model until
    an image must be encoded (evaluation on cached features never loads it); otherwise a backbone that
    can't be had raises ``ModelUnavailable`` here.
    """

    def __init__(
        self,
        checkpoint_dir,
        backbone=None,
        *,
        device: str = "auto",
        precision: str | None = None,
        load_backbone: bool = True,
    ):
        self.path = Path(checkpoint_dir)
        state, config, self.card = load_checkpoint(self.path, kind=HEAD_KIND)
        try:
            hc = config["head"]
            self.recorded = config["backbone"]
            self.head = build_head(
                hc["name"],
                num_classes=hc["num_classes"],
                embed_dim=hc["embed_dim"],
                logit_scale=hc.get("logit_scale", 100.0),
            )
            self.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
            self.classifier = state["zeroshot.classifier"].float()
            self.logit_scale = float(config["logit_scale"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"Checkpoint '{self.path}' is damaged: its config and weights don't fit ({first})."
            ) from None
        self.head.eval()
        self.class_names = list(self.card.get("classes") or [])
        if len(self.class_names) != hc["num_classes"]:
            raise CheckpointError(
                f"Checkpoint '{self.path}' is damaged: its card lists {len(self.class_names)} "
                f"classes for a head of {hc['num_classes']}."
            )
        self.backbone = Backbone.of(backbone or self.recorded["spec"], device, precision)
        check_backbone(self.recorded, self.backbone)
        if load_backbone:
            self.backbone.encoder  # noqa: B018 - load now, so a missing model is reported here

    @torch.no_grad()
    def scores(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(head probabilities, zero-shot probabilities), each ``[N, C]``, for image embeddings ``[N, D]``."""
        head = predict_logits(self.head, features).softmax(-1)
        zeroshot = zero_shot_logits(features, self.classifier, self.logit_scale).softmax(-1)
        return head, zeroshot

    def predict(self, image, k: int = 5) -> tuple[list[Prediction], list[Prediction]]:
        """Top-``k`` (label, probability) from the head and from zero-shot CLIP for one image (a PIL image or
        anything ``clipdemo.images.load_image`` opens)."""
        from clipdemo.images import load_image

        features = self.backbone.encode_images([load_image(image)])
        head, zeroshot = self.scores(features)
        return rank(head, self.class_names, k)[0], rank(zeroshot, self.class_names, k)[0]


def check_backbone(recorded: dict, backbone: Backbone) -> None:
    """Refuse (``CheckpointError``) a backbone other than the one a head was trained on."""
    if backbone.fingerprint == recorded.get("fingerprint"):
        return
    trained = recorded.get("spec", "an unknown backbone")
    if backbone.spec == trained:
        raise CheckpointError(
            f"The backbone '{trained}' has changed since this head was trained (its weights or preprocessing "
            f"differ), so the head no longer fits its embeddings: train a new head on it."
        )
    raise CheckpointError(
        f"This head was trained on the backbone '{trained}' and can't be used with '{backbone.spec}': a head "
        f"only works on the embeddings of its own backbone. Use '{trained}', or train a new head on '{backbone.spec}'."
    )


def head_scores(
    clf: CarsClassifier, dataset: ImageDataset, part: Part, *, cache_dir=None, progress=None, batch_size: int = 64
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
    classes, scale = class_text_embeddings(backbone, dataset.class_names, templates, cache_dir)
    return zero_shot_scores(x, y, classes, scale), encoded.skipped["scored"]


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
