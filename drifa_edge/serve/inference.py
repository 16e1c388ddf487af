"""The one adapter between the service and the predictor: open once, warm once, predict
batches of cases, close. The records are exactly ``drifa-edge predict``'s JSONL records
(same input-quality rules, referral and uncertainty), made by the same code.

:func:`open_predictor` is the only place that knows how the predictor is opened: the
re-layered ``drifa_edge.inference.predictor.Predictor.open(artifact, runtime, options,
engine_cfg)`` when it is there, else (before the re-layer lands) ``inference.predict``'s
own batch runner, wrapped to the same small surface (``card``, ``sha256``, ``runtime``,
``device``, ``ensemble_size``, ``predict(cases)``, ``close()``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.inference.manifest import Case
from drifa_edge.serve.config import InferenceConfig


class CasePredictor:
    """A loaded model (or ensemble) that turns cases into predict records."""

    def __init__(self, predictor: Any, cfg: InferenceConfig) -> None:
        self.predictor = predictor
        self.cfg = cfg
        self.card = predictor.card
        self.runtime: str = predictor.runtime
        self.model_sha256: str = predictor.sha256
        self.warm = False

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.card.task_names)

    @property
    def info(self) -> dict[str, Any]:
        return {
            "model_name": "DRIFA-Net " + "+".join(self.tasks),
            "model_sha256": self.model_sha256,
            "runtime": self.runtime,
            "precision": self.cfg.precision,
            "device": self.predictor.device,
            "samples": self.cfg.samples,
            "ensemble_size": self.predictor.ensemble_size,
            "tasks": list(self.tasks),
        }

    def predict(self, cases: list[Case]) -> list[dict[str, Any]]:
        """One predict record per case, in order (an error record for a bad case; never raises for one)."""
        return self.predictor.predict(cases)

    def warm_up(self) -> float:
        """Run one synthetic case through the model (compiles, fills caches); returns seconds."""
        from PIL import Image

        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory(prefix="drifa-warm-") as tmp:
            inputs = {}
            for task in self.tasks:
                spec = self.card.preprocess[task]
                shape = (spec.size, spec.size) if spec.channels == 1 else (spec.size, spec.size, 3)
                inputs[task] = Path(tmp) / f"{task}.png"
                Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(inputs[task])
            record = self.predict([Case("warm-up", inputs)])[0]
        if record["status"] != "ok":
            raise RuntimeError(f"warm-up inference failed: {record['error']}")
        self.warm = True
        return time.perf_counter() - t0

    def close(self) -> None:
        self.predictor.close()


def open_predictor(artifact: str | Path, cfg: InferenceConfig, cache_dir: Path | None = None) -> CasePredictor:
    """Load the model once (runtime, precision, T and seed from ``cfg``; OpenVINO model cache in
    ``cache_dir``; other runtimes ignore it)."""
    from drifa_edge.inference.engine import EngineConfig
    from drifa_edge.runtimes.base import RuntimeOptions

    extra = {"cache_dir": str(cache_dir)} if cache_dir else {}
    options = RuntimeOptions(precision=cfg.precision, device=cfg.device, threads=cfg.threads, extra=extra)
    engine_cfg = EngineConfig(samples=cfg.samples, seed=cfg.seed)
    try:
        from drifa_edge.inference.predictor import Predictor
    except ImportError:  # before the re-layer: the same code, reached through predict's batch runner
        predictor = _BatchRunner.open(artifact, cfg.runtime, options, engine_cfg, cfg.allow_channel_conversion)
    else:
        predictor = Predictor.open(artifact, cfg.runtime, options, engine_cfg, cfg.allow_channel_conversion)
    return CasePredictor(predictor, cfg)


class _BatchRunner:
    """``inference.predict``'s runner behind the Predictor surface (removed once the re-layer lands)."""

    @classmethod
    def open(cls, artifact, runtime, options, engine_cfg, allow_conversion) -> _BatchRunner:
        from drifa_edge.inference.predict import _open_members, choose_runtime, referral_rules
        from drifa_edge.inference.writers import ensemble_sha256, model_sha256

        self = cls()
        self.artifact, self.options, self.engine_cfg = Path(artifact), options, engine_cfg
        self.allow_conversion = allow_conversion
        self.runtime = choose_runtime(self.artifact, runtime, options.precision)
        self.runtimes = _open_members(self.artifact, self.runtime, options)
        self.card = self.runtimes[0].card
        self.rules = referral_rules(self.artifact, self.runtimes)
        cards = [rt.card for rt in self.runtimes]
        self.sha256 = model_sha256(self.card) if len(cards) == 1 else ensemble_sha256(cards)
        self.device, self.ensemble_size = self.runtimes[0].device, len(self.runtimes)
        return self

    def predict(self, cases: list[Case]) -> list[dict[str, Any]]:
        from drifa_edge.inference.predict import PredictSummary, _Run

        records: list[dict[str, Any]] = []
        writer = type("Collect", (), {"write": staticmethod(records.append)})()
        summary = PredictSummary(
            None, None, self.runtime, self.options.precision, self.device, self.engine_cfg.samples,
            self.engine_cfg.seed, self.ensemble_size, self.sha256,
        )  # fmt: skip
        run = _Run(self.runtimes, self.rules, self.engine_cfg, writer, summary, self.allow_conversion, None)
        run.run_batch([run.prepare(case) for case in cases])
        by_id = {r["case_id"]: r for r in records}
        return [by_id[c.case_id] for c in cases]

    def close(self) -> None:
        for rt in self.runtimes:
            rt.close()
