"""The two kinds of thing clipdemo trains, named once.

A family is a folder under the checkpoint directory (``<dir>/<family>/<version>/``), a training job's kind,
and an Admin choice: ``scratch`` (the Pokemon tab's CLIP) and ``cars-head`` (the Cars tab's head). A checkpoint's
``config.json`` records its ``kind``: ``scratch-clip``, or ``clip-head`` for every head over a frozen CLIP (the
Cars tab's, and a Your-classes head downloaded from the app). Heads written before that name existed say
``cars-head``; ``canonical_kind`` reads them as ``clip-head``, so they still load.
"""

from __future__ import annotations

SCRATCH = "scratch"  # a CLIP trained from scratch (ViT + byte-level text transformer)
CARS_HEAD = "cars-head"  # the Stanford Cars head the Cars tab serves
FAMILIES = (SCRATCH, CARS_HEAD)

SCRATCH_KIND = "scratch-clip"
HEAD_KIND = "clip-head"  # a head over a frozen CLIP's image embeddings (``clipdemo.heads``), whatever its classes
CHECKPOINT_KIND = {SCRATCH: SCRATCH_KIND, CARS_HEAD: HEAD_KIND}
FAMILY_OF_KIND = {SCRATCH_KIND: SCRATCH, HEAD_KIND: CARS_HEAD}
_EARLIER_NAMES = {"cars-head": HEAD_KIND}


def canonical_kind(kind):
    """A checkpoint kind as this version names it (``cars-head`` heads are ``clip-head`` heads)."""
    return _EARLIER_NAMES.get(kind, kind)
