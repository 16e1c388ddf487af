"""The one adapter between the service and the predictor: open once, warm once, predict
batches of cases, close. The records are exactly ``drifa-edge predict``'s JSONL records
(same input-quality rules, referral and uncertainty), made by the same code.

:func:`open_predictor` is the only place that knows how the predictor is opened: the
re-layered ``drifa_edge.inference.predictor.Predictor.open(artifact, runtime, options, engine_cfg)``;
the service uses its ``card``, ``sha256``, ``runtime``, ``device``, ``ensemble_size``,
``predict(cases)`` and ``close()``.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.inference.manifest import Case
from drifa_edge.serve.config import InferenceConfig

log = logging.getLogger(__name__)


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
            "adaptive": None if not self.cfg.adaptive else self.cfg.adaptive_config().to_dict(),
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


def open_predictor(
    artifact: str | Path, cfg: InferenceConfig, cache_dir: Path | None = None
) -> CasePredictor:
    """Load the model once (runtime, precision, T and seed from ``cfg``; OpenVINO model cache in
    ``cache_dir``; other runtimes ignore it), in this process or, with ``backend = "ray"``, on a
    Ray Serve deployment (:mod:`drifa_edge.scaleout.backend`)."""
    from drifa_edge.inference.engine import EngineConfig
    from drifa_edge.runtimes.base import RuntimeOptions
    from drifa_edge.runtimes.choice import AUTO, choose_for_artifact

    if cfg.precision == AUTO:  # the card's record of gated builds on this ISA class
        choice = choose_for_artifact(artifact, cfg.runtime)
        log.warning("[inference] precision auto: %s", choice.reason)
        cfg = dataclasses.replace(cfg, runtime=choice.runtime, precision=choice.precision)
    extra = {"cache_dir": str(cache_dir)} if cache_dir else {}
    options = RuntimeOptions(precision=cfg.precision, device=cfg.device, threads=cfg.threads, extra=extra)
    engine_cfg = EngineConfig(samples=cfg.samples, seed=cfg.seed, adaptive=cfg.adaptive_config())
    if cfg.backend == "ray":  # the same face as Predictor, inference on Ray Serve
        from drifa_edge.scaleout.backend import RayPredictor

        ray = cfg.ray
        predictor = RayPredictor.open(
            artifact, cfg.runtime, options, engine_cfg, cfg.allow_channel_conversion, cluster=ray.cluster(),
            deployment=ray.deployment, deploy=ray.deploy, app_name=ray.app_name, attempts=ray.attempts, timeout_s=ray.timeout_s,
        )  # fmt: skip
        return CasePredictor(predictor, cfg)
    from drifa_edge.inference.predictor import Predictor

    predictor = Predictor.open(artifact, cfg.runtime, options, engine_cfg, cfg.allow_channel_conversion)
    return CasePredictor(predictor, cfg)
