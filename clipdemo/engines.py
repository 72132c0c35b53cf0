"""Which precision and engine a model runs at: the rules, on the device's type, without torch.

``clipdemo.devices.pick_precision`` and ``clipdemo.onnx_engine.pick_engine``/``planned`` apply them to a torch
device; ``clipdemo.onnx_cache.preload_for_cpu`` applies them before torch is imported (the CLI), so a preloaded
session is the one the encoder asks for.

- precision ``auto``: bf16 autocast on GPUs that support it, fp32 on CPUs. fp32 on CPUs even with AVX-512 BF16:
  on an AMD EPYC bf16 was 1.4x faster for ViT-B/32 but changed the top-1 of 3 of the 240 images of our test set,
  and on an Intel Xeon it was slower than fp32 (``bench/zero_shot_latency.py``). ``int8`` (int8 weights) exists
  only in the ONNX engine: callers that can run it say so; for the others (training, PyTorch inference) it is fp32.
- engine ``auto``: the back end's measured best on a CPU (ONNX Runtime for a HF CLIP), PyTorch on a GPU, where it
  runs bf16 autocast and our ONNX Runtime build would not use the GPU. ONNX Runtime runs fp32 and int8; bf16 stays
  in PyTorch.
"""

from __future__ import annotations

from clipdemo import settings
from clipdemo.errors import ConfigError


def precision_for(device_type: str, precision: str | None = None, int8: bool = False, gpu_bf16: bool = False) -> str:
    """``precision`` (``CLIPDEMO_PRECISION`` when None) resolved for a device of ``device_type``; ``gpu_bf16``: the
    GPU supports bf16."""
    precision = precision or settings.precision()
    if precision not in settings.PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(settings.PRECISIONS)}, not {precision!r}.")
    if precision == "int8" and not int8:
        return "fp32"
    if precision != "auto":
        return precision
    return "bf16" if device_type == "cuda" and gpu_bf16 else "fp32"


def engine_for(device_type: str, engine: str | None = None, auto_on_cpu: str = "onnx") -> str:
    """``engine`` (``CLIPDEMO_ENGINE`` when None) resolved for a device of ``device_type``."""
    engine = engine or settings.engine()
    if engine not in settings.ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(settings.ENGINES)}, not {engine!r}.")
    if engine == "onnx" and device_type != "cpu":
        return "torch"
    if engine == "auto":
        return auto_on_cpu if device_type == "cpu" else "torch"
    return engine


def planned(device_type: str, precision: str, engine: str | None = None, auto_on_cpu: str = "onnx"):
    """``(precision, engine)`` a model asked to run at ``precision`` gets when its export works: int8 exists only in
    ONNX Runtime (PyTorch runs fp32 instead), bf16 only in PyTorch."""
    if engine_for(device_type, engine, auto_on_cpu) == "onnx" and precision in ("fp32", "int8"):
        return precision, "onnx"
    return ("fp32" if precision == "int8" else precision), "torch"
