"""Command line: ``python -m clipdemo COMMAND …``, thin over the same library functions as the app.

    python -m clipdemo zero-shot --model openai/clip-vit-base-patch32 --labels "cat, dog" photo.jpg
    python -m clipdemo demo-data --out data/shapes
    python -m clipdemo train scratch --data shapes --preset default --max-seconds 120 --promote
    python -m clipdemo eval --checkpoint checkpoints/scratch/VERSION --data shapes
    python -m clipdemo versions scratch; python -m clipdemo promote scratch VERSION; python -m clipdemo rollback scratch

Results go to stdout, the last line being JSON; errors are one line on stderr and exit status 2, checked before
any work. A run interrupted with Ctrl-C prints what it kept, promotes nothing and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import sys
from pathlib import Path

from clipdemo.checkpoints import CheckpointError, Claim
from clipdemo.encoders import ModelUnavailable, default_model
from clipdemo.images import ImageError
from clipdemo.settings import Settings
from clipdemo.zeroshot import LabelError, TEMPLATE_SETS

USER_ERRORS = (ImageError, LabelError, ModelUnavailable, CheckpointError, FileNotFoundError, ValueError)
FINISHED = ("finished", "time budget")  # a run's "stopped" values that mean it ran as asked: promotable


class Interrupted(Exception):
    """Ctrl-C ended a run early: ``result`` (what it kept, if anything) is printed, nothing is promoted."""

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result


def cmd_zero_shot(args) -> list[dict]:
    from clipdemo.encoders import load_encoder
    from clipdemo.images import load_image
    from clipdemo.zeroshot import classify, parse_labels, resolve_templates

    labels = parse_labels(args.labels)
    templates = resolve_templates(args.templates)
    images = [load_image(path) for path in args.images]  # refuse bad files before loading a model
    encoder = load_encoder(args.model, device=args.device)
    ranked = classify(encoder, images, labels, templates, top_k=args.top_k)
    return [
        {"image": path, "predictions": [{"label": p.label, "score": round(p.score, 6)} for p in predictions]}
        for path, predictions in zip(args.images, ranked)
    ]


class StopOnInterrupt:
    """First Ctrl-C asks the training loop to stop between steps (the best checkpoint so far stays);
    a second one interrupts at once."""

    def __init__(self):
        self.stop = False

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_):
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        print("\nstopping after this step (Ctrl-C again to abort)…", file=sys.stderr)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)

    def __call__(self) -> bool:
        return self.stop


def progress_bar(total_key: str = "total_steps"):
    """A tqdm bar fed by the training functions' progress events."""
    from tqdm import tqdm

    bar = tqdm(unit="step", file=sys.stderr, dynamic_ncols=True)

    def update(event: dict) -> None:
        if event.get(total_key) and bar.total != event[total_key]:
            bar.total = event[total_key]
        if "step" in event:
            bar.n = event["step"]
        shown = {k: event[k] for k in ("epoch", "loss", "val_acc") if isinstance(event.get(k), (int, float))}
        bar.set_postfix({k: round(v, 4) if isinstance(v, float) else v for k, v in shown.items()}, refresh=True)

    update.close = bar.close
    return update


def claim_out(args, family: str) -> Claim:
    """Before any work: the folder this run writes, claimed for the whole run. ``--out`` must be a new or empty
    folder or a checkpoint of ``family`` (replaced once the run finishes); else a new version in the checkpoint dir."""
    from clipdemo.checkpoints import claim_output, claim_version

    if args.out:
        return claim_output(args.out, family)
    return claim_version(Settings.from_env().checkpoint_dir, family, args.label)


def serve_folder(family: str, folder: Path) -> Path:
    """Promote the checkpoint ``folder``: by name when it is a version in the checkpoint dir, else copied in as a
    new version first (the original stays where it is). Returns the served folder."""
    from clipdemo.checkpoints import import_checkpoint, promote

    root = Settings.from_env().checkpoint_dir
    if folder.resolve().parent != (root / family).resolve():
        original, folder = folder, import_checkpoint(root, family, folder)
        print(f"copied {original} into {folder.parent} as version {folder.name}", file=sys.stderr)
    return promote(root, family, folder.name)


def finish(family: str, claim: Claim, metrics: dict, promote_it: bool, interrupted: bool) -> dict:
    """The run's result. Only a finished run replaces the checkpoint its ``--out`` held and is served if asked: an
    interrupted or cancelled one leaves both alone, and an interrupted one ends with ``Interrupted``."""
    from clipdemo.checkpoints import served_checkpoint

    stopped = metrics.get("stopped", "finished")
    finished = not interrupted and stopped in FINISHED
    folder = claim.commit() if finished else claim.set_aside()
    result = {"checkpoint": str(folder), **{k: v for k, v in metrics.items() if k not in ("confusion", "checkpoint")}}
    if promote_it and finished:
        result["served"] = str(serve_folder(family, folder))
        print(f"promoted {result['served']}", file=sys.stderr)
        return result
    served = served_checkpoint(Settings.from_env().checkpoint_dir, family)
    not_promoted = f"; not promoted (still served: {served.name if served else 'nothing'})" if promote_it else ""
    if interrupted:
        left = f" ('{claim.folder}' is left as it was)" if folder != claim.folder else ""
        raise Interrupted(f"stopped with Ctrl-C; its best checkpoint so far is kept in {folder}{left}{not_promoted}",
                          result)
    if not_promoted:
        print(f"the run ended early ({stopped}){not_promoted}", file=sys.stderr)
    return result


def train_until_stopped(train, stop: "StopOnInterrupt") -> dict:
    """``train()``, with Ctrl-C before its first step (a RuntimeError from the training functions) said in one line."""
    try:
        return train()
    except RuntimeError:
        if stop():
            raise Interrupted("stopped before the first training step; nothing was written") from None
        raise


def cmd_demo_data(args):
    from clipdemo.data.shapes import make_shapes

    return {"out": str(make_shapes(args.out, seed=args.seed))}


def cmd_train_scratch(args):
    """Also the entry point of every rank under torchrun: only rank 0 draws progress, writes and prints."""
    from clipdemo import distributed
    from clipdemo.data.sources import load_source
    from clipdemo.scratch.train import train_scratch

    runtime = distributed.runtime(args.device)  # joins the process group when launched by torchrun
    claim = claim_out(args, "scratch") if runtime.is_main else None  # only rank 0 writes
    bar = None
    try:
        dataset = load_source(args.data, config=args.config)
        if runtime.is_main:
            for note in dataset.notes:
                print(note, file=sys.stderr)
        out = distributed.broadcast(claim.out if claim else None)  # one folder for all ranks
        bar = progress_bar() if runtime.is_main else None
        with StopOnInterrupt() as stop:
            metrics = train_until_stopped(lambda: train_scratch(
                dataset, out, preset=args.preset, epochs=args.epochs, max_seconds=args.max_seconds, seed=args.seed,
                progress=bar, should_stop=stop, device=args.device,
            ), stop)
        if bar:
            bar.close()  # before the last lines are printed
        return finish("scratch", claim, metrics, args.promote, stop()) if runtime.is_main else None
    finally:
        if bar:
            bar.close()
        distributed.shutdown()
        if claim:
            claim.release()


def cmd_train_head(args):
    """Under torchrun every rank encodes its share of the images into the shared feature cache, then rank 0
    trains the head (small: one process is plenty) from the cache."""
    from clipdemo import distributed
    from clipdemo.cars import console_progress, encode_dataset_splits, train_head
    from clipdemo.data.sources import load_source
    from clipdemo.features import Backbone

    runtime = distributed.runtime(args.device)
    claim = claim_out(args, "cars-head") if runtime.is_main else None  # only rank 0 writes
    try:
        dataset = load_source(args.data, config=args.config)
        cache_dir = Settings.from_env().checkpoint_dir / ".cache"
        if runtime.distributed:
            encode_dataset_splits(dataset, Backbone.of(args.backbone, device=args.device), list(dataset.splits),
                                  cache_dir=cache_dir, progress=None if runtime.is_main else (lambda info: None))
            distributed.shutdown()
            if not runtime.is_main:
                return None
        for note in dataset.notes:
            print(note, file=sys.stderr)
        with StopOnInterrupt() as stop:
            metrics = train_until_stopped(lambda: train_head(
                dataset, args.backbone, claim.out, head=args.head, epochs=args.epochs, split=args.split,
                seed=args.seed, progress=console_progress(), should_stop=stop, device=args.device, cache_dir=cache_dir,
            ), stop)
        return finish("cars-head", claim, metrics, args.promote, stop())
    finally:
        if claim:
            claim.release()


def cmd_eval(args):
    from clipdemo.checkpoints import load_checkpoint
    from clipdemo.data.sources import load_source
    from clipdemo.data.splits import find_overlap

    _, config, card = load_checkpoint(args.checkpoint)
    dataset = load_source(args.data, config=args.config)
    is_head = config.get("kind") == "cars-head"
    if args.split not in dataset.splits and not (is_head and args.split == "tutorial"):
        raise ValueError(f"The dataset has no '{args.split}' split (it has: {', '.join(dataset.splits)}).")
    for (a, b), n in find_overlap(dataset).items():
        if n and args.split == b:
            print(f"WARNING: {n} images of '{b}' also appear in '{a}': these metrics are not held-out.", file=sys.stderr)
    if is_head:
        from clipdemo.cars import evaluate_head

        cache_dir = Settings.from_env().checkpoint_dir / ".cache"  # the features training already encoded
        return evaluate_head(args.checkpoint, dataset, split=args.split, cache_dir=cache_dir, device=args.device)
    return evaluate_scratch(args.checkpoint, dataset, args.split, args.device)


def evaluate_scratch(checkpoint, dataset, split: str, device: str = "auto") -> dict:
    from clipdemo.encoders import load_encoder
    from clipdemo.evaluate import classification_metrics
    from clipdemo.zeroshot import split_scores

    encoder = load_encoder(str(checkpoint), device=device)
    part = dataset.splits[split]
    scores, kept, skipped = split_scores(encoder, part.images, dataset.class_names, encoder.templates)
    metrics = classification_metrics([part.labels[i] for i in kept], scores.numpy(), len(dataset.class_names))
    return {k: v for k, v in metrics.items() if k != "confusion"} | {"skipped": skipped, "split": split}


def cmd_versions(args):
    from clipdemo.checkpoints import list_versions

    return [
        {"version": v["version"], "served": v["served"], "metrics": (v["card"].get("metrics") or {}), "error": v["error"]}
        for v in list_versions(Settings.from_env().checkpoint_dir, args.family)
    ]


def cmd_promote(args):
    """VERSION is a version name, or a checkpoint folder (what ``--out`` wrote): one outside the checkpoint dir is
    copied in as a new version and that is served."""
    from clipdemo.checkpoints import promote

    root, given = Settings.from_env().checkpoint_dir, Path(args.version)
    is_name = given.name == args.version and ((root / args.family / args.version).exists() or not given.is_dir())
    if not is_name:
        return {"served": str(serve_folder(args.family, given))}
    return {"served": str(promote(root, args.family, args.version))}


def cmd_rollback(args):
    from clipdemo.checkpoints import rollback

    return {"served": str(rollback(Settings.from_env().checkpoint_dir, args.family))}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipdemo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    zs = sub.add_parser("zero-shot", help="rank labels for images with any CLIP model")
    zs.add_argument("images", nargs="+", metavar="IMAGE")
    zs.add_argument("--labels", required=True, help='comma- or newline-separated, e.g. "cat, dog, a red car"')
    zs.add_argument("--model", default=default_model(), help="Hub id, local HF folder or scratch checkpoint folder")
    zs.add_argument(
        "--templates", default="photo", help=f"{' | '.join(TEMPLATE_SETS)} | a custom template with {{}}"
    )
    zs.add_argument("--top-k", type=int, default=None)
    zs.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    zs.set_defaults(run=cmd_zero_shot)

    demo = sub.add_parser("demo-data", help="write the built-in shapes dataset as an image folder")
    demo.add_argument("--out", required=True)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=cmd_demo_data)

    train = sub.add_parser("train", help="train a scratch CLIP or a Cars head").add_subparsers(dest="what", required=True)
    scratch = train.add_parser("scratch", help="a CLIP from scratch (ViT + byte-level text transformer)")
    scratch.add_argument("--data", required=True, help="'shapes', an image folder, or a HF dataset id")
    scratch.add_argument("--config", default=None, help="HF dataset config, e.g. mini or full for Pokemon")
    scratch.add_argument("--preset", default="default", choices=["seed", "default"])
    add_training_options(scratch, family="scratch")
    scratch.set_defaults(run=cmd_train_scratch)

    from clipdemo.heads import DEFAULT_HEAD, HEADS

    head = train.add_parser("head", help="a head over a frozen CLIP, e.g. for Stanford Cars")
    head.add_argument("--data", required=True, help="a Stanford Cars devkit folder, an image folder, or a HF dataset id")
    head.add_argument("--config", default=None)
    head.add_argument("--backbone", default=default_model(), help="Hub id, HF folder or scratch checkpoint")
    head.add_argument("--head", default=DEFAULT_HEAD, choices=list(HEADS))
    head.add_argument("--split", default="tutorial", choices=["tutorial", "official"],
                      help="tutorial: 5%% of train held out (random_state=3); official: the test split")
    add_training_options(head, family="cars-head")
    head.set_defaults(run=cmd_train_head)

    ev = sub.add_parser("eval", help="held-out metrics of a checkpoint as one JSON line")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--data", required=True)
    ev.add_argument("--config", default=None)
    ev.add_argument("--split", default="test", help="a split of the data; for Cars heads also 'tutorial'")
    ev.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ev.set_defaults(run=cmd_eval)

    for name, fn, help_ in (("versions", cmd_versions, "list checkpoint versions"),
                            ("promote", cmd_promote, "serve a version"), ("rollback", cmd_rollback, "serve the previous one")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("family", choices=["scratch", "cars-head"])
        if name == "promote":
            p.add_argument("version", help="a version name (see: versions), or a checkpoint folder written with --out")
        p.set_defaults(run=fn)
    return parser


def add_training_options(p: argparse.ArgumentParser, family: str) -> None:
    p.add_argument("--out", default=None, help=f"checkpoint folder (default: a new version under $CLIPDEMO_CHECKPOINT_DIR/{family})")
    p.add_argument("--label", default="cli", help="suffix of the version folder name")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None, help="wall-clock budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--promote", action="store_true", help="serve the result in the app once trained")


def check_args(args) -> None:
    """Values argparse lets through but no run can use: refused before any work, in one sentence."""
    for option in ("epochs", "top_k"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be at least 1 (got {value}).")
    seconds = getattr(args, "max_seconds", None)
    if seconds is not None and not (0 < seconds < math.inf):
        raise ValueError(f"--max-seconds must be a positive number of seconds (got {seconds:g}).")
    label = getattr(args, "label", None)
    if label is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", label):
        raise ValueError(f"--label must be 1 to 40 letters, digits, '.', '_' or '-' (got {label!r}).")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)
        result = args.run(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        if e.result is not None:
            print(json.dumps(e.result, ensure_ascii=False))
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, ensure_ascii=False))
    return 0
