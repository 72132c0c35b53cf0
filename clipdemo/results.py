"""What training and evaluation return: small dataclasses that carry everything callers need (metrics with
their confusion matrix, class names, the split plan, skipped files), so nobody re-reads a checkpoint to
get them. ``to_json()`` is the CLI's last line and the Admin job's result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clipdemo.evaluate import Scores


@dataclass
class TrainResult:
    family: str  # clipdemo.families
    checkpoint: Path
    class_names: list[str]
    metrics: Scores  # on the plan's evaluation part, with the weights that were saved
    split: dict  # SplitPlan.card(): protocol, seed, description, leak, sizes
    skipped: dict[str, int]  # unreadable images per plan part (train, validation, evaluation, extras)
    run: dict  # how training went: best_val_acc, best_epoch, epochs_run, steps, stopped, seconds, ...
    zeroshot: Scores | None = None  # heads: zero-shot CLIP on the same evaluation images
    extra: dict[str, Scores] = field(default_factory=dict)  # evaluation-only splits, e.g. shapes' "unseen"

    @property
    def stopped(self) -> str:
        """ "finished", "time budget", "cancelled", …: only a finished run is promoted."""
        return str(self.run.get("stopped", "finished"))

    @property
    def leak(self) -> str:
        return self.split.get("leak", "")

    def to_json(self) -> dict:
        out = {"checkpoint": str(self.checkpoint), **self.metrics.summary()}
        if self.zeroshot is not None:
            out["zeroshot"] = self.zeroshot.summary()
        out.update(self.run)
        out.update(split=self.split.get("protocol"), leak=self.leak, skipped=dict(self.skipped))
        out["copies"] = [list(p) for p in self.split.get("pairs", [])]  # (copy, original), the first few
        if self.extra:
            out["extra"] = {name: scores.summary() for name, scores in self.extra.items()}
        return out


@dataclass
class EvalResult:
    metrics: Scores
    split: str  # the dataset split that was scored ("held-out" for a part carved from train)
    skipped: int  # unreadable images left out
    leak: str = ""  # "WARNING: ..." when the split overlapped training, and what was scored instead
    overlap: int = 0  # images of the asked split that were copies of training images
    copies: list = field(default_factory=list)  # (copy, original) names of the first few of them

    def to_json(self) -> dict:
        return {
            **self.metrics.summary(),
            "split": self.split,
            "skipped": self.skipped,
            "leak": self.leak,
            "overlap": self.overlap,
            "copies": [list(p) for p in self.copies],
        }
