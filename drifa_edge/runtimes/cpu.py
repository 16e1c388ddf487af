"""What this CPU offers: its feature flags (AVX-512 VNNI/BF16, AMX...), read once from Linux's
/proc/cpuinfo. Used where a precision depends on the hardware: OpenVINO bf16 rows in ``bench``,
bf16 autocast in training."""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


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
