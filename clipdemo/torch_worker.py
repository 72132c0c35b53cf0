"""A HF CLIP's towers in PyTorch, in a child process: what answers a fresh server while its ONNX export runs.

A server whose export is not cached yet answers in PyTorch until the export is done
(``onnx_engine.export_in_background``), then switches to ONNX Runtime. Loading the PyTorch ``CLIPModel`` in the
server itself imports transformers' modeling stack, with torch._dynamo and sympy: about 100 MiB that would stay
after the switch. Here a child process holds the model, and goes, memory and all, when the server switches; the
server keeps its tokenizer and preprocessing (``clipdemo.encoders.HFCLIPEncoder``) and sends the towers their
inputs: pixels or token ids in, embeddings out, over a pipe.

- ``TorchWorker(spec)``: starts the child (the model loads there while the server goes on); ``ready()`` waits for
  that load and says whether the child can answer: False when the model did not load there (the reason goes to the
  log) or the child has ended, and the encoder then loads the model itself, so a model that loads nowhere gets the
  encoder's own sentence. ``image(pixels)`` and ``text(ids, mask)`` as ``onnx_engine.OnnxTowers`` has them; a child
  that dies under a request is a ``ModelUnavailable`` sentence for that request. The child ends when the last
  reference to its ``TorchWorker`` goes, so a request that took it before the switch finishes on it.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import weakref
from multiprocessing.connection import Connection

import torch

from clipdemo import settings
from clipdemo.errors import ModelUnavailable, first_line

log = logging.getLogger(__name__)

_METHODS = {"image": "get_image_features", "text": "get_text_features"}


class TorchWorker:
    """PyTorch towers of the HF CLIP at ``spec`` (a local folder or a HF cache snapshot) in a child process."""

    def __init__(self, spec: str):
        self.spec = spec
        ours, theirs = socket.socketpair()
        # A fresh interpreter (as the export child): multiprocessing's spawn would re-import the server's main module.
        code = "from clipdemo.torch_worker import _main; _main()"
        self._process = subprocess.Popen(
            [sys.executable, "-c", code, spec, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=settings.child_environment(),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._conn = Connection(ours.detach())
        self._lock, self._loaded, self._failed = threading.Lock(), False, False
        # The child ends with the last reference to this object: when the encoder drops it, or after the last
        # request that took it before the switch (a request keeps the engine it started with).
        weakref.finalize(self, _end, self._process, self._conn)

    def image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._ask("image", pixels)

    def text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._ask("text", input_ids, attention_mask)

    def ready(self) -> bool:
        """Wait for the child's model to load; whether it can answer (False: it did not load, or the child ended)."""
        with self._lock:
            if not (self._loaded or self._failed):
                try:
                    status, value = self._conn.recv()
                except (EOFError, OSError):
                    status, value = "error", "the process ended"
                self._loaded, self._failed = status == "ok", status != "ok"
                if self._failed:
                    log.warning(
                        "the PyTorch child could not load %s (%s): the server loads it itself", self.spec, value
                    )
            return self._loaded and not self._failed and self._process.poll() is None

    def _ask(self, tower: str, *inputs: torch.Tensor) -> torch.Tensor:
        ended = ModelUnavailable(f"The PyTorch process answering for {self.spec} ended; try again.")
        if not self.ready():
            raise ended
        with self._lock:  # one request at a time on the pipe; PyTorch uses the cores for each
            try:
                self._conn.send((tower, [x.cpu().numpy() for x in inputs]))
                status, value = self._conn.recv()
            except (EOFError, OSError) as e:
                self._failed = True
                raise ended from e
        if status == "error":  # this request's inputs: the next one may do
            raise ModelUnavailable(f"{self.spec} does not run in PyTorch: {value}")
        return torch.from_numpy(value)


def _end(process: subprocess.Popen, conn: Connection) -> None:
    conn.close()
    if process.poll() is None:
        process.terminate()
        process.wait(5)


def _main() -> None:
    """The child: ``spec fd`` on the command line; load the model, say so (or why not), then answer
    ``(tower, inputs)`` until the connection closes."""
    from clipdemo.devices import embedding
    from clipdemo.onnx_engine import clip_model, die_with_parent

    die_with_parent()
    spec, conn = sys.argv[1], Connection(int(sys.argv[2]))
    try:
        model = clip_model(spec, local_files_only=True)
    except Exception as e:
        conn.send(("error", first_line(e)))
        return
    conn.send(("ok", "loaded"))
    with torch.inference_mode():
        while True:
            try:
                tower, inputs = conn.recv()
            except (EOFError, OSError):
                return
            try:
                out = embedding(getattr(model, _METHODS[tower])(*map(torch.from_numpy, inputs)))
                conn.send(("ok", out.float().numpy()))
            except Exception as e:  # this request's inputs: the next one may do
                conn.send(("error", first_line(e)))
