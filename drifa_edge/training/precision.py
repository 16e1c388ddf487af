"""Training precision: bfloat16 autocast where the CPU computes it natively, else float32.

bfloat16 keeps float32's exponent range, so no loss scaling is needed (unlike
float16); weights, optimizer state, BatchNorm statistics and evaluation stay
float32, only the training forward pass (convolutions, matmuls) runs under
``torch.autocast("cpu", dtype=torch.bfloat16)``.

Native bf16 arithmetic needs AVX512-BF16 (``avx512_bf16`` in /proc/cpuinfo) or
AMX (``amx_bf16``); without either oneDNN emulates it. ``auto`` picks bf16 only
with AMX: on an AVX512-BF16 CPU without AMX (this project's development machine,
an AMD EPYC) an epoch of ``train/real-small.toml`` was no faster in bf16 than in
fp32 (``benchmarks/results/train_precision.json``: the casts around every
convolution cost what the dot products gain at these small widths). AMX's tile
units are what make bf16 convolutions substantially faster (Intel's oneDNN
documentation); that was not measured here. ``--precision bf16`` forces it anywhere.
"""

from __future__ import annotations

import contextlib

from drifa_edge.runtimes.cpu import CPUINFO, cpu_flags  # noqa: F401 - CPUINFO re-exported

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 arithmetic
AUTO_BF16_FLAGS = ("amx_bf16",)  # where auto picks bf16 (see the module docstring)


def native_bf16(flags: tuple[str, ...] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def resolve_precision(requested: str, flags: tuple[str, ...] | None = None) -> str:
    """``"auto"`` -> ``"bf16"`` on a CPU with AMX bf16, else ``"fp32"``; others unchanged."""
    if requested == "auto":
        flags = cpu_flags() if flags is None else flags
        return "bf16" if any(f in flags for f in AUTO_BF16_FLAGS) else "fp32"
    return requested


def autocast(precision: str):
    """The context for a training forward pass at the resolved ``precision``."""
    if precision == "bf16":
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
