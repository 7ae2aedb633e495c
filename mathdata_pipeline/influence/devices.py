"""Where the influence stage's torch work runs (gradient features, their warm-up, the perplexity
baseline) and in which precision: `auto` picks CUDA with bfloat16 when a GPU is present and the
CPU with float32 otherwise (bfloat16 is slower than float32 on CPUs without AMX)."""

from __future__ import annotations

from typing import Literal

import torch

DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]


def resolve_device(device: str = "auto") -> str:
    """ "cuda" or "cpu" for `device` ("auto": CUDA when torch sees a GPU). Raises ValueError for
    "cuda" without a GPU and for an unknown name."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU (use 'auto' or 'cpu')")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return device


def resolve_dtype(dtype: str = "auto", device: str = "cpu") -> str:
    """The torch dtype name for `dtype` on the resolved `device` ("auto": bfloat16 on CUDA,
    float32 on the CPU). Raises ValueError for an unknown name."""
    if dtype == "auto":
        return "bfloat16" if device == "cuda" else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', got {dtype!r}")
    return dtype
