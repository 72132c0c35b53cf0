"""The ONNX Runtime engine: an encoder's towers exported once to ONNX, cached on disk, run by ONNX Runtime.

On a CPU, ONNX Runtime runs the ViT-B/32 image tower about twice as fast as PyTorch eager with the same fp32
embeddings (to ~1e-6), and faster still with int8 weights (``CLIPDEMO_PRECISION=int8``, dynamic quantization;
5.8x on the AVX-512 machine). ``bench/zero_shot_latency.py`` measures both, and what int8 costs in top-1 agreement.

- ``pick_engine(device)``: ``CLIPDEMO_ENGINE`` = ``auto`` (ONNX Runtime on CPUs, PyTorch on GPUs, where
  PyTorch runs bf16 autocast and our ONNX Runtime build would not use the GPU), ``torch`` or ``onnx``.
- ``hf_clip_towers(model, spec, device, precision)``: the two towers of a transformers ``CLIPModel`` as
  ONNX Runtime sessions, or None (PyTorch runs them) when the engine is ``torch``, or when ONNX Runtime is
  missing or the export fails: that is one log line, never an error.
- The export cache (its layout and sessions in ``clipdemo.onnx_cache``, which needs no torch):
  ``<CLIPDEMO_CHECKPOINT_DIR>/.cache/onnx/<tower>-<key>/model.onnx`` and its weights file
  (on Spaces under ``/data``), the key a digest of the weights' fingerprint
  (``clipdemo.fingerprints.backbone_fingerprint``), the tower, the precision and the versions that shape the
  graph. Each export is written into a hidden temporary folder renamed into place when complete, so every
  process after the first (CLI runs, app restarts) loads it, and an export killed midway leaves no model behind. A
  cached model that no longer loads is exported again. Exports count against the caches' budget
  (``clipdemo.caches``: least recently used evicted first, never one a live session uses).
- ``cached_towers(kind, spec, precision)``: both towers straight from the cache, without the PyTorch model (what
  ``clipdemo.encoders.HFCLIPEncoder`` loads first); the key needs no model (the fingerprint, package versions), and
  the sessions are the ones ``onnx_cache.preload`` started while torch was imported (the CLI), if any.
- ``export_in_background(...)``: the server's first start exports in a low-priority child process while PyTorch
  answers (from another child, ``clipdemo.torch_worker``), then hands the sessions to a callback (the encoder
  switches and that child ends).
Training and anything needing gradients always run in PyTorch.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from clipdemo import caches, engines, onnx_cache, settings
from clipdemo.atomic import remove_stale_partials, write_folder_atomic
from clipdemo.devices import embedding
from clipdemo.errors import first_line
from clipdemo.onnx_cache import HF_CLIP, OPSET, TOWERS, cache_dir, export_folder

log = logging.getLogger(__name__)

STALE_TEMP_SECONDS = 3600  # temporary export folders older than this were left by a killed export


def pick_engine(device: torch.device, engine: str | None = None, auto_on_cpu: str = "onnx") -> str:
    """``auto``: ``auto_on_cpu`` (the back end's measured best) on a CPU, PyTorch on a GPU; ``CLIPDEMO_ENGINE``
    overrides (``clipdemo.engines``' rule)."""
    picked = engines.engine_for(device.type, engine, auto_on_cpu)
    if (engine or settings.engine()) == "onnx" and picked != "onnx":
        log.warning("the ONNX engine runs on CPUs only: the model on %s runs in PyTorch", device.type)
    return picked


def planned(device: torch.device, precision: str, engine: str | None = None, auto_on_cpu: str = "onnx"):
    """``(precision, engine)`` a model asked to run at ``precision`` on ``device`` gets when its export works."""
    return engines.planned(device.type, precision, engine, auto_on_cpu)


class OnnxTowers:
    """ONNX Runtime sessions for an encoder's towers. ``image(*inputs)`` and ``text(*inputs)`` take the tower's
    torch inputs in the order its PyTorch method does and return its output as a CPU float32 tensor."""

    def __init__(self, image, text):
        self.image_session, self.text_session = image, text

    def image(self, *inputs: torch.Tensor) -> torch.Tensor:
        return _run(self.image_session, inputs)

    def text(self, *inputs: torch.Tensor) -> torch.Tensor:
        return _run(self.text_session, inputs)


def _run(session, inputs) -> torch.Tensor:
    feeds = {spec.name: x.cpu().numpy() for spec, x in zip(session.get_inputs(), inputs)}
    return torch.from_numpy(session.run(None, feeds)[0])


class _Tower(torch.nn.Module):
    """One of ``model``'s encode methods as a module, for the exporter."""

    def __init__(self, model: torch.nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *inputs):
        return embedding(getattr(self.model, self.method)(*inputs))


_IDS = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 2]])  # example text inputs for tracing; the axes stay dynamic
_MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
_TEXT_AXES = {0: "batch", 1: "tokens"}


def hf_clip_towers(model, spec: str, device: torch.device, precision: str, engine: str | None = None):
    """``(OnnxTowers, precision)`` for a transformers ``CLIPModel`` loaded from ``spec``, or ``(None, precision)``:
    PyTorch runs it (in fp32 where int8 was asked for: int8 exists only here)."""
    v = model.config.vision_config
    return _towers(
        "hf-clip",
        spec,
        device,
        precision,
        engine,
        {
            "image": (
                _Tower(model, "get_image_features"),
                (torch.zeros(1, v.num_channels, v.image_size, v.image_size),),
                {"pixel_values": {0: "batch"}},
            ),
            "text": (
                _Tower(model, "get_text_features"),
                (_IDS, _MASK),
                {"input_ids": _TEXT_AXES, "attention_mask": _TEXT_AXES},
            ),
        },
    )


def scratch_towers(model, path, device: torch.device, precision: str, engine: str | None = None):
    """The same for a scratch CLIP (``clipdemo.scratch.model.ScratchCLIP``) loaded from the folder ``path``.

    ``auto`` keeps these in PyTorch: ONNX Runtime runs the shipped checkpoint's image tower faster too, but it is
    tiny (1.8 -> 0.4 ms at batch 1), and each new checkpoint would pay its export (~0.5 s) at its first load
    (README, Benchmarks); ``CLIPDEMO_ENGINE=onnx`` (or int8) runs them in ONNX Runtime."""
    size = model.config.image_size
    engine = pick_engine(device, engine, auto_on_cpu="onnx" if precision == "int8" else "torch")
    return _towers(
        "scratch",
        str(path),
        device,
        precision,
        engine,
        {
            "image": (
                _Tower(model, "encode_image"),
                (torch.zeros(1, 3, size, size, dtype=torch.uint8),),
                {"pixels": {0: "batch"}},
            ),
            "text": (_Tower(model, "encode_text"), (_IDS, _MASK.bool()), {"tokens": _TEXT_AXES, "mask": _TEXT_AXES}),
        },
    )


def _towers(kind: str, spec: str, device: torch.device, precision: str, engine: str | None, towers: dict):
    sessions = None
    if planned(device, precision, engine)[1] == "onnx":
        sessions = _sessions(kind, spec, precision, towers)
    if sessions is None and precision == "int8":
        log.warning("int8 runs only in the ONNX engine: %s runs in PyTorch fp32", spec)
        precision = "fp32"
    return (OnnxTowers(sessions["image"], sessions["text"]) if sessions else None), precision


def _sessions(kind: str, spec: str, precision: str, towers: dict) -> dict | None:
    from clipdemo.fingerprints import backbone_fingerprint

    fingerprint = backbone_fingerprint(spec)
    if fingerprint is None:  # nothing on disk to identify the weights by: no cache key
        log.warning("ONNX engine unavailable for %s (no model files to fingerprint): running it in PyTorch", spec)
        return None
    try:
        return {
            name: cached_session(f"{kind}-{name}", fingerprint, precision, _exporter(module, args, axes))
            for name, (module, args, axes) in towers.items()
        }
    except Exception as e:  # ONNX Runtime missing or broken, an export that fails: PyTorch still works
        log.warning("ONNX engine unavailable for %s (%s): running it in PyTorch", spec, first_line(e))
        return None


def cached_towers(kind: str, spec: str, precision: str, root: Path | None = None) -> OnnxTowers | None:
    """Both towers' sessions straight from the export cache, without building the PyTorch model (a lean process:
    no transformers model classes, no dynamo); None when either is not cached or does not load (the caller then
    loads the model, and ``cached_session`` exports again what needs it)."""
    from clipdemo.fingerprints import backbone_fingerprint

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    fingerprint = backbone_fingerprint(spec)
    names = [f"{kind}-{tower}" for tower in TOWERS]
    folders = [export_folder(name, fingerprint, precision, root) for name in names] if fingerprint else []
    if not folders or not all((f / "model.onnx").is_file() for f in folders):
        return None
    try:
        return OnnxTowers(*(_in_use(f, new_session(f / "model.onnx")) for f in folders))
    except Exception as e:
        log.warning("cached ONNX model for %s does not load (%s): exporting it again", spec, first_line(e))
        return None


# --- exports in the background ----------------------------------------------------------------------------
# A server answers its first requests in PyTorch while a child process exports the towers: at low priority (the
# requests keep the cores) and in its own memory, which goes back to the system when it exits (an export in the
# server's own process left it ~500 MB larger for good). The child dies with its parent.

_children: set = set()
_children_lock = threading.Lock()


def export_in_background(kind: str, spec: str, precision: str, done: Callable[[OnnxTowers | None], None]):
    """Start the export of ``spec``'s towers in a child process; ``done(towers or None)`` runs in a watcher
    thread when it ends (None: it failed or was stopped; the log says why)."""
    import subprocess
    import sys

    # nice before importing torch: the export's imports, too, take only the cores requests leave idle
    code = "import os; os.nice(19); from clipdemo.onnx_engine import _export_main; _export_main()"
    root = cache_dir()  # where the child writes: it gets this environment
    child = subprocess.Popen(
        [sys.executable, "-c", code, kind, spec, precision], env=settings.child_environment(), stdin=subprocess.DEVNULL
    )
    with _children_lock:
        _children.add(child)
    log.info("exporting %s to ONNX in the background (pid %d): PyTorch answers until it is done", spec, child.pid)
    start = time.monotonic()

    def watch() -> None:
        code = child.wait()
        with _children_lock:
            _children.discard(child)
        towers = cached_towers(kind, spec, precision, root) if code == 0 else None
        if towers is None:
            log.warning("background ONNX export of %s ended with code %s: it stays in PyTorch", spec, code)
        else:
            log.info("background ONNX export of %s done in %.1f s", spec, time.monotonic() - start)
        done(towers)

    threading.Thread(target=watch, name=f"onnx-export-{child.pid}", daemon=True).start()
    return child


def background_exports() -> list:
    """The export child processes still running."""
    with _children_lock:
        return list(_children)


def stop_background_exports(timeout: float = 10.0) -> None:
    """End every export child (at exit, and in tests): an export stopped midway leaves no model behind."""
    for child in background_exports():
        child.terminate()
    for child in background_exports():
        with contextlib.suppress(Exception):
            child.wait(timeout)


atexit.register(stop_background_exports)


def _export_main() -> None:
    """The export child: ``kind spec precision`` on the command line; exit code 0 when both towers are cached."""
    import sys

    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    kind, spec, precision = sys.argv[1:4]
    if kind != HF_CLIP:
        sys.exit(f"unknown model kind {kind!r}")
    towers, got = hf_clip_towers(clip_model(spec, local_files_only=True), spec, torch.device("cpu"), precision, "onnx")
    sys.exit(0 if towers is not None and got == precision else 1)


def clip_model(source: str, **hub_kwargs):
    """The PyTorch ``CLIPModel`` from a folder, the HF cache or the Hub, for inference: what an encoder and its child
    processes load (those with ``local_files_only``: their parent checked the files are there). Safetensors only: a
    repo with just pickled weights is refused, never unpickled."""
    from transformers import CLIPModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a loading bar per model is noise in the CLI and the server log
    return CLIPModel.from_pretrained(source, use_safetensors=True, **hub_kwargs).eval().requires_grad_(False)


def die_with_parent() -> None:
    """Ask Linux to end this process when its parent dies: a killed server leaves no child running (the export here,
    the PyTorch towers of ``clipdemo.torch_worker``)."""
    import ctypes
    import signal

    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _exporter(module: torch.nn.Module, args: tuple, axes: dict) -> Callable[[Path], None]:
    def export(path: Path) -> None:
        names = list(axes)
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer warnings
            warnings.simplefilter("ignore")
            # dynamo=False: the TorchScript exporter, 5x faster to export ViT-B/32 than the dynamo one (10 s vs
            # 53 s here), needs no onnxscript, and gives the same graph speed and embeddings.
            torch.onnx.export(
                module.eval(),
                args,
                str(path),
                input_names=names,
                output_names=["embedding"],
                dynamic_axes={**axes, "embedding": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )

    return export


# --- the export cache -----------------------------------------------------------------------------------


_export_lock = threading.Lock()  # one export at a time in a process (two threads loading the same model)


def cached_session(name: str, fingerprint: str, precision: str, export: Callable[[Path], None]):
    """An ONNX Runtime session for ``name``'s model, exported by ``export(path)`` on the first call (then
    quantized when ``precision`` is int8) and cached; a cached model that doesn't load is exported again."""
    import onnxruntime  # noqa: F401  (missing: fail before spending seconds on an export)

    folder = export_folder(name, fingerprint, precision)
    model = folder / "model.onnx"
    if model.is_file():
        try:
            return _in_use(folder, new_session(model))
        except Exception as e:
            log.warning("cached ONNX model %s does not load (%s): exporting it again", folder.name, first_line(e))
            shutil.rmtree(folder, ignore_errors=True)
    with _export_lock:
        exported = not model.is_file()
        if exported:
            shutil.rmtree(folder, ignore_errors=True)  # a folder without its model (deleted by hand) is no entry
            _export_into(folder, export, precision)
    session = _in_use(folder, new_session(model))
    if exported:  # the caches' budget, now that this export counts and is held (``clipdemo.caches``)
        caches.enforce_budget(folder.parent.parent)
    return session


def _in_use(folder: Path, session):
    """The export in ``folder`` is in use (never evicted) while ``session`` lives; its last use is now."""
    caches.used(folder, session)
    return session


def _export_into(folder: Path, export: Callable[[Path], None], precision: str) -> None:
    """Export into a hidden temporary sibling folder, fsync it, rename it to ``folder`` (``atomic``): readers see a
    complete model or none. Another process that finished the same export first wins; ours is dropped."""
    remove_stale_partials(folder.parent, STALE_TEMP_SECONDS)
    start = time.monotonic()

    def fill(tmp: Path) -> None:
        export(tmp / "model.onnx")
        if precision == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            (tmp / "model.onnx").rename(tmp / "fp32.onnx")
            with _quiet_quantizer():
                quantize_dynamic(tmp / "fp32.onnx", tmp / "model.onnx", weight_type=QuantType.QInt8)
            (tmp / "fp32.onnx").unlink()
        _weights_apart(tmp / "model.onnx")

    write_folder_atomic(folder, fill, _first_export_wins)
    log.info("exported %s to ONNX (%s) in %.1f s", folder.name, precision, time.monotonic() - start)


def _first_export_wins(tmp: Path, folder: Path) -> None:
    try:
        os.rename(tmp, folder)
    except OSError:
        if not (folder / "model.onnx").is_file():
            raise


class _quiet_quantizer(contextlib.ContextDecorator):
    """ONNX Runtime's quantizer logs a line per tensor to the root logger: drop those records while it runs."""

    @staticmethod
    def filter(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname

    def __enter__(self):
        logging.getLogger().addFilter(self.filter)

    def __exit__(self, *exc):
        logging.getLogger().removeFilter(self.filter)


def _weights_apart(model: Path) -> None:
    """Rewrite ``model`` with its weights in a file beside it (``model.onnx.data``): ONNX Runtime then skips parsing
    them as protobuf, and a session starts ~30% sooner (0.56 s vs 0.79 s for the ViT-B/32 image tower here)."""
    import onnx

    graph = onnx.load(str(model))
    onnx.save_model(graph, str(model), save_as_external_data=True, location=f"{model.name}.data", size_threshold=1024)


def new_session(model: Path, spinning: bool = False):
    """A session for ``model`` with as many intra-op threads as PyTorch uses (OMP_NUM_THREADS; a training child's
    bounded count): the one ``onnx_cache.preload`` started, when it matches."""
    threads = torch.get_num_threads()
    return (None if spinning else onnx_cache.take(model, threads)) or onnx_cache.new_session(model, threads, spinning)
