"""Training precision: bfloat16 autocast where the CPU computes it natively, else float32.

bfloat16 keeps float32's exponent range, so no loss scaling is needed (unlike
float16); weights, optimizer state, BatchNorm statistics and evaluation stay
float32, only the training forward pass (convolutions, matmuls) runs under
``torch.autocast("cpu", dtype=torch.bfloat16)``. Native bf16 needs AVX512-BF16
(``avx512_bf16`` in /proc/cpuinfo) or AMX (``amx_bf16``); without them oneDNN
emulates bf16 and it is slower than float32, so ``auto`` picks fp32 there.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> tuple[str, ...]:
    """The CPU feature flags of the first processor in /proc/cpuinfo (empty where there is none)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return tuple(value.split())
    return ()


def native_bf16(flags: tuple[str, ...] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def resolve_precision(requested: str, flags: tuple[str, ...] | None = None) -> str:
    """``"auto"`` -> ``"bf16"`` on a CPU with native bf16, else ``"fp32"``; others unchanged."""
    if requested == "auto":
        return "bf16" if native_bf16(flags) else "fp32"
    return requested


def autocast(precision: str):
    """The context for a training forward pass at the resolved ``precision``."""
    if precision == "bf16":
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
