"""Stanford Cars heads: train a head on a frozen CLIP's cached features, evaluate it beside zero-shot, serve it.

    from clipdemo.cars import train_head, evaluate_head, CarsClassifier
    from clipdemo.data.sources import load_source

    data = load_source("/data/stanford_cars")                  # devkit layout, image folder or Hub id
    result = train_head(data, "openai/clip-vit-base-patch32", "checkpoints/cars-head/v1",
                        head="zeroshot-init", split="tutorial", cache_dir="cache/features")
    evaluate_head("checkpoints/cars-head/v1", data, split="test", cache_dir="cache/features")
    head_top5, zeroshot_top5 = CarsClassifier("checkpoints/cars-head/v1").predict(image)

Splits (``split=``):

- ``tutorial``: the Cars tutorial's protocol on the train split: ``train_test_split(test_size=0.05,
  random_state=3)``. The notebook ran that cell twice (8,144 -> 7,736 + 408, then 7,736 -> 7,349 + 387) and
  reported the 387; so do we: train on its 7,349, evaluate on its 387, and pick the best epoch on the 408 the
  first run held out and the notebook then never used. Nothing that picks the model is scored on.
- ``official``: train on the official train split, evaluate on the official test split; the best epoch is
  picked on the dataset's ``validation`` split, or on 5% of train per class (stratified, seeded).

Zero-shot (the 8 Cars templates, ensembled) and the head are scored on the same held-out images with the
same metrics (acc1, acc5, mean per-class recall, weighted F1); both go into the checkpoint card with the
split, backbone, head, classes and seed. The checkpoint (``kind="cars-head"``) holds the head, the class
text embeddings (so serving zero-shot needs no text tower) and the backbone's spec and fingerprint:
``CarsClassifier`` refuses any other backbone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from clipdemo import __version__
from clipdemo.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from clipdemo.data import ImageDataset, Split
from clipdemo.data.sources import DataError
from clipdemo.data.splits import stratified_split, tutorial_split
from clipdemo.evaluate import classification_metrics
from clipdemo.features import Backbone, EncodedSplit, class_text_embeddings, encode_split
from clipdemo.heads import DEFAULT_HEAD, HEADS, build_head, fit_head, predict_logits
from clipdemo.zeroshot import CARS_TEMPLATES, Prediction, rank

HEAD_KIND = "cars-head"
SPLIT_PROTOCOLS = ("tutorial", "official")
OFFICIAL_VALIDATION_FRACTION = 0.05
METRIC_KEYS = ("acc1", "acc5", "mean_per_class_recall", "weighted_f1", "n")


# --- splits ---------------------------------------------------------------------------------------------


@dataclass
class HeadSplits:
    """Which images of which dataset split train, pick the epoch, and get scored (indices into the split)."""

    train: tuple[str, list[int]]
    validation: tuple[str, list[int]]
    evaluation: tuple[str, list[int]]
    protocol: str  # "tutorial" or "official"
    description: str  # for the card and the CLI


def _indices(split: Split) -> Split:
    return Split(list(range(len(split))), list(split.labels))  # "images" are row indices: splitters keep them


def plan_splits(dataset: ImageDataset, split: str = "tutorial", seed: int = 0) -> HeadSplits:
    """The train / validation / evaluation images for ``split`` ("tutorial" or "official"); see the module doc."""
    if split not in SPLIT_PROTOCOLS:
        raise ValueError(f"Unknown split '{split}': use one of {', '.join(SPLIT_PROTOCOLS)}.")
    train = dataset.splits.get("train")
    if train is None or len(train) == 0:
        raise DataError(f"{dataset.source} has no training images.")
    if split == "tutorial":
        if len(train) < 6:
            raise DataError(f"{dataset.source} has {len(train)} training images: too few for the tutorial's split.")
        first_train, first_held = tutorial_split(_indices(train))  # the notebook's first run of its split cell
        final_train, final_held = tutorial_split(first_train)  # ... and its second, whose 387 it reported
        text = (f"tutorial protocol on the train split (train_test_split 5%, random_state=3, run twice as in the "
                f"notebook): train {len(final_train)}, validation {len(first_held)} (held out by the first run, "
                f"picks the epoch), evaluation {len(final_held)} (the notebook's held-out images)")  # fmt: skip
        return HeadSplits(("train", final_train.images), ("train", first_held.images), ("train", final_held.images),
                          "tutorial", text)  # fmt: skip
    test = dataset.splits.get("test")
    if test is None or len(test) == 0:
        raise DataError(f"{dataset.source} has no test split: use the tutorial split (--split tutorial) instead.")
    validation = dataset.splits.get("validation")
    if validation is not None and len(validation):
        train_idx, val = list(range(len(train))), ("validation", list(range(len(validation))))
        where = f"the dataset's validation split ({len(validation)})"
    else:
        kept, held = stratified_split(_indices(train), OFFICIAL_VALIDATION_FRACTION, seed)
        if len(held) == 0:
            raise DataError(f"{dataset.source}: no class has two training images to hold one out for validation.")
        train_idx, val = kept.images, ("train", held.images)
        where = f"{len(held)} train images ({OFFICIAL_VALIDATION_FRACTION:.0%} per class, stratified, seed {seed})"
    text = (f"official splits: train {len(train_idx)}, evaluation on the official test split ({len(test)}); "
            f"the epoch is picked on {where}")  # fmt: skip
    return HeadSplits(("train", train_idx), val, ("test", list(range(len(test)))), "official", text)


# --- training -------------------------------------------------------------------------------------------


def _summary(metrics: dict) -> dict:
    return {k: metrics[k] for k in METRIC_KEYS}


def zeroshot_scores(features: torch.Tensor, class_embeddings: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """CLIP's zero-shot logits: scaled cosine similarity of each image with each class."""
    return logit_scale * features @ class_embeddings.T


def encode_dataset_splits(dataset: ImageDataset, backbone: Backbone, names, *, cache_dir=None, progress=None,
                          batch_size: int = 64, should_stop=None) -> dict[str, EncodedSplit]:  # fmt: skip
    """Each named dataset split encoded once (cached under the dataset fingerprint and split name)."""
    out = {}
    for name in dict.fromkeys(names):
        report = (lambda info, name=name: progress({**info, "split": name})) if progress else None
        out[name] = encode_split(backbone, dataset.splits[name], batch_size=batch_size, progress=report,
                                 cache_dir=cache_dir, key_parts=(dataset.fingerprint, name),
                                 desc=f"encoding {name}", should_stop=should_stop)  # fmt: skip
    return out


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
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    cache_dir=None,
    device: str = "auto",
    precision: str | None = None,
    encode_batch_size: int = 64,
) -> dict:
    """Train a ``head`` over the frozen ``backbone_spec`` on ``dataset`` and write it to ``out_dir``.

    ``backbone_spec``: a Hub id, HF folder or scratch checkpoint (or an ``Encoder``); it is loaded only if
    some features or class embeddings are not in ``cache_dir`` yet. ``epochs``, ``lr``, ``batch_size``,
    ``weight_decay`` default to the head's (``heads.HEADS``). ``templates``: the prompts ensembled into each
    class's text embedding (zero-shot, and ``zeroshot-init``'s starting point). ``progress(dict)`` gets encode events
    (``phase="encode"``, ``split``, ``done``, ``total``, ``skipped``, ``cached``) and ``fit_head``'s train /
    eval events, then ``phase="done"``; without it, console bars are drawn (on a terminal). ``should_stop()``
    ends training early and still saves the best epoch so far; while encoding, or before the first step, it
    ends the run without a checkpoint (``EncodingStopped`` / ``RuntimeError``).

    Returns the head's metrics on the evaluation split (``acc1, acc5, mean_per_class_recall, weighted_f1,
    n``) plus ``zeroshot`` (the same metrics for zero-shot CLIP), ``best_val_acc`` and ``zeroshot_val_acc``
    (on the images the head was chosen on, see ``heads.fit_head``), ``steps``, ``stopped``, ``skipped`` (unreadable images per split), ``encoded_images`` (0 on a warm
    cache), ``seconds``, ``head``, ``split`` and ``checkpoint``.
    """
    t0 = time.perf_counter()
    if head not in HEADS:
        raise ValueError(f"Unknown head '{head}': choose one of {', '.join(HEADS)}.")
    spec = HEADS[head]
    report = progress or console_progress()
    plan = plan_splits(dataset, split, seed)
    backbone = Backbone.of(backbone_spec, device, precision)

    encoded = encode_dataset_splits(dataset, backbone, [plan.train[0], plan.validation[0], plan.evaluation[0]],
                                    cache_dir=cache_dir, progress=report, batch_size=encode_batch_size,
                                    should_stop=should_stop)  # fmt: skip
    fresh = sum(e.fresh for e in encoded.values())
    templates = tuple(templates)
    classes, scale = class_text_embeddings(backbone, dataset.class_names, templates, cache_dir)
    x_train, y_train = encoded[plan.train[0]].rows(plan.train[1])
    x_val, y_val = encoded[plan.validation[0]].rows(plan.validation[1])
    x_eval, y_eval = encoded[plan.evaluation[0]].rows(plan.evaluation[1])
    for what, y in (("training", y_train), ("validation", y_val), ("evaluation", y_eval)):
        if len(y) == 0:
            raise DataError(f"{dataset.source}: no readable {what} images (see the skipped counts).")
    n_classes, embed_dim = classes.shape

    fit = fit_head(head, (x_train, y_train), (x_val, y_val), class_embeddings=classes, logit_scale=scale, seed=seed,
                   epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, progress=report,
                   should_stop=should_stop)  # fmt: skip
    if fit.steps == 0 or fit.head is None:
        raise RuntimeError("training was stopped before its first step; no checkpoint was written")
    model = fit.head

    n = len(dataset.class_names)
    zeroshot = classification_metrics(y_eval.numpy(), zeroshot_scores(x_eval, classes, scale).numpy(), n)
    metrics = classification_metrics(y_eval.numpy(), predict_logits(model, x_eval).numpy(), n)
    skipped = {name: e.skipped for name, e in encoded.items()}
    head_config = {"name": head, "num_classes": n_classes, "embed_dim": embed_dim, "logit_scale": scale}
    config = {
        "kind": HEAD_KIND,
        "head": head_config,
        "backbone": {"spec": backbone.spec, "fingerprint": backbone.fingerprint},
        "templates": list(templates),
        "logit_scale": scale,
    }
    run = {"best_val_acc": fit.val_acc, "zeroshot_val_acc": fit.zeroshot_val_acc, "steps": fit.steps,
           "stopped": fit.stopped, "train_seconds": round(fit.seconds, 3)}  # fmt: skip
    card = {
        "title": "Stanford Cars head",
        "head": head,
        "head_description": spec.description,
        "backbone": backbone.spec,
        "backbone_fingerprint": backbone.fingerprint,
        "dataset": {"source": dataset.source, "fingerprint": dataset.fingerprint,
                    "splits": {k: len(s) for k, s in dataset.splits.items()}},  # fmt: skip
        "classes": list(dataset.class_names),
        "split": plan.description,
        "split_protocol": plan.protocol,
        "eval_split": plan.evaluation[0],
        "seed": seed,
        "hyperparameters": fit.hyperparameters,
        "selection": fit.selection,
        "templates": list(templates),
        "metrics": metrics,  # with the confusion matrix, for the admin view's figure
        "zeroshot_metrics": zeroshot,
        "validation": {"acc1": fit.val_acc, "zeroshot_acc1": fit.zeroshot_val_acc, "n": fit.n_selection,
                       "protocol": fit.protocol, "fitted_on": fit.n_fit, "candidates": fit.history},
        "run": run,
        "skipped": skipped,
        "notes": list(dataset.notes),
        "trained_on": f"{dataset.source}: {n} classes, {len(y_train)} training images",
        "library_version": __version__,
    }
    state = {**{f"head.{k}": v for k, v in model.state_dict().items()}, "zeroshot.classifier": classes}
    save_checkpoint(out_dir, state, config, card)
    seconds = time.perf_counter() - t0
    result = {**_summary(metrics), "zeroshot": _summary(zeroshot), **run, "skipped": skipped,
              "encoded_images": fresh, "seconds": round(seconds, 3), "head": head, "split": plan.protocol,
              "checkpoint": str(out_dir)}  # fmt: skip
    report({"phase": "done", "val_acc": fit.val_acc, "best_val_acc": fit.val_acc, "test_acc": metrics["acc1"],
            "elapsed": seconds})  # fmt: skip
    return result


# --- using a trained head -------------------------------------------------------------------------------


class CarsClassifier:
    """A trained head checkpoint on its backbone: ``predict(image) -> (head top-k, zero-shot top-k)``.

    ``backbone``: defaults to the one the card records; any other (different weights or preprocessing, by
    fingerprint) is refused with ``CheckpointError``. ``load_backbone=False`` defers loading the model until
    an image must be encoded (evaluation on cached features never loads it); otherwise a backbone that
    can't be had raises ``ModelUnavailable`` here.
    """

    def __init__(self, checkpoint_dir, backbone=None, *, device: str = "auto", precision: str | None = None,
                 load_backbone: bool = True):  # fmt: skip
        self.path = Path(checkpoint_dir)
        state, config, self.card = load_checkpoint(self.path, kind=HEAD_KIND)
        try:
            hc = config["head"]
            self.recorded = config["backbone"]
            self.head = build_head(hc["name"], num_classes=hc["num_classes"], embed_dim=hc["embed_dim"],
                                   logit_scale=hc.get("logit_scale", 100.0))  # fmt: skip
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
            raise CheckpointError(f"Checkpoint '{self.path}' is damaged: its card lists {len(self.class_names)} "
                                  f"classes for a head of {hc['num_classes']}.")  # fmt: skip
        self.backbone = Backbone.of(backbone or self.recorded["spec"], device, precision)
        check_backbone(self.recorded, self.backbone)
        if load_backbone:
            self.backbone.encoder  # noqa: B018 - load now, so a missing model is reported here

    @torch.no_grad()
    def scores(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(head probabilities, zero-shot probabilities), each ``[N, C]``, for image embeddings ``[N, D]``."""
        head = predict_logits(self.head, features).softmax(-1)
        zeroshot = zeroshot_scores(features, self.classifier, self.logit_scale).softmax(-1)
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


def evaluate_head(
    checkpoint_dir,
    dataset: ImageDataset,
    split: str = "test",
    *,
    cache_dir=None,
    backbone=None,
    device: str = "auto",
    progress: Callable[[dict], None] | None = None,
    batch_size: int = 64,
) -> dict:
    """Score a head checkpoint on ``dataset``'s ``split`` ("test", "train", "validation", or "tutorial" for
    the tutorial's held-out images). Returns ``acc1, acc5, mean_per_class_recall, weighted_f1, n`` (the keys
    of every clipdemo evaluation) and ``skipped`` (unreadable images left out)."""
    clf = CarsClassifier(checkpoint_dir, backbone, device=device, load_backbone=False)
    if list(dataset.class_names) != clf.class_names:
        raise CheckpointError(
            f"This head was trained on {len(clf.class_names)} classes ({_dataset_name(clf.card)}); {dataset.source} "
            f"has {len(dataset.class_names)} classes{_first_difference(clf.class_names, dataset.class_names)}: "
            f"evaluate it on the data it was trained for."
        )
    name, indices = eval_split(dataset, split)
    report = progress or console_progress()
    encoded = encode_dataset_splits(dataset, clf.backbone, [name], cache_dir=cache_dir, progress=report,
                                    batch_size=batch_size)[name]  # fmt: skip
    x, y = encoded.rows(indices)
    if len(y) == 0:
        raise DataError(f"{dataset.source}: none of the {len(indices)} '{split}' images could be read.")
    head, _ = clf.scores(x)
    metrics = classification_metrics(y.numpy(), head.numpy(), len(clf.class_names))
    return {**_summary(metrics), "skipped": len(indices) - len(y)}


def eval_split(dataset: ImageDataset, split: str) -> tuple[str, list[int]]:
    """(dataset split name, indices) to score for ``split``: a split of the dataset, or "tutorial"."""
    if split == "tutorial":
        return plan_splits(dataset, "tutorial").evaluation
    if split in dataset.splits and len(dataset.splits[split]):
        return split, list(range(len(dataset.splits[split])))
    have = ", ".join(k for k, s in dataset.splits.items() if len(s))
    raise DataError(f"{dataset.source} has no '{split}' split (it has: {have}; or use 'tutorial').")


def evaluate_zeroshot(
    dataset: ImageDataset,
    backbone_spec,
    split: str = "test",
    *,
    templates=CARS_TEMPLATES,
    cache_dir=None,
    device: str = "auto",
    progress: Callable[[dict], None] | None = None,
    batch_size: int = 64,
) -> dict:
    """Zero-shot CLIP on ``dataset``'s ``split`` (as ``evaluate_head``): each image and each class prompt is
    encoded once (and cached with ``cache_dir``). Returns the same keys as ``evaluate_head``."""
    backbone = Backbone.of(backbone_spec, device)
    name, indices = eval_split(dataset, split)
    encoded = encode_dataset_splits(dataset, backbone, [name], cache_dir=cache_dir,
                                    progress=progress or console_progress(), batch_size=batch_size)[name]  # fmt: skip
    x, y = encoded.rows(indices)
    if len(y) == 0:
        raise DataError(f"{dataset.source}: none of the {len(indices)} '{split}' images could be read.")
    classes, scale = class_text_embeddings(backbone, dataset.class_names, templates, cache_dir)
    metrics = classification_metrics(y.numpy(), zeroshot_scores(x, classes, scale).numpy(), len(dataset.class_names))
    return {**_summary(metrics), "skipped": len(indices) - len(y)}


def _dataset_name(card: dict) -> str:
    data = card.get("dataset")
    return str(data.get("source") if isinstance(data, dict) else data or "unknown data")


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f" (class {i + 1} is '{y[:60]}' there, '{x[:60]}' in the head)"
    return ""


# --- console progress -----------------------------------------------------------------------------------


def console_progress() -> Callable[[dict], None]:
    """A progress callback drawing tqdm bars on a terminal: one per encoded split, one for training steps."""
    from tqdm.auto import tqdm

    bars: dict[str, tqdm] = {}

    def report(info: dict) -> None:
        phase = info.get("phase")
        if phase == "encode":
            key = f"encode:{info.get('split', '')}"
            bar = bars.get(key)
            if bar is None:
                desc = f"encoding {info.get('split', 'images')}" + (" (cached)" if info.get("cached") else "")
                bar = bars[key] = tqdm(total=info["total"], desc=desc, unit="img", disable=None)
            bar.update(info["done"] - bar.n)
            if info.get("skipped"):
                bar.set_postfix(skipped=info["skipped"])
            if info["done"] >= info["total"]:
                bar.close()
        elif phase in ("train", "eval") and info.get("total_steps"):
            bar = bars.get("train")
            if bar is None:
                bar = bars["train"] = tqdm(total=info["total_steps"], desc="training head", unit="step", disable=None)
            bar.update(info["step"] - bar.n)
            if phase == "eval" and info.get("val_acc") is not None:
                bar.set_postfix(val_acc=f"{info['val_acc']:.3f}", best=f"{info['best_val_acc']:.3f}")
        elif phase == "done" and "train" in bars:
            bars["train"].close()

    return report
