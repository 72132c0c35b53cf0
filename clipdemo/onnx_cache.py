"""The ONNX export cache's layout and its sessions, without torch: a process can start its towers' sessions while
it imports torch.

ONNX Runtime builds a session (graph optimisation, weight prepacking) without holding the GIL, so a session built in
a thread overlaps ``import torch`` on the other core: a zero-shot CLI run (24 images x 10 labels) with a cached
ViT-B/32 export took 2.6 s with the two after each other and 2.3 s overlapped.

- ``cache_dir()``, ``cache_key(...)``, ``export_folder(...)``: where each export lives (``clipdemo.onnx_engine``
  writes them there).
- ``new_session(model, threads)``: the one way a session is built.
- ``preload(kind, spec, precision)``: starts building both towers' sessions in a thread when they are cached;
  ``take(model, threads)`` hands one over (waiting for it) if it has the thread count the caller wants.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from concurrent.futures import Future
from pathlib import Path

from clipdemo import engines, settings

log = logging.getLogger(__name__)

EXPORT_VERSION = 1  # bump when the exported graphs change: old cache entries are then ignored
OPSET = 17
TOWERS = ("image", "text")
HF_CLIP = "hf-clip"  # the kind of a transformers CLIP's exports


def cache_dir() -> Path:
    return settings.Settings.from_env().cache_dir / "onnx"


def cache_key(name: str, fingerprint: str, precision: str) -> str:
    blob = json.dumps(
        {
            "v": EXPORT_VERSION,
            "name": name,
            "weights": fingerprint,
            "precision": precision,
            "opset": OPSET,
            # from the installed packages' metadata: a cached start imports neither transformers' models nor more
            "torch": _version("torch"),
            "transformers": _version("transformers"),
            "onnxruntime": _version("onnxruntime"),
        }
    )
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # onnxruntime-gpu and the like install the module under another name
        return getattr(__import__(package), "__version__", "?")


def export_folder(name: str, fingerprint: str, precision: str, root: Path | None = None) -> Path:
    return (root or cache_dir()) / f"{name}-{cache_key(name, fingerprint, precision)}"


def new_session(model: Path, threads: int, spinning: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No spinning: ORT's workers otherwise busy-wait after each run on the cores that the request's next steps
    # (decode, preprocessing, scoring, Gradio) need. On the ViT-B/32-shaped image tower with 2 cores, a new-image
    # call took 132 ms with spinning off vs 207 ms on (load 5; the issue 25 notes measured 77 vs 101-115 ms idle);
    # bench/zero_shot_latency.py interleaves both (``spinning=True`` is there for it).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


# --- sessions started early -------------------------------------------------------------------------------

_preloaded: dict[Path, tuple[int, Future]] = {}
_preloaded_lock = threading.Lock()


def preload(kind: str, spec: str, precision: str) -> None:
    """Start building the sessions of ``spec``'s cached towers in a thread (nothing when they are not cached, or
    ONNX Runtime is missing), with the threads PyTorch will most likely pick (this process's cores); ``take``
    hands them over. Never raises: at worst the session is built again when it is needed."""
    try:
        from clipdemo.fingerprints import backbone_fingerprint

        fingerprint = backbone_fingerprint(spec)
        models = [export_folder(f"{kind}-{tower}", fingerprint, precision) / "model.onnx" for tower in TOWERS]
        if fingerprint is None or not all(m.is_file() for m in models):
            return
        import onnxruntime  # noqa: F401
    except Exception:
        return
    threads = len(os.sched_getaffinity(0))
    for model in models:
        future: Future = Future()
        with _preloaded_lock:
            _preloaded[model] = (threads, future)
        threading.Thread(target=_build, args=(future, model, threads), name="onnx-preload", daemon=True).start()


def preload_for_cpu(spec: str | None, device: str = "auto") -> None:
    """``preload`` for a HF CLIP that the ONNX engine will run on a CPU at this process's settings, by the rule the
    encoder follows (``clipdemo.engines``; the CLI calls it before it imports torch). ``device`` ``auto`` may turn
    out to be a GPU, where PyTorch runs the model and the sessions are never taken: a one-shot process loses a
    little work, no result."""
    if device == "cuda":
        return
    precision, engine = engines.planned("cpu", engines.precision_for("cpu", int8=True))
    if engine == "onnx":
        preload(HF_CLIP, spec or settings.default_model(), precision)


def _build(future: Future, model: Path, threads: int) -> None:
    try:
        future.set_result(new_session(model, threads))
    except Exception as e:  # the caller builds it again, and reports what is wrong then
        future.set_exception(e)


def take(model: Path, threads: int):
    """The session ``preload`` started for ``model`` (waiting for it to be built), if it has ``threads`` intra-op
    threads and was built; otherwise None (dropped: the caller builds its own)."""
    with _preloaded_lock:
        threads_and_future = _preloaded.pop(model, None)
    if threads_and_future is None:
        return None
    built_with, future = threads_and_future
    if built_with != threads or future.exception() is not None:
        log.debug("preloaded session for %s not used (%d threads, %d wanted)", model, built_with, threads)
        return None
    return future.result()
