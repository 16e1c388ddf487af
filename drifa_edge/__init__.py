"""drifa-edge: uncertainty-aware DRIFA-Net from training to the scanner.

The main entry points load lazily (nothing heavy is imported by ``import drifa_edge``)::

    import drifa_edge as de
    de.train_ensemble(...)        # drifa-edge train
    de.export_all(...)            # drifa-edge export (ONNX + OpenVINO)
    de.quantize_int8(...)         # drifa-edge export --int8
    de.run_check(...)             # drifa-edge check
    de.predict_cases(...)         # drifa-edge predict; de.Predictor for one case at a time
    de.run_bench(...)             # drifa-edge bench
    de.run_demo(...)              # drifa-edge demo

Names never shadow the subpackages (``drifa_edge.export``, ``drifa_edge.bench``, ...).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "train": "drifa_edge.training.loop",
    "train_ensemble": "drifa_edge.training.ensemble",
    "load_config": "drifa_edge.training.config",
    "load_datasets": "drifa_edge.data.sources",
    "export_all": "drifa_edge.export",
    "export_tensorrt": "drifa_edge.export.tensorrt",
    "quantize_int8": "drifa_edge.quantize",
    "QuantizeConfig": "drifa_edge.quantize.config",
    "run_check": "drifa_edge.drift.check",
    "CheckConfig": "drifa_edge.drift.check",
    "load_policy": "drifa_edge.drift.policy",
    "predict_cases": "drifa_edge.inference.predict",
    "Predictor": "drifa_edge.inference.predictor",
    "prepare_case": "drifa_edge.inference.predictor",
    "Case": "drifa_edge.inference.manifest",
    "read_manifest": "drifa_edge.inference.manifest",
    "EngineConfig": "drifa_edge.inference.engine",
    "RuntimeOptions": "drifa_edge.runtimes.base",
    "open_runtime": "drifa_edge.runtimes.base",
    "ModelCard": "drifa_edge.artifact.card",
    "read_card": "drifa_edge.artifact.card",
    "run_bench": "drifa_edge.bench.runner",
    "BenchConfig": "drifa_edge.bench.runner",
    "run_demo": "drifa_edge.demo",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'drifa_edge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
