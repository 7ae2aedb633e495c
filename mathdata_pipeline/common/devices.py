"""Where a torch stage runs and in which precision, chosen the same way by every stage.

`device`: "auto" (CUDA when a GPU is visible, else the CPU), "cpu", "cuda" or "cuda:N".
`dtype`: "auto" (bfloat16 on CUDA, float32 on the CPU, where bfloat16 is slower without AMX and
less exact), "float32", "bfloat16" or "float16".
"""

from __future__ import annotations

import re
from typing import Literal

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "bfloat16", "float16"]

DTYPES = ("float32", "bfloat16", "float16")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def cuda_available() -> bool:
    """True when torch sees at least one CUDA device."""
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str = "auto") -> str:
    """The torch device name for `device` ("auto" -> "cuda" when available, else "cpu").

    Raises ValueError for an unknown name and RuntimeError when a CUDA device is asked for on a
    machine without one (rather than failing later inside torch)."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise RuntimeError(f"device {device!r} was asked for, but torch sees no CUDA GPU")
    return device


def resolve_dtype_name(dtype: str, device: str) -> str:
    """The dtype name for `dtype` on the resolved `device` ("auto" -> "bfloat16" on CUDA,
    "float32" on the CPU). Raises ValueError for an unknown name."""
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {DTYPES}, got {dtype!r}")
    return dtype


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for `dtype` on the resolved `device` (see `resolve_dtype_name`)."""
    import torch

    return getattr(torch, resolve_dtype_name(dtype, device))


def placement(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """(device, dtype name) with both "auto"s resolved: what a stage reports in its metadata."""
    resolved = resolve_device(device)
    return resolved, resolve_dtype_name(dtype, resolved)


def release_cuda_memory() -> None:
    """Collect garbage and hand PyTorch's cached CUDA blocks back to the driver, so that the next
    engine (vLLM runs in its own process) or model finds the memory free. A no-op without CUDA."""
    import gc

    gc.collect()
    if cuda_available():
        import torch

        torch.cuda.empty_cache()
