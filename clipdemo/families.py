"""The two kinds of thing clipdemo trains, named once.

A family is a folder under the checkpoint directory (``<dir>/<family>/<version>/``), a training job's kind,
and an Admin choice. ``CHECKPOINT_KIND`` is what each family's ``config.json`` records as ``kind`` (kept as
written by earlier versions, so shipped checkpoints still load).
"""

from __future__ import annotations

SCRATCH = "scratch"  # a CLIP trained from scratch (ViT + byte-level text transformer)
CARS_HEAD = "cars-head"  # a head over a frozen CLIP's image embeddings
FAMILIES = (SCRATCH, CARS_HEAD)
CHECKPOINT_KIND = {SCRATCH: "scratch-clip", CARS_HEAD: "cars-head"}
FAMILY_OF_KIND = {kind: family for family, kind in CHECKPOINT_KIND.items()}
