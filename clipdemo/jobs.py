"""Background training jobs for the admin tab: one at a time, cancellable, each into a new version folder.

``JobRunner(checkpoint_dir, data_root=...)`` runs a training function (the scratch CLIP or a Cars head) in a
child process (``multiprocessing`` spawn) at lower priority (``os.nice(+10)``) with a bounded number of torch
threads, so the server's requests keep their cores and its GIL while the training still uses what is idle. The
child streams progress events, log lines, its log records and the result back over a pipe; a thread in the server
records what the UI needs to show (progress events, a bounded log tail, ETA, state, final metrics) and
``snapshot()`` hands all of it over, so a reloaded page picks the running job back up. A trainer must therefore
be importable by name (``pipeline.train`` for a family, or a module-level test double such as
``clipdemo.testing.fake_trainer``).

Safety rules, in one place:

- one job at a time: a second ``start`` raises ``BusyError``;
- cancel sets a flag the trainer polls between steps, so it stops cleanly and keeps the checkpoint it finished; a
  child that has not stopped ``cancel_grace_s`` seconds later is terminated, then killed (its saves are atomic);
- the options are checked once, by ``pipeline.train_options`` (the CLI's checker, so the same sentence for the same
  mistake), and a Cars head only on ``allowed_backbones`` (the app's own models); the trainer trusts them;
- the dataset spec is checked before anything starts: the built-in ``shapes``, a Hugging Face dataset id, or a
  folder under ``data_root``; any other path, ``..`` or a link out of the data root is refused;
- each run writes into a NEW version folder (``checkpoints.claim_version``, held until the job ends) and the
  training function writes atomically; nothing is ever promoted here (promotion is a separate, explicit
  action), so a failed or cancelled run leaves what is served, and every other version, untouched. A failed
  run's half-written folder is removed; a cancelled run keeps the checkpoint it had finished, listed but not served;
- a failure is kept as one short sentence; the traceback goes to the server log only (a child that dies without
  a word, killed for memory for example, is one too).

Nothing here imports gradio: the CLI can drive the same runner.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import re
import shutil
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from clipdemo import pipeline
from clipdemo.checkpoints import CheckpointError, Claim, claim_version, load_checkpoint, read_card
from clipdemo.data.sources import SourcePolicy, resolve_source
from clipdemo.errors import UserError, first_line
from clipdemo.families import FAMILIES
from clipdemo.pipeline import TrainOptions
from clipdemo.progress import ProgressEvent
from clipdemo.results import TrainResult

log = logging.getLogger(__name__)

MAX_HISTORY = 20_000  # progress events kept for the curves
LOG_LINES = 200  # the log tail a job keeps
LOG_EVERY_S = 2.0  # at most one "train" log line per this many seconds (eval/done/messages always)
NICE = 10  # the training child's niceness: a request always runs before it, idle cores still go to it
CANCEL_GRACE_S = 30.0  # after a cancel, how long a trainer gets to reach its next step before it is terminated
_SPAWN = multiprocessing.get_context("spawn")  # no fork of a server holding threads, sockets and models

# A trainer: (dataset, out_dir, options, progress=, should_stop=, cache_dir=) -> TrainResult; by default
# ``clipdemo.pipeline.train`` for the job's family (tests put doubles in its place).
Trainer = Callable[..., TrainResult]


class JobError(UserError):
    """A job can't be started or acted on; the message is one sentence fit to show an admin."""


class BusyError(JobError):
    """A job is already running."""


def version_label(spec: str) -> str:
    """A short, safe version-name suffix from a dataset spec: '/data/My Pets' -> 'my-pets'."""
    name = re.sub(r"[^a-z0-9]+", "-", Path(str(spec).rstrip("/\\")).name.lower()).strip("-")
    return name[:24].strip("-") or "run"


def short_error(error: BaseException) -> str:
    """One sentence an admin can act on; unexpected errors say only where to look."""
    if isinstance(error, UserError):
        text = first_line(error, limit=None)
        return text if len(text) <= 300 else text[:299] + "…"
    if isinstance(error, OSError) and error.strerror:  # disk full, permissions: actionable, paths left out
        return f"Training failed: {error.strerror} ({type(error).__name__})."
    return f"Training failed with an internal error ({type(error).__name__}); the details are in the server log."


# --- the runner ----------------------------------------------------------------------------------------------


@dataclass
class Job:
    id: int
    family: str  # clipdemo.families: what it trains, and the checkpoint folder it writes into
    dataset: str
    options: TrainOptions
    out_dir: Path
    started: float = field(default_factory=time.time)
    state: str = "running"  # running | finished | failed | cancelled
    ended: float | None = None
    history: deque = field(default_factory=lambda: deque(maxlen=MAX_HISTORY))
    log: deque = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    last: dict = field(default_factory=dict)
    result: dict | None = None
    error: str | None = None
    kept: bool = False  # a cancelled run's checkpoint was kept (never served)
    claim: Claim | None = None  # no other run may write out_dir while this job runs
    stop: object = field(default_factory=_SPAWN.Event)  # set by cancel; the child's trainer polls it
    thread: threading.Thread | None = None  # the server's thread that watches the child
    process: object = None  # the child process (multiprocessing spawn)
    cancelled_at: float | None = None
    terminated: bool = False  # sent SIGTERM after the grace period (SIGKILL follows 5 s later)
    last_log: float = 0.0


class JobRunner:
    """Runs at most one training job at a time in a child process; see the module docstring."""

    def __init__(
        self,
        checkpoint_dir,
        data_root=None,
        *,
        trainers: dict[str, Trainer] | None = None,
        allowed_backbones=None,
        cache_dir=None,
        log_lines: int = LOG_LINES,
        threads: int | None = None,
        cancel_grace_s: float = CANCEL_GRACE_S,
    ):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.data_root = Path(data_root) if data_root else None
        self.trainers = {**{f: functools.partial(pipeline.train, f) for f in FAMILIES}, **(trainers or {})}
        self.allowed_backbones = list(allowed_backbones) if allowed_backbones is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.log_lines = log_lines
        self.threads = threads or train_threads()
        self.cancel_grace_s = cancel_grace_s
        self._lock = threading.Lock()
        self._job: Job | None = None
        self._ids = 0

    @classmethod
    def from_settings(cls, settings, **kwargs) -> JobRunner:
        """The app's runner: checkpoints and data root from the settings; Cars heads only on the app's models."""
        kwargs.setdefault("cache_dir", Path(settings.checkpoint_dir) / ".cache")  # hidden: not a family
        return cls(
            settings.checkpoint_dir,
            settings.data_root,
            allowed_backbones=[settings.model, *settings.extra_models],
            **kwargs,
        )

    # -- actions

    def start(self, family: str, dataset: str, *, config: str | None = None, **options) -> dict:
        """Check everything, then start training on a background thread; return the snapshot.

        ``options``: ``pipeline.TrainOptions`` fields (scratch: preset, epochs, max_seconds, seed, batch_size;
        cars-head: backbone, head, epochs, split, seed), None meaning the default, checked once by
        ``pipeline.train_options`` (a Cars head only on ``allowed_backbones``). Raises ``BusyError`` while a job
        runs, ``OptionError``/``DataError`` for bad input, in both cases before anything is written.
        """
        with self._lock:
            running = self._job if self._job and self._job.state == "running" else None
            if running:
                raise BusyError(
                    f"A training job is already running ({running.family} on {running.dataset}, started "
                    f"{_clock(running.started)}); cancel it or wait for it to finish."
                )
            opts = pipeline.train_options(family, backbones=self.allowed_backbones, **options)
            resolve_source(dataset, config, SourcePolicy.confined(self.data_root))  # checked here; loaded in the child
            self._ids += 1
            claim = claim_version(self.checkpoint_dir, family, version_label(dataset))
            out_dir = claim.folder
            job = Job(self._ids, family, dataset.strip(), opts, out_dir, log=deque(maxlen=self.log_lines), claim=claim)
            self._job = job
        self._log(job, f"started {family} training on {job.dataset} into version {out_dir.name}", force=True)
        log.info("job %d: %s on %s -> %s (%s)", job.id, family, job.dataset, out_dir, opts)
        try:
            conn = self._spawn(job, config)
            job.thread = threading.Thread(target=self._watch, args=(job, conn), name=f"clipdemo-job-{job.id}")
            job.thread.daemon = True
            job.thread.start()
        except Exception:  # no process or thread to be had: say so instead of showing "running" forever
            log.exception("job %d could not start", job.id)
            if job.process is not None and job.process.is_alive():
                job.process.kill()
            self._end(job, "failed", "The training process could not be started; see the server log.")
        return self.snapshot()

    def _spawn(self, job: Job, config: str | None):
        """Start the child that trains ``job``; return the server's end of its pipe."""
        ours, theirs = _SPAWN.Pipe(duplex=False)
        job.process = _SPAWN.Process(
            target=_child,
            args=(theirs, self.trainers[job.family], job.dataset, config, self.data_root)
            + (job.out_dir, job.options, self.cache_dir, job.stop, self.threads),
            name=f"clipdemo-job-{job.id}",
            daemon=True,  # ends with the server
        )
        try:
            job.process.start()
        finally:
            theirs.close()  # the child holds its own copy: the pipe reads EOF when the child is gone
        return ours

    def cancel(self) -> str:
        """Ask the running job to stop (its trainer polls the flag between steps); return what happened."""
        job = self._job
        if job is None or job.state != "running":
            return "No training job is running."
        job.stop.set()
        job.cancelled_at = job.cancelled_at or time.monotonic()
        self._log(job, "cancel requested; stopping after the current step", force=True)
        return f"Cancelling the {job.family} job on {job.dataset}; it stops after the current step."

    def wait(self, timeout: float | None = None) -> dict:
        """Block until the current job (if any) ends or ``timeout`` passes; return the snapshot."""
        job = self._job
        if job and job.thread:
            job.thread.join(timeout)
        return self.snapshot()

    @property
    def busy(self) -> bool:
        return bool(self._job and self._job.state == "running")

    # -- what the UI shows

    def snapshot(self) -> dict:
        """A copy of everything the UI shows about the current (or last) job; ``{"state": "idle"}`` if none."""
        job = self._job
        if job is None:
            return {"state": "idle"}
        with self._lock:
            last = dict(job.last)
            snap = {
                "id": job.id,
                "family": job.family,
                "dataset": job.dataset,
                "options": asdict(job.options),
                "version": job.out_dir.name,
                "state": job.state,
                "started": _clock(job.started),
                "elapsed_s": round((job.ended or time.time()) - job.started, 1),
                "history": list(job.history),
                "log": list(job.log),
                "error": job.error,
                "kept": job.kept,
                "result": dict(job.result) if job.result else None,
                "stopping": job.stop.is_set(),
            }
        for key in (
            "phase",
            "step",
            "total_steps",
            "epoch",
            "epochs",
            "loss",
            "val_acc",
            "message",
            "split",
            "done",
            "total",
        ):
            snap[key] = last.get(key)
        snap["eta_s"] = last.get("eta_s", last.get("eta")) if job.state == "running" else None
        return snap

    # -- the server's thread that watches the child

    def _watch(self, job: Job, conn) -> None:
        """Record what the child sends until it ends, then settle the job's state; never raises."""
        outcome = None
        try:
            while outcome is None:  # its result or error is its last word: settled at once, not after its exit
                self._stop_overdue(job)
                if not conn.poll(0.25):
                    if not job.process.is_alive():
                        break
                    continue
                kind, *payload = conn.recv()  # EOFError once the child and its copy of the pipe are gone
                if kind == "progress":
                    self._progress(job, payload[0])
                elif kind == "log":
                    self._log(job, payload[0], force=True)
                elif kind == "record":
                    logging.getLogger(payload[0]).log(payload[1], "%s", payload[2])
                else:
                    outcome = (kind, *payload)
        except EOFError:
            pass
        except Exception:
            log.exception("job %d: lost touch with its process", job.id)
            job.process.kill()
        finally:
            conn.close()
        if outcome is None:
            job.process.join(10)  # its exit code, for the log
        self._settle(job, outcome)
        job.process.join(30)
        if job.process.is_alive():  # said its last word but does not exit
            log.warning("job %d: its process did not exit after its result; killed", job.id)
            job.process.kill()
            job.process.join()

    def _stop_overdue(self, job: Job) -> None:
        """A cancelled child that has not stopped after the grace period: terminate it, then kill it."""
        if job.cancelled_at is None:
            return
        late = time.monotonic() - job.cancelled_at - self.cancel_grace_s
        if late >= 5:
            job.process.kill()
        elif late >= 0 and not job.terminated:
            log.warning("job %d did not stop %.0f s after cancel; ending its process", job.id, self.cancel_grace_s)
            job.process.terminate()
            job.terminated = True

    def _settle(self, job: Job, outcome: tuple | None) -> None:
        kind = outcome[0] if outcome else None
        if kind == "result":
            with self._lock:  # the numbers, the class names and the confusion matrix for the results panel
                job.result = outcome[1]
            self._end(job, "cancelled" if job.stop.is_set() or outcome[2] == "cancelled" else "finished")
        elif job.stop.is_set():
            self._end(job, "cancelled")
        elif kind == "error":
            log.warning("job %d (%s on %s) failed:\n%s", job.id, job.family, job.dataset, outcome[2])
            self._end(job, "failed", outcome[1])
        else:
            code = job.process.exitcode
            log.warning(
                "job %d (%s on %s): its process ended without a result (exit code %s)",
                job.id,
                job.family,
                job.dataset,
                code,
            )
            self._end(job, "failed", f"The training process ended unexpectedly (exit code {code}); see the server log.")

    def _end(self, job: Job, state: str, error: str | None = None) -> None:
        kept = False
        if state == "failed":
            shutil.rmtree(job.out_dir, ignore_errors=True)  # our own fresh folder: nothing else is touched
        elif state == "cancelled":
            kept = _loads(job.out_dir)
            if not kept:
                shutil.rmtree(job.out_dir, ignore_errors=True)
        with self._lock:
            job.state, job.error, job.kept, job.ended = state, error, kept, time.time()
            if state == "cancelled" and kept and job.result is None:
                job.result = _card_metrics(job.out_dir)
        if job.claim:
            job.claim.release()
        line = {
            "finished": f"finished: version {job.out_dir.name} is ready to promote",
            "failed": f"failed: {error}",
            "cancelled": f"cancelled; its checkpoint so far is kept as version {job.out_dir.name} (not served)"
            if kept
            else "cancelled; no checkpoint was kept",
        }[state]
        self._log(job, line, force=True)
        log.info("job %d %s", job.id, line)

    def _progress(self, job: Job, event: dict) -> None:
        phase = event.get("phase")
        with self._lock:
            new_phase = phase != job.last.get("phase") or event.get("split") != job.last.get("split")
            job.history.append(event)
            job.last.update({k: v for k, v in event.items() if v is not None})
        if phase != "done":  # the end gets its own line from _end
            # every evaluation, message and change of phase is logged; training steps at most every few seconds
            self._log(job, log_line(event), force=phase == "eval" or new_phase or bool(event.get("message")))

    def _log(self, job: Job, line: str, force: bool = False) -> None:
        now = time.time()
        with self._lock:
            if force or now - job.last_log >= LOG_EVERY_S:
                job.log.append(f"{datetime.now().strftime('%H:%M:%S')} {line}")
                job.last_log = now


def log_line(event: dict) -> str:
    """One log line for a progress event: training steps show the loss, evaluations the accuracy."""
    epoch = f"epoch {event['epoch']}/{event.get('epochs') or '?'}" if event.get("epoch") is not None else ""
    if event.get("phase") == "encode" and event.get("total"):
        parts = [f"encoding {event.get('split') or 'images'}: {event.get('done', 0)}/{event['total']}"]
    elif event.get("phase") == "eval" and isinstance(event.get("val_acc"), (int, float)):
        parts = [epoch, f"validation accuracy {100 * event['val_acc']:.1f}%"]
    else:
        parts = [
            epoch,
            f"step {event['step']}/{event.get('total_steps') or '?'}" if event.get("step") is not None else "",
            f"loss {event['loss']:.4f}" if isinstance(event.get("loss"), (int, float)) else "",
            f"val acc {100 * event['val_acc']:.1f}%"
            if event.get("phase") is None and isinstance(event.get("val_acc"), (int, float))
            else "",
        ]
    return " ".join(p for p in parts + [str(event.get("message") or "")] if p)


def _loads(folder: Path) -> bool:
    try:
        load_checkpoint(folder)
        return True
    except CheckpointError:
        return False


def _card_metrics(folder: Path) -> dict | None:
    try:
        card = read_card(folder)
    except CheckpointError:
        return None
    metrics = dict(card.get("metrics") or {})
    return {**metrics, "class_names": card.get("classes")} if metrics else None


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- the child process ---------------------------------------------------------------------------------------


def train_threads() -> int:
    """Torch threads for a training child: one core left to the server's requests, the rest to training.

    Measured on 2 shared cores (bench/train_while_serving.py, load average 5): at nice +10, two threads trained at
    0.6 steps/s, one at 11.7, because a team of spinning OpenMP threads stalls whenever the scheduler lets one of
    them wait; requests were no slower with one thread (the child at nice +10 yields to them either way)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


def _child(conn, trainer, spec, config, data_root, out_dir, options, cache_dir, stop, threads) -> None:
    """The training process: low priority, bounded threads; everything it has to say goes through ``conn``."""
    os.nice(NICE)
    import torch

    torch.set_num_threads(threads)
    lock = threading.Lock()  # log records may come from the trainer's other threads

    def send(message: tuple) -> None:
        with lock:
            conn.send(message)

    root = logging.getLogger()
    root.handlers[:], root.level = [_PipeHandler(send)], logging.INFO
    try:
        send(("log", "loading the dataset"))
        dataset = resolve_source(spec, config, SourcePolicy.confined(data_root))()
        send(
            ("log", f"dataset: {getattr(dataset, 'source', spec)}, {len(getattr(dataset, 'class_names', []))} classes")
        )
        result = trainer(
            dataset,
            out_dir,
            options,
            progress=lambda e: send(("progress", e.to_dict() if isinstance(e, ProgressEvent) else dict(e))),
            should_stop=stop.is_set,
            cache_dir=cache_dir,
        )
        done = {**result.to_json(), "class_names": list(result.class_names), "confusion": result.metrics.confusion}
        send(("result", done, result.stopped))
    except BaseException as e:  # the server shows one sentence and logs the traceback
        send(("error", short_error(e), traceback.format_exc()))
    finally:
        conn.close()


class _PipeHandler(logging.Handler):
    """The child's log records, sent to the server's log under their own logger names."""

    def __init__(self, send: Callable[[tuple], None]):
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.send(("record", record.name, record.levelno, self.format(record)))
        except Exception:  # the server is gone: nothing left to tell
            pass
