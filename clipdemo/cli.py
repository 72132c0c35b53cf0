"""Command line: ``python -m clipdemo COMMAND …``, thin over the same library functions as the app.

    python -m clipdemo zero-shot --model openai/clip-vit-base-patch32 --labels "cat, dog" photo.jpg
    python -m clipdemo demo-data --out data/shapes
    python -m clipdemo train scratch --data shapes --preset default --max-seconds 120 --promote
    python -m clipdemo eval --checkpoint checkpoints/scratch/VERSION --data shapes
    python -m clipdemo versions scratch; python -m clipdemo promote scratch VERSION; python -m clipdemo rollback scratch

Results go to stdout, the last line being JSON; errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from clipdemo.checkpoints import CheckpointError
from clipdemo.errors import ModelUnavailable
from clipdemo.settings import default_model
from clipdemo.images import ImageError
from clipdemo.settings import Settings
from clipdemo.zeroshot import LabelError, TEMPLATE_SETS

USER_ERRORS = (ImageError, LabelError, ModelUnavailable, CheckpointError, FileNotFoundError, ValueError)


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


def output_dir(args, family: str) -> Path:
    """``--out`` if given, else a new version folder under the checkpoint dir (so the app can promote it)."""
    from clipdemo.checkpoints import new_version_dir

    if args.out:
        return Path(args.out)
    return new_version_dir(Settings.from_env().checkpoint_dir, family, args.label)


def check_promotable(args, family: str) -> None:
    """Before any training: ``--promote`` needs the new version inside the checkpoint directory, where the app
    looks; ``finish`` relies on it."""
    versions = Settings.from_env().checkpoint_dir / family
    if args.promote and args.out and Path(args.out).resolve().parent != versions.resolve():
        raise ValueError(f"--promote serves versions under {versions}/: leave out --out, or give a folder there.")


def finish(family: str, folder: Path, metrics: dict, promote_it: bool) -> dict:
    from clipdemo.checkpoints import promote

    if promote_it:  # check_promotable made sure the folder is <checkpoint dir>/<family>/<version>
        folder = promote(folder.parent.parent, family, folder.name)
        print(f"promoted {folder}", file=sys.stderr)
    return {"checkpoint": str(folder), **{k: v for k, v in metrics.items() if k != "confusion"}}


def cmd_demo_data(args):
    from clipdemo.data.shapes import make_shapes

    return {"out": str(make_shapes(args.out, seed=args.seed))}


def cmd_train_scratch(args):
    """Also the entry point of every rank under torchrun: only rank 0 draws progress, writes and prints."""
    from clipdemo import distributed
    from clipdemo.data.sources import load_source
    from clipdemo.scratch.train import train_scratch

    check_promotable(args, "scratch")
    runtime = distributed.runtime(args.device)  # joins the process group when launched by torchrun
    dataset = load_source(args.data, config=args.config)
    if runtime.is_main:
        for note in dataset.notes:
            print(note, file=sys.stderr)
    out = distributed.broadcast(output_dir(args, "scratch"))  # one folder for all ranks
    bar = progress_bar() if runtime.is_main else None
    try:
        with StopOnInterrupt() as stop:
            metrics = train_scratch(
                dataset, out, preset=args.preset, epochs=args.epochs, max_seconds=args.max_seconds, seed=args.seed,
                progress=bar, should_stop=stop, device=args.device,
            )
    finally:
        if bar:
            bar.close()
        distributed.shutdown()
    return finish("scratch", out, metrics, args.promote) if runtime.is_main else None


def cmd_train_head(args):
    """Under torchrun every rank encodes its share of the images into the shared feature cache, then rank 0
    trains the head (small: one process is plenty) from the cache."""
    from clipdemo import distributed
    from clipdemo.cars import console_progress, encode_dataset_splits, train_head
    from clipdemo.data.sources import load_source
    from clipdemo.features import Backbone

    check_promotable(args, "cars-head")
    runtime = distributed.runtime(args.device)
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
    out = output_dir(args, "cars-head")
    with StopOnInterrupt() as stop:
        metrics = train_head(
            dataset, args.backbone, out, head=args.head, epochs=args.epochs, split=args.split, seed=args.seed,
            progress=console_progress(), should_stop=stop, device=args.device, cache_dir=cache_dir,
        )
    return finish("cars-head", out, metrics, args.promote)


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
    from clipdemo.checkpoints import promote

    return {"served": str(promote(Settings.from_env().checkpoint_dir, args.family, args.version))}


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
            p.add_argument("version")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.run(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, ensure_ascii=False))
    return 0
