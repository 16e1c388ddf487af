"""Deployment target profiles (``export/<target>.toml``, shipped in :mod:`drifa_edge.profiles`):
the run-time settings that suit a target, as the engine and runtime configurations.

- ``[engine]``: ``samples``, ``max_rows`` -> :class:`~drifa_edge.inference.engine.EngineConfig`;
- ``[openvino]``, ``[onnxruntime]``: ``device``, ``hint``, ``cache_dir``, ``precisions`` (the
  builds worth making) -> :class:`~drifa_edge.runtimes.base.RuntimeOptions` for that runtime;
- ``[tensorrt]``: the engine build profile, read by :func:`drifa_edge.export.tensorrt.load_profile`.

Unknown sections and keys are refused (with a suggestion), so a profile cannot claim a
setting that nothing reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drifa_edge.artifact.layout import PRECISIONS
from drifa_edge.errors import ConfigError, suggest
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.profiles import profile_file, profile_names, read_toml
from drifa_edge.runtimes.base import RuntimeOptions

SECTIONS = ("engine", "openvino", "onnxruntime", "tensorrt")
_ENGINE_KEYS = ("samples", "max_rows")
_RUNTIME_KEYS = ("device", "hint", "precisions", "cache_dir")


@dataclass(frozen=True)
class RuntimeSection:
    """One runtime's settings on a target."""

    device: str | None = None
    hint: str = "latency"
    precisions: tuple[str, ...] = ("fp32",)
    cache_dir: str | None = None


@dataclass(frozen=True)
class TargetProfile:
    name: str
    engine: dict[str, int] = field(default_factory=dict)
    runtimes: dict[str, RuntimeSection] = field(default_factory=dict)
    tensorrt: dict[str, Any] | None = None

    def engine_config(self, **overrides: Any) -> EngineConfig:
        """The engine settings of the target; ``overrides`` (e.g. ``seed``) win."""
        return EngineConfig(**{**self.engine, **overrides})

    def runtime_options(self, runtime: str, precision: str = "fp32", **overrides: Any) -> RuntimeOptions:
        """Options to open ``runtime`` at ``precision`` on this target (``overrides`` win)."""
        section = self.runtimes.get(runtime)
        if section is None:
            raise ConfigError(
                f"target {self.name!r} has no [{runtime}] section; its runtimes are {sorted(self.runtimes)}"
            )
        if precision not in section.precisions:
            raise ConfigError(
                f"target {self.name!r}: [{runtime}] lists precisions {list(section.precisions)}, not {precision!r}"
            )
        extra = {"cache_dir": os.path.expanduser(section.cache_dir)} if section.cache_dir else {}
        values = {"precision": precision, "device": section.device, "hint": section.hint, "extra": extra}
        return RuntimeOptions(**{**values, **overrides})


def _keys(where: str, section: Any, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a table, got {section!r}")
    for key in section:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key {key!r}; known keys are {list(known)}" + suggest(key, known)
            )
    return section


def load_target(target: str | Path) -> TargetProfile:
    """A target profile: a shipped name ("intel-cpu") or a TOML path."""
    path = Path(target)
    source: Any = path
    if not path.is_file():
        source = profile_file("export", str(target))
        if path.suffix or source is None:
            known = profile_names("export")
            raise ConfigError(
                f"target profile {str(target)!r} not found; pass a TOML file or one of {known}"
                + suggest(str(target), known)
            )
    data = read_toml(source)
    name = source.name.removesuffix(".toml")
    for section in data:
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{section}]; known sections are {list(SECTIONS)}"
                + suggest(section, SECTIONS)
            )
    engine = _keys(f"{source} [engine]", data.get("engine", {}), _ENGINE_KEYS)
    EngineConfig(**engine)  # validates
    runtimes = {}
    for runtime in ("openvino", "onnxruntime"):
        if runtime not in data:
            continue
        raw = dict(_keys(f"{source} [{runtime}]", data[runtime], _RUNTIME_KEYS))
        raw["precisions"] = tuple(raw.get("precisions", ("fp32",)))
        unknown = sorted(set(raw["precisions"]) - set(PRECISIONS))
        if unknown:
            raise ConfigError(f"{source} [{runtime}]: unknown precisions {unknown}; choose from {PRECISIONS}")
        section = RuntimeSection(**raw)
        RuntimeOptions(device=section.device, hint=section.hint)  # validates the hint
        runtimes[runtime] = section
    tensorrt = data.get("tensorrt")
    return TargetProfile(name, engine, runtimes, tensorrt)
