"""Progress events of the training and encoding functions, and the one console adapter that draws them.

Training code reports with plain keyword dicts (``report({"phase": "train", "step": 3, ...})``); ``typed``
turns each into a ``ProgressEvent`` before a consumer sees it, so a misspelt key fails at once in tests
instead of silently showing nothing. Consumers (the CLI's bars, the Admin job runner) read attributes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ProgressEvent:
    phase: str  # "encode" (images through a frozen model), "train" (a step), "eval" (validation), "done"
    # encode
    split: str | None = None  # which dataset split is being encoded or decoded
    done: int | None = None
    total: int | None = None
    skipped: int | None = None  # unreadable images so far
    cached: bool | None = None  # read from the on-disk cache, nothing ran
    # train / eval / done
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    lr: float | None = None
    val_acc: float | None = None
    best_val_acc: float | None = None
    test_acc: float | None = None
    elapsed: float | None = None  # seconds since the run started
    eta: float | None = None  # seconds left, estimated
    samples_per_s: float | None = None
    message: str | None = None  # a line for the log (a leak warning, skipped files)

    def to_dict(self) -> dict:
        """The fields that are set (JSON-friendly)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


Progress = Callable[[ProgressEvent], None]
_FIELDS = frozenset(f.name for f in fields(ProgressEvent))


def typed(progress: Progress | None) -> Callable[[dict], None]:
    """A ``report(dict)`` for training code that hands ``progress`` a ``ProgressEvent`` (or does nothing)."""
    if progress is None:
        return lambda info: None

    def report(info: dict) -> None:
        progress(info if isinstance(info, ProgressEvent) else ProgressEvent(**info))

    return report


class ConsoleProgress:
    """tqdm bars on stderr: one per encoded split, one for training steps; messages printed as lines.

    Silent where stderr is not a terminal (``disable=None``), except messages, which always print.
    """

    def __init__(self, desc: str = "training", file=None):
        self.desc, self.file = desc, file or sys.stderr
        self.bars: dict = {}

    def __call__(self, event: ProgressEvent) -> None:
        from tqdm.auto import tqdm

        if event.message:
            print(event.message, file=self.file)
        if event.phase == "encode" and event.total:
            key = f"encode:{event.split}"
            bar = self.bars.get(key)
            if bar is None:
                desc = f"reading {event.split or 'images'}" + (" (cached)" if event.cached else "")
                bar = self.bars[key] = tqdm(total=event.total, desc=desc, unit="img", disable=None, file=self.file)
            bar.update((event.done or 0) - bar.n)
            if event.skipped:
                bar.set_postfix(skipped=event.skipped)
            if (event.done or 0) >= event.total:
                bar.close()
        elif event.phase in ("train", "eval") and event.total_steps:
            bar = self.bars.get("train")
            if bar is None:
                bar = self.bars["train"] = tqdm(
                    total=event.total_steps,
                    desc=self.desc,
                    unit="step",
                    disable=None,
                    file=self.file,
                    dynamic_ncols=True,
                )
            if bar.total != event.total_steps:  # a time budget re-estimates the total
                bar.total = event.total_steps
            bar.update((event.step or 0) - bar.n)
            shown = {"epoch": event.epoch, "loss": event.loss, "val_acc": event.val_acc}
            bar.set_postfix({k: round(v, 4) if isinstance(v, float) else v for k, v in shown.items() if v is not None})
        elif event.phase == "done":
            self.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
