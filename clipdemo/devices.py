"""Where and in what precision models run: device choice, bf16 autocast; what a tower returns, as a tensor.

Shared by every back end and the training loops; it depends on nothing else in clipdemo but ``clipdemo.engines``.
"""

from __future__ import annotations

import logging

import torch

from clipdemo import engines
from clipdemo.errors import ModelUnavailable

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
    """``precision`` (``CLIPDEMO_PRECISION`` when None) on ``device``, by ``clipdemo.engines``' rule: ``auto`` is
    bf16 autocast on GPUs that support it, fp32 on CPUs; ``int8`` is fp32 unless the caller can run it."""
    gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    precision = engines.precision_for(device.type, precision, int8, gpu_bf16)
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        log.warning("bf16 was asked for, but this CPU has no bf16 matmul units: expect it to be far slower than fp32")
    return precision


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def embedding(output) -> torch.Tensor:
    """A tower's output as one tensor: transformers 5 returns ``BaseModelOutputWithPooling`` (the projected
    embedding in ``.pooler_output``), transformers 4 and our scratch model a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
