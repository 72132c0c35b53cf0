"""One way from a dataset to a metric, for every train and eval path (the CLI, the Admin jobs, the benches):

    source -> checked split plan -> decoded / encoded parts -> classifier -> metrics

- ``train_options(family, **given)``: the options of a run checked once, where they enter (the CLI, an Admin job,
  an API call), before anything is read or written: the same sentence for the same mistake everywhere. What it
  returns is trusted downstream (``train`` checks only options that were not checked for its family).
- ``train(family, data, out_dir, options)``: loads the source under a ``SourcePolicy``, plans and checks its
  splits (``clipdemo.data.splits.plan_splits``: the leak check always runs), and calls the family's training
  function with that plan. Returns a ``TrainResult``.
- ``evaluate(checkpoint, data, split)``: rebuilds the plan the checkpoint was trained with (its protocol and
  seed, from its card), so ``test`` means the same clean images training scored, and says so when the split
  asked for overlaps training. Returns an ``EvalResult``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path

from clipdemo.checkpoints import CheckpointError, load_checkpoint
from clipdemo.data import DataError, ImageDataset
from clipdemo.data.sources import OPEN, SourcePolicy, load_source
from clipdemo.data.splits import PROTOCOLS, Part, SplitPlan, plan_splits
from clipdemo.errors import UserError
from clipdemo.families import CARS_HEAD, FAMILIES, FAMILY_OF_KIND, SCRATCH, canonical_kind
from clipdemo.progress import Progress, typed
from clipdemo.results import EvalResult, TrainResult
from clipdemo.settings import DEVICES

MAX_EPOCHS = 100_000
MAX_SECONDS = 7 * 24 * 3600
MAX_BATCH = 65_536


class OptionError(UserError):
    """A training option (or the family) is out of range; the message names it and its range."""


@dataclass(frozen=True)
class TrainOptions:
    """Everything a run can be told, for either family. Build checked ones with ``train_options``."""

    epochs: int | None = None  # None: the recipe's default (or as many as the time budget allows)
    max_seconds: float | None = None  # a wall-clock budget for the whole run
    seed: int = 0
    device: str = "auto"
    preset: str = "default"  # scratch
    batch_size: int | None = None  # scratch
    backbone: str | None = None  # cars-head: the frozen CLIP
    head: str | None = None  # cars-head: None for the default head
    split: str = "tutorial"  # cars-head: "tutorial" or "official" (scratch always uses the dataset's own splits)

    def checked(self, family: str, backbones: Collection[str] | None = None) -> TrainOptions:
        """The one check of a run's options (normalised: whole numbers, a stripped backbone, the default head);
        ``backbones``: when given, a head's backbone must be one of them (the Admin tab: the app's own models)."""
        if family not in FAMILIES:
            raise OptionError(f"Unknown job kind '{str(family)[:40]}'; choose one of {', '.join(FAMILIES)}.")
        backbone = str(self.backbone or "").strip()
        if family == CARS_HEAD and backbones is not None and backbone not in backbones:
            raise OptionError("Choose the backbone among this app's models.")
        out = replace(
            self,
            epochs=_whole(self.epochs, "Epochs", 1, MAX_EPOCHS),
            max_seconds=_seconds(self.max_seconds),
            seed=_whole(self.seed, "The seed", 0, 2**31 - 1) or 0,
        )
        if self.device not in DEVICES:
            raise OptionError("The device must be auto, cpu or cuda.")
        out = _checked_scratch(out) if family == SCRATCH else _checked_head(out, backbone)
        object.__setattr__(out, "_family", family)  # not a field: replace() or a new instance is unchecked again
        return out

    @property
    def checked_for(self) -> str | None:
        """The family ``checked`` passed these options for; None when they were not checked."""
        return getattr(self, "_family", None)

    @property
    def protocol(self) -> str:
        return self.split


def train_options(family: str, *, backbones: Collection[str] | None = None, **given) -> TrainOptions:
    """A run's options from where they enter (CLI arguments, the Admin form, an API call), checked once:
    ``given`` are ``TrainOptions`` fields, None meaning the default. Raises ``OptionError`` in one sentence."""
    return TrainOptions(**{name: value for name, value in given.items() if value is not None}).checked(
        family, backbones
    )


def _checked_scratch(options: TrainOptions) -> TrainOptions:
    from clipdemo.scratch.config import PRESETS

    if not isinstance(options.preset, str) or options.preset not in PRESETS:
        raise OptionError(f"Unknown preset '{str(options.preset)[:40]}'; choose one of {', '.join(PRESETS)}.")
    return replace(options, batch_size=_whole(options.batch_size, "The batch size", 1, MAX_BATCH))


def _checked_head(options: TrainOptions, backbone: str) -> TrainOptions:
    from clipdemo.heads import DEFAULT_HEAD, HEADS

    head = options.head or DEFAULT_HEAD  # "" (an empty Admin field) too
    if not isinstance(head, str) or head not in HEADS:
        raise OptionError(f"Unknown head '{str(head)[:40]}'; choose one of {', '.join(HEADS)}.")
    if options.split not in PROTOCOLS:
        raise OptionError(f"The split must be one of {', '.join(PROTOCOLS)}.")
    if not backbone:
        raise OptionError("A head needs a backbone: a Hub id, a CLIP folder or a scratch checkpoint.")
    return replace(options, backbone=backbone, head=head)


def _whole(value, name: str, lo: int, hi: int) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be a whole number from {lo} to {hi}.") from None
    if not lo <= number <= hi or number != int(number):  # the range first: it refuses nan and inf
        raise OptionError(f"{name} must be a whole number from {lo} to {hi}.")
    return int(number)


def _seconds(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise OptionError("The time budget must be a number of seconds.") from None
    if not 0 < seconds <= MAX_SECONDS:  # nan fails this too
        raise OptionError(f"The time budget must be more than 0 and at most {MAX_SECONDS} seconds.")
    return seconds


# --- training ------------------------------------------------------------------------------------------------


def load(data, config: str | None = None, policy: SourcePolicy = OPEN) -> ImageDataset:
    """A dataset from a spec (``clipdemo.data.sources``), or the dataset itself."""
    return data if isinstance(data, ImageDataset) else load_source(data, config, policy)


def train(
    family: str,
    data,
    out_dir,
    options: TrainOptions,
    *,
    config: str | None = None,
    policy: SourcePolicy = OPEN,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    cache_dir=None,
) -> TrainResult:
    """Train ``family`` on ``data`` (a spec or an ``ImageDataset``) into ``out_dir``; see the module docstring."""
    if options.checked_for != family:  # an API call hands them in unchecked: this is where they enter
        options = options.checked(family)
    dataset = load(data, config, policy)
    report = typed(progress)
    for note in dataset.notes:
        report({"phase": "encode", "message": note})
    plan = plan_splits(dataset, options.protocol if family == CARS_HEAD else "official", options.seed, cache_dir)
    if family == SCRATCH:
        from clipdemo.scratch.train import train_scratch

        return train_scratch(
            dataset,
            out_dir,
            preset=options.preset,
            epochs=options.epochs,
            max_seconds=options.max_seconds,
            seed=options.seed,
            batch_size=options.batch_size,
            progress=progress,
            should_stop=should_stop,
            device=options.device,
            cache_dir=cache_dir,
            plan=plan,
        )
    from clipdemo.cars import train_head

    return train_head(
        dataset,
        options.backbone,
        out_dir,
        head=options.head,
        epochs=options.epochs,
        split=options.split,
        seed=options.seed,
        progress=progress,
        should_stop=should_stop,
        cache_dir=cache_dir,
        device=options.device,
        plan=plan,
    )


# --- evaluation ----------------------------------------------------------------------------------------------


def family_of(config: dict) -> str:
    kind = config.get("kind")
    family = FAMILY_OF_KIND.get(canonical_kind(kind)) if isinstance(kind, str) else None
    if family:
        return family
    raise CheckpointError("This folder is not a scratch CLIP or head checkpoint, so it can't be evaluated here.")


def evaluate(
    checkpoint,
    data,
    split: str = "test",
    *,
    config: str | None = None,
    policy: SourcePolicy = OPEN,
    cache_dir=None,
    device: str = "auto",
    progress: Progress | None = None,
) -> EvalResult:
    """Score ``checkpoint`` on ``split`` of ``data``: a dataset split (``test``, ``validation``, ``train`` or an
    extra one such as ``unseen``), ``held-out`` (what training scored when the data has no test split), or, for
    heads, ``tutorial``. Copies of training images are never scored as held-out: they are left out, and said."""
    _, ckpt_config, card = load_checkpoint(checkpoint)
    family = family_of(ckpt_config)
    dataset = load(data, config, policy)
    seed = int((card.get("split_plan") or {}).get("seed", card.get("seed", 0)) or 0)
    protocol = "tutorial" if split == "tutorial" else "official"
    if split == "tutorial" and family != CARS_HEAD:
        raise DataError("The tutorial split is the Cars heads' protocol; use a split of the data.")
    plan = plan_splits(dataset, protocol, seed, cache_dir)
    part, name, leak, overlap = _part(plan, split)
    report = typed(progress)
    if leak:
        report({"phase": "encode", "message": leak})
    if family == CARS_HEAD:
        from clipdemo.cars import head_scores
        from clipdemo.heads import HeadClassifier

        clf = HeadClassifier(checkpoint, device=device, load_backbone=False)
        scores, skipped = head_scores(clf, plan.dataset, part, cache_dir=cache_dir, progress=progress)
    else:
        scores, skipped = _scratch_scores(checkpoint, plan.dataset, part, device, cache_dir, progress)
    return EvalResult(scores, name, skipped, leak, overlap, plan.pairs if overlap else [])


def _part(plan: SplitPlan, split: str) -> tuple[Part, str, str, int]:
    """(the part to score, its name, a leak note, how many images were left out as copies of training)."""
    dataset = plan.dataset
    if split in ("tutorial", "held-out") or (split == "test" and plan.evaluation.split == "test"):
        return plan.evaluation, plan.eval_name, plan.leak, plan.overlap
    if split in plan.extra:
        part = plan.extra[split]
        gone = len(dataset.splits[split]) - len(part)
        note = (
            f"WARNING: {gone} of the '{split}' images are copies of training images; they were left out."
            if gone
            else ""
        )
        return part, split, note, gone
    if split == "validation" and plan.validation.split == "validation":
        return plan.validation, "validation", "", 0
    if split == "train":
        whole = Part("train", tuple(range(len(dataset.splits["train"]))))
        return whole, "train", "WARNING: these are training images: the metrics are not held-out.", 0
    have = [k for k, s in dataset.splits.items() if len(s)]
    extra = "held-out" if plan.evaluation.split == "train" else None
    raise DataError(
        f"{dataset.source} has no '{split}' split (it has: {', '.join(have + ([extra] if extra else []))})."
    )


def _scratch_scores(checkpoint, dataset: ImageDataset, part: Part, device: str, cache_dir, progress):
    """A scratch CLIP is scored zero-shot on the class names, with the templates it was trained on."""
    from clipdemo.encoders import load_encoder
    from clipdemo.evaluate import zero_shot_scores
    from clipdemo.features import Backbone, encode_parts
    from clipdemo.scoring import Rule
    from clipdemo.zeroshot import build_classifier

    encoder = load_encoder(str(Path(checkpoint)), device=device)
    encoded = encode_parts(dataset, {"scored": part}, Backbone.of(encoder), cache_dir=cache_dir, progress=progress)
    x, y = encoded.rows["scored"]
    if len(y) == 0:
        raise DataError(f"{dataset.source}: none of the images to score could be read.")
    classes = build_classifier(encoder, list(dataset.class_names), encoder.templates)
    return zero_shot_scores(x, y, classes, Rule.of(encoder)), encoded.skipped["scored"]
