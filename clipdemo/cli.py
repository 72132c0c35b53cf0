"""Command line: ``python -m clipdemo COMMAND …``, thin over the same library functions as the app.

    python -m clipdemo zero-shot --model openai/clip-vit-base-patch32 --labels "cat, dog" photo.jpg
    python -m clipdemo search --model openai/clip-vit-base-patch32 --images photos/ --query "a red car" --top-k 5
    python -m clipdemo demo-data --out data/shapes
    python -m clipdemo train scratch --data shapes --preset default --max-seconds 120 --promote
    python -m clipdemo eval --checkpoint checkpoints/scratch/VERSION --data shapes
    python -m clipdemo versions scratch; python -m clipdemo promote scratch VERSION; python -m clipdemo rollback scratch
    python -m clipdemo cache list; python -m clipdemo cache prune [--all]

Results go to stdout, the last line being JSON; errors are one line on stderr and exit status 2, checked before
any work. A run interrupted with Ctrl-C prints what it kept, promotes nothing and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from clipdemo.errors import UserError
from clipdemo.families import CARS_HEAD, FAMILIES, SCRATCH
from clipdemo.settings import DEVICES, Settings, check_environment, default_model
from clipdemo.templates import TEMPLATE_SETS

if TYPE_CHECKING:  # a command imports what it needs when it runs: --help, versions or cache never load torch
    from clipdemo.checkpoints import Claim

FINISHED = ("finished", "time budget")  # a run's "stopped" values that mean it ran as asked: promotable


class Interrupted(Exception):
    """Ctrl-C ended a run early: ``result`` (what it kept, if anything) is printed, nothing is promoted."""

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result


def cmd_zero_shot(args) -> list[dict]:
    """Per image: ranked labels with the model's own scores (softmax for CLIP, independent sigmoid for SigLIP);
    with ``--threshold``/``--open-set`` whether none of the labels applies; with ``--compare`` the second model's
    answer beside it. Labels the model's context cuts are named on stderr. The Python API's ``ZeroShot`` does the
    work, so ``ZeroShot(model)(images, labels)`` returns exactly this."""
    from clipdemo.images import load_image
    from clipdemo.onnx_cache import preload_for_cpu

    images = [load_image(path) for path in args.images]  # refuse bad files before loading a model
    preload_for_cpu(args.model, args.device)  # a cached export's sessions build while torch is imported below
    from clipdemo.api import ZeroShot, entries
    from clipdemo.zeroshot import parse_labels, resolve_templates

    labels = parse_labels(args.labels)
    templates = resolve_templates(args.templates)
    model = ZeroShot(args.model, device=args.device)
    result = _zero_shot_result(model, images, labels, templates, args)
    out = [dict(image=path, **entry) for path, entry in zip(args.images, entries(result, args.top_k))]
    if args.compare:
        other = _zero_shot_result(ZeroShot(args.compare, device=args.device), images, labels, templates, args)
        for item, entry in zip(out, entries(other, args.top_k)):
            item["compare"] = {"model": args.compare, **entry}
    encoder = model.encoder
    if args.matrix:
        from clipdemo.plots import score_matrix

        title = f"{_score_title(result)}; orange: each image's top {min(args.top_k or 1, len(labels))}"
        score_matrix(
            result.scores,
            [Path(p).name for p in args.images],
            labels,
            title,
            result.none_of_these(),
            top_k=args.top_k or 1,
        ).savefig(args.matrix, dpi=110)
        print(f"matrix written to {args.matrix}", file=sys.stderr)
    if args.where:
        from clipdemo.relevancy import relevancy

        folder = Path(args.where_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for item, path, image in zip(out, args.images, images):
            target = folder / f"{Path(path).stem}.where.png"
            relevancy(encoder, image, labels, templates, args.where).picture.save(target)
            item["relevancy"] = str(target)
    return out


def _zero_shot_result(model, images, labels, templates, args):
    result = model.result(
        images, labels, templates, multi_label=args.multi_label, open_set=args.open_set, threshold=args.threshold
    )
    for notice in result.notices():
        print(f"note: {notice}", file=sys.stderr)
    return result


def _score_title(result) -> str:
    if result.scoring == "sigmoid":
        return "independent scores (sigmoid, as SigLIP was trained)"
    return "cosine similarity per label" if result.multi_label else "probabilities (softmax over the labels)"


def cmd_search(args) -> dict:
    from clipdemo.features import Backbone
    from clipdemo.search import index_folder, query_embedding, search

    backbone = Backbone.of(args.model, device=args.device)
    index = index_folder(backbone, args.images, cache_dir=Settings.from_env().cache_dir)
    query, kind = query_embedding(backbone, args.query)
    hits = search(index, query, args.top_k)
    return {
        "query": args.query,
        "kind": kind,
        "images": len(index),
        "skipped": index.skipped,
        "unreadable": list(index.unreadable),
        "results": [{"rank": h.rank, "path": h.path, "score": round(h.score, 6)} for h in hits],
    }


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


def claim_out(args, family: str) -> Claim:
    """Before any work: the folder this run writes, claimed for the whole run. ``--out`` must be a new or empty
    folder or a checkpoint of ``family`` (replaced once the run finishes); else a new version in the checkpoint dir."""
    from clipdemo.checkpoints import claim_output, claim_version

    if args.out:
        return claim_output(args.out, family)
    return claim_version(Settings.from_env().checkpoint_dir, family, args.label)


def serve_folder(family: str, folder: Path, claim: Claim | None = None) -> Path:
    """Promote the checkpoint ``folder``: by name when it is a version in the checkpoint dir, else copied in as a
    new version first (the original stays where it is). Returns the served folder. A folder a live run is writing
    is refused, unless ``claim`` (the caller's own run) holds it."""
    from clipdemo.checkpoints import import_checkpoint, promote

    root = Settings.from_env().checkpoint_dir
    if folder.resolve().parent != (root / family).resolve():
        original, folder = folder, import_checkpoint(root, family, folder, claim=claim)
        print(f"copied {original} into {folder.parent} as version {folder.name}", file=sys.stderr)
    return promote(root, family, folder.name, claim=claim)


def finish(family: str, claim: Claim, result, promote_it: bool, interrupted: bool) -> dict:
    """The run's JSON. Only a finished run replaces the checkpoint its ``--out`` held and is served if asked: an
    interrupted or cancelled one leaves both alone, and an interrupted one ends with ``Interrupted``."""
    from clipdemo.checkpoints import served_checkpoint

    finished = not interrupted and result.stopped in FINISHED
    folder = claim.commit() if finished else claim.set_aside()
    out = {**result.to_json(), "checkpoint": str(folder)}
    if promote_it and finished:
        out["served"] = str(serve_folder(family, folder, claim))
        print(f"promoted {out['served']}", file=sys.stderr)
        return out
    served = served_checkpoint(Settings.from_env().checkpoint_dir, family)
    not_promoted = f"; not promoted (still served: {served.name if served else 'nothing'})" if promote_it else ""
    if interrupted:
        left = f" ('{claim.folder}' is left as it was)" if folder != claim.folder else ""
        raise Interrupted(
            f"stopped with Ctrl-C; its best checkpoint so far is kept in {folder}{left}{not_promoted}", out
        )
    if not_promoted:
        print(f"the run ended early ({result.stopped}){not_promoted}", file=sys.stderr)
    return out


def train_until_stopped(train, stop: StopOnInterrupt):
    """``train()``, with Ctrl-C before its first step (a RuntimeError from the training functions) said in one line."""
    try:
        return train()
    except RuntimeError:
        if stop():
            raise Interrupted("stopped before the first training step; nothing was written") from None
        raise


def training_options(args, family: str):
    """The run's options, checked before anything is read or written (``pipeline.train_options``, as for an
    Admin job); a flag a command lacks leaves its option at the default."""
    from clipdemo.pipeline import TrainOptions, train_options

    return train_options(family, **{name: getattr(args, name, None) for name in TrainOptions.__dataclass_fields__})


def cmd_demo_data(args):
    from clipdemo.data.shapes import make_shapes

    return {"out": str(make_shapes(args.out, seed=args.seed))}


def cmd_train_scratch(args):
    """Also the entry point of every rank under torchrun: only rank 0 draws progress, writes and prints."""
    from clipdemo import distributed
    from clipdemo.pipeline import train
    from clipdemo.progress import ConsoleProgress

    options = training_options(args, SCRATCH)
    runtime = distributed.runtime(args.device)  # joins the process group when launched by torchrun
    claim = claim_out(args, SCRATCH) if runtime.is_main else None  # only rank 0 writes
    bar = None
    try:
        out = distributed.broadcast(claim.out if claim else None)  # one folder for all ranks
        bar = ConsoleProgress("training") if runtime.is_main else None
        with StopOnInterrupt() as stop:
            result = train_until_stopped(
                lambda: train(SCRATCH, args.data, out, options, config=args.config, progress=bar, should_stop=stop),
                stop,
            )
        if bar:
            bar.close()  # before the last lines are printed
        return finish(SCRATCH, claim, result, args.promote, stop()) if runtime.is_main else None
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
    from clipdemo.features import Backbone, encode_dataset_splits
    from clipdemo.pipeline import load, train
    from clipdemo.progress import ConsoleProgress

    options = training_options(args, CARS_HEAD)
    runtime = distributed.runtime(args.device)
    claim = claim_out(args, CARS_HEAD) if runtime.is_main else None  # only rank 0 writes
    try:
        dataset = load(args.data, args.config)
        cache_dir = Settings.from_env().cache_dir
        if runtime.distributed:
            encode_dataset_splits(
                dataset,
                Backbone.of(options.backbone, device=options.device),
                list(dataset.splits),
                cache_dir=cache_dir,
                progress=None if runtime.is_main else (lambda event: None),
            )
            distributed.shutdown()
            if not runtime.is_main:
                return None
        with StopOnInterrupt() as stop:
            result = train_until_stopped(
                lambda: train(
                    CARS_HEAD,
                    dataset,
                    claim.out,
                    options,
                    cache_dir=cache_dir,
                    progress=ConsoleProgress("training head"),
                    should_stop=stop,
                ),
                stop,
            )
        return finish(CARS_HEAD, claim, result, args.promote, stop())
    finally:
        if claim:
            claim.release()


def cmd_eval(args):
    from clipdemo.pipeline import evaluate
    from clipdemo.progress import ConsoleProgress

    cache_dir = Settings.from_env().cache_dir  # the features training already encoded
    result = evaluate(
        args.checkpoint,
        args.data,
        args.split,
        config=args.config,
        cache_dir=cache_dir,
        device=args.device,
        progress=ConsoleProgress("evaluating"),
    )
    return result.to_json()


def cmd_versions(args):
    from clipdemo.checkpoints import list_versions

    return [
        {
            "version": v["version"],
            "served": v["served"],
            "metrics": (v["card"].get("metrics") or {}),
            "error": v["error"],
        }
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


def cmd_cache(args) -> dict:
    """``cache list``: each cache entry (kind, size, last use, in use) and the total against the budget; ``cache
    prune``: least recently used first down to the budget, or (``--all``) every entry not in use. Only entries
    clipdemo wrote are listed or removed (``clipdemo.caches``)."""
    from clipdemo import caches
    from clipdemo.settings import cache_max_bytes

    folder = Path(args.checkpoint_dir) if args.checkpoint_dir else Settings.from_env().checkpoint_dir
    if not folder.is_dir():
        given = "--checkpoint-dir" if args.checkpoint_dir else "CLIPDEMO_CHECKPOINT_DIR"
        raise UserError(f"{given} '{folder}' is not a folder.")
    root, budget = Settings(checkpoint_dir=folder).cache_dir, cache_max_bytes()
    removed = caches.prune(root, budget, everything=args.all).removed if args.action == "prune" else []
    for entry in removed:
        print(f"removed {entry.kind} {entry.path.relative_to(root)} ({caches.size_text(entry.size)})", file=sys.stderr)
    found = caches.entries(root)
    print(caches.table(root, found, budget))
    out = caches.summary(root, found, budget)
    if args.action == "prune":
        out.update(removed=[e.to_json(root) for e in removed], freed_bytes=sum(e.size for e in removed))
    return out


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Every command with its help; only the command in ``argv`` gets its arguments (``train``'s choices come from
    modules of their own, without torch, but a listing or a mistyped command does not even pay for those)."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    prog = "clipdemo" if Path(sys.argv[0]).name == "clipdemo" else "python -m clipdemo"  # the installed command
    # the module's docstring without its first line (written for the code's reader): examples, then what comes out
    examples = "examples:\n" + __doc__.split("\n", 2)[2].replace("python -m clipdemo", prog)
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Show, use and retrain CLIP: the same library functions as the app (python app.py).",
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for adder in (add_zero_shot, add_search, add_demo_data, add_train, add_eval, add_versions, add_cache):
        adder(_Only(sub, chosen))
    return parser


class _Only:
    """The subcommands action, passing on only the chosen command's arguments: the others are listed with their
    help and get a parser that goes nowhere."""

    def __init__(self, sub, chosen: str | None):
        self.sub, self.chosen = sub, chosen

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        real = self.sub.add_parser(name, **kwargs)
        return real if name == self.chosen else argparse.ArgumentParser(add_help=False)


def add_cache(sub) -> None:
    cache = sub.add_parser("cache", help="list or prune the on-disk caches (ONNX exports, features, embeddings)")
    actions = cache.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="each entry: kind, size, last used, in use; the total against the budget")
    prune = actions.add_parser("prune", help="remove least recently used entries down to CLIPDEMO_CACHE_MAX_GB")
    prune.add_argument("--all", action="store_true", help="remove every entry not in use, whatever the budget")
    for p in (listing, prune):
        p.add_argument("--checkpoint-dir", default=None, help="default: $CLIPDEMO_CHECKPOINT_DIR (caches in .cache/)")
        p.set_defaults(run=cmd_cache, all=False)


def add_zero_shot(sub) -> None:
    zs = sub.add_parser("zero-shot", help="rank labels for images with any CLIP or SigLIP model")
    zs.add_argument("images", nargs="+", metavar="IMAGE")
    zs.add_argument("--labels", required=True, help='comma- or newline-separated, e.g. "cat, dog, a red car"')
    add_model(zs)
    zs.add_argument("--templates", default="photo", help=f"{' | '.join(TEMPLATE_SETS)} | a custom template with {{}}")
    zs.add_argument("--top-k", type=int, default=None)
    zs.add_argument(
        "--multi-label",
        action="store_true",
        help="each label scored on its own (SigLIP: its sigmoid; CLIP: the cosine similarity)",
    )
    zs.add_argument("--open-set", action="store_true", help="say 'none of these' below the family's default threshold")
    zs.add_argument(
        "--threshold",
        type=_unit_float,
        default=None,
        help="'none of these' when no label reaches it (SigLIP: a probability; CLIP: a cosine similarity)",
    )
    zs.add_argument("--compare", default=None, metavar="MODEL", help="a second model, answered side by side")
    zs.add_argument("--matrix", default=None, metavar="PNG", help="write the image x label heatmap here")
    zs.add_argument("--where", default=None, metavar="LABEL", help="write a relevancy map of this label per image")
    zs.add_argument("--where-dir", default=".", help="folder for the relevancy maps (IMAGE.where.png)")
    add_device(zs)
    zs.set_defaults(run=cmd_zero_shot)


def add_search(sub) -> None:
    se = sub.add_parser("search", help="rank a folder's images by similarity to a text or an image")
    add_model(se)
    se.add_argument(
        "--images", required=True, help="a folder of images (any depth; non-images are skipped and counted)"
    )
    se.add_argument("--query", required=True, help="text to look for, or the path of an image to search by example")
    se.add_argument("--top-k", type=int, default=None, help="keep the best K (default: every image)")
    add_device(se)
    se.set_defaults(run=cmd_search)


def add_demo_data(sub) -> None:
    demo = sub.add_parser("demo-data", help="write the built-in shapes dataset as an image folder")
    demo.add_argument("--out", required=True)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=cmd_demo_data)


def add_train(sub) -> None:
    """``train scratch`` and ``train head``: their choices are the ones ``pipeline.train_options`` accepts."""
    train = sub.add_parser("train", help="train a scratch CLIP or a Cars head")
    if sub.chosen != "train":
        return
    from clipdemo.data.splits import PROTOCOLS
    from clipdemo.heads.specs import DEFAULT_HEAD, HEADS
    from clipdemo.scratch.config import PRESETS

    train = train.add_subparsers(dest="what", required=True)
    scratch = train.add_parser("scratch", help="a CLIP from scratch (ViT + byte-level text transformer)")
    scratch.add_argument("--data", required=True, help="'shapes', an image folder, or a HF dataset id")
    scratch.add_argument("--config", default=None, help="HF dataset config, e.g. mini or full for Pokemon")
    scratch.add_argument("--preset", default="default", choices=list(PRESETS))
    add_training_options(scratch, family=SCRATCH)
    scratch.set_defaults(run=cmd_train_scratch)

    head = train.add_parser("head", help="a head over a frozen CLIP, e.g. for Stanford Cars")
    head.add_argument(
        "--data", required=True, help="a Stanford Cars devkit folder, an image folder, or a HF dataset id"
    )
    head.add_argument("--config", default=None)
    head.add_argument("--backbone", default=default_model(), help="Hub id, HF folder or scratch checkpoint")
    head.add_argument("--head", default=DEFAULT_HEAD, choices=list(HEADS))
    head.add_argument(
        "--split",
        default="tutorial",
        choices=list(PROTOCOLS),
        help="tutorial: 5%% of train held out (random_state=3); official: the test split",
    )
    add_training_options(head, family=CARS_HEAD)
    head.set_defaults(run=cmd_train_head)


def add_eval(sub) -> None:
    ev = sub.add_parser("eval", help="held-out metrics of a checkpoint as one JSON line")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--data", required=True)
    ev.add_argument("--config", default=None)
    ev.add_argument(
        "--split",
        default="test",
        help="a split of the data, 'held-out' (what training scored without a test split); heads: 'tutorial'",
    )
    add_device(ev)
    ev.set_defaults(run=cmd_eval)


def add_versions(sub) -> None:
    for name, fn, help_ in (
        ("versions", cmd_versions, "list checkpoint versions"),
        ("promote", cmd_promote, "serve a version"),
        ("rollback", cmd_rollback, "serve the previous one"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("family", choices=list(FAMILIES))
        if name == "promote":
            p.add_argument("version", help="a version name (see: versions), or a checkpoint folder written with --out")
        p.set_defaults(run=fn)


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=default_model(), help="Hub id, local HF folder or scratch checkpoint folder")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=list(DEVICES))


def add_training_options(p: argparse.ArgumentParser, family: str) -> None:
    p.add_argument(
        "--out",
        default=None,
        help=f"checkpoint folder (default: a new version under $CLIPDEMO_CHECKPOINT_DIR/{family})",
    )
    p.add_argument("--label", default="cli", help="suffix of the version folder name")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None, help="wall-clock budget")
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    p.add_argument("--promote", action="store_true", help="serve the result in the app once trained")


def check_args(args) -> None:
    """Values argparse lets through but no command can use: refused before any work, in one sentence (a training
    run's own options are checked by ``pipeline.train_options``, the same for the Admin tab)."""
    top_k = getattr(args, "top_k", None)
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k must be at least 1 (got {top_k}).")
    label = getattr(args, "label", None)
    if label is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", label):
        raise UserError(f"--label must be 1 to 40 letters, digits, '.', '_' or '-' (got {label!r}).")


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, not {text[:20]!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        check_environment()
        check_args(args)
        result = args.run(args)
    except UserError as e:
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
