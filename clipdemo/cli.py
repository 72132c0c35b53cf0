"""Command line: ``python -m clipdemo COMMAND …``, thin over the same library functions as the app.

    python -m clipdemo zero-shot --model openai/clip-vit-base-patch32 --labels "cat, dog" photo.jpg
    python -m clipdemo demo-data --out data/shapes

Results go to stdout, the last line being JSON; errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import sys

from clipdemo.checkpoints import CheckpointError
from clipdemo.encoders import ModelUnavailable, default_model
from clipdemo.images import ImageError
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
    return parser


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
