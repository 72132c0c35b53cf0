"""Where and in what precision models run: device choice, bf16 autocast; what a tower returns, as a tensor.

Shared by every back end and the training loops; it depends on nothing else in clipdemo but the settings.
"""

from __future__ import annotations

import logging

import torch

from clipdemo import settings
from clipdemo.errors import ConfigError, ModelUnavailable

log = logging.getLogger(__name__)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable("--device cuda was asked for, but no CUDA GPU is visible.")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPUs where bf16 matmuls beat fp32 (elsewhere bf16 is emulated, far slower)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pick_precision(device: torch.device, precision: str | None = None, int8: bool = False) -> str:
    """``auto``: bf16 autocast on GPUs that support it, fp32 on CPUs; ``CLIPDEMO_PRECISION`` overrides.

    fp32 on CPUs even with AVX-512 BF16, where bf16 is 1.4x faster for ViT-B/32: it changed the top-1 of
    3 of the 240 images of our test set (``bench/zero_shot_latency.py``), and we use it only where it doesn't.
    ``int8`` (int8 weights) exists only in the ONNX engine (``clipdemo.onnx_engine``): callers that can run it
    say so with ``int8=True``; for the others (training, PyTorch inference) it means fp32.
    """
    precision = precision or settings.precision()
    if precision not in settings.PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(settings.PRECISIONS)}, not {precision!r}.")
    if precision == "int8" and not int8:
        return "fp32"
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        log.warning("bf16 was asked for, but this CPU has no bf16 matmul units: expect it to be far slower than fp32")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def embedding(output) -> torch.Tensor:
    """A tower's output as one tensor: transformers 5 returns ``BaseModelOutputWithPooling`` (the projected
    embedding in ``.pooler_output``), transformers 4 and our scratch model a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
