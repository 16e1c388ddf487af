"""What this CPU offers: its feature flags (AVX-512 VNNI/BF16, AMX...), read once from Linux's
/proc/cpuinfo, and the ISA class they put it in. Used where a precision depends on the hardware:
OpenVINO bf16 rows in ``bench``, bf16 autocast in training, ``drifa-edge info``'s recommendation
and the per-ISA record of gated builds that ``--precision auto`` reads (:mod:`drifa_edge.artifact.precision`).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# ISA classes, best first: the fastest int8 / bf16 instructions a CPU has. A record made on one
# class (gate verdict + speed) is only reused on a CPU of the same class.
ISA_CLASSES = ("amx", "avx512_bf16", "avx512_vnni", "avx512", "avx2", "baseline")
# class -> the flag(s) that define it (all needed)
_CLASS_FLAGS = {
    "amx": ("amx_tile", "amx_int8", "amx_bf16"),
    "avx512_bf16": ("avx512_bf16", "avx512_vnni"),
    "avx512_vnni": ("avx512_vnni",),
    "avx512": ("avx512f",),
    "avx2": ("avx2", "fma"),
}
# the flags ``drifa-edge info`` and every benchmark JSON report (present or not)
ISA_FLAGS = (
    "avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip
_RECOMMENDATION = {
    "amx": "bf16 or int8: AMX runs both natively (bf16 needs no calibration data); gate and time both "
    "with 'drifa-edge check --write-card', then use --precision auto",
    "avx512_bf16": "int8 (AVX-512 VNNI); bf16 runs natively but slower than int8 without AMX "
    "(paper configuration on AMD Zen 5: int8 14.6x, bf16 10.0x the authors' way)",
    "avx512_vnni": "int8 (AVX-512 VNNI); no native bf16",
    "avx512": "int8 gains less without VNNI; fp32 or int8, gate and time both",
    "avx2": "int8 gains less without VNNI; fp32 or int8, gate and time both",
    "baseline": "fp32 (no AVX2: the int8 and bf16 kernels are emulated)",
}


def cpu_flags(cpuinfo: Path = CPUINFO) -> tuple[str, ...]:
    """The CPU feature flags of the first processor in /proc/cpuinfo (``flags`` on x86,
    ``Features`` on Arm); empty where there is no such file (macOS, Windows)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return tuple(value.split())
    return ()


def cpu_name(cpuinfo: Path = CPUINFO) -> str:
    """The ``model name`` of /proc/cpuinfo ("" where unknown)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return ""


def cpu_summary(cpuinfo: Path = CPUINFO) -> dict:
    """What every benchmark JSON records about the CPU: ``model`` (model name, else
    :func:`platform.processor`), ``logical_cpus`` and the SIMD ``simd_flags`` (AVX2/FMA,
    AVX-512*, AMX*) it has, sorted. Scripts add their own fields (load, torch capability)."""
    flags = cpu_flags(cpuinfo)
    return {
        "model": cpu_name(cpuinfo) or platform.processor(),
        "logical_cpus": os.cpu_count(),
        "simd_flags": sorted(f for f in flags if f.startswith(("avx512", "avx2", "amx", "fma"))),
    }


def isa_class(flags: tuple[str, ...] | set[str] | None = None) -> str:
    """The best :data:`ISA_CLASSES` entry whose flags this CPU has all of ("baseline" otherwise,
    Arm and unknown CPUs included)."""
    have = set(cpu_flags() if flags is None else flags)
    for name in ISA_CLASSES[:-1]:
        if all(f in have for f in _CLASS_FLAGS[name]):
            return name
    return "baseline"


def isa_info(flags: tuple[str, ...] | None = None, cpuinfo: Path = CPUINFO) -> dict:
    """What a benchmark records and ``info`` prints: CPU name, ISA class, each of
    :data:`ISA_FLAGS` present or not, and the precision recommended for that class."""
    flags = cpu_flags(cpuinfo) if flags is None else flags
    have = set(flags)
    isa = isa_class(have)
    return {
        "cpu": cpu_name(cpuinfo),
        "isa": isa,
        "flags": {f: f in have for f in ISA_FLAGS},
        "recommendation": _RECOMMENDATION[isa],
    }
