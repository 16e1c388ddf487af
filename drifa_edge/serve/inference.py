"""The one adapter between the service and the predictor: open once, warm once, predict
batches of cases, close. The records are exactly ``drifa-edge predict``'s JSONL records
(same input-quality rules, referral and uncertainty), built by the same code.

This is the only place that knows how predict is called. Until the re-layered
``drifa_edge.inference.predictor.Predictor`` lands it drives ``inference.predict``'s
batch runner directly; then :func:`open_predictor` becomes
``Predictor.open(artifact, runtime, options, engine_cfg)``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.card import ModelCard
from drifa_edge.inference.manifest import Case
from drifa_edge.serve.config import InferenceConfig


class _Collect:
    """A writer that keeps the records in memory (the service persists them itself)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)


class CasePredictor:
    """A loaded model (or ensemble) that turns cases into predict records."""

    def __init__(self, artifact: str | Path, cfg: InferenceConfig, cache_dir: Path | None = None) -> None:
        from drifa_edge.inference.engine import EngineConfig
        from drifa_edge.inference.predict import _open_members, choose_runtime, referral_rules
        from drifa_edge.inference.writers import ensemble_sha256, model_sha256
        from drifa_edge.runtimes.base import RuntimeOptions

        self.artifact = Path(artifact)
        self.cfg = cfg
        extra = {"cache_dir": str(cache_dir)} if cache_dir else {}
        options = RuntimeOptions(precision=cfg.precision, device=cfg.device, threads=cfg.threads, extra=extra)
        self.runtime = choose_runtime(self.artifact, cfg.runtime, cfg.precision)
        if self.runtime != "openvino":
            options = RuntimeOptions(precision=cfg.precision, device=cfg.device, threads=cfg.threads)
        self.options = options
        self.runtimes = _open_members(self.artifact, self.runtime, options)
        self.card: ModelCard = self.runtimes[0].card
        self.rules = referral_rules(self.artifact, self.runtimes)
        self.engine_cfg = EngineConfig(samples=cfg.samples, seed=cfg.seed)
        if len(self.runtimes) == 1:
            self.model_sha256 = model_sha256(self.card)
        else:
            self.model_sha256 = ensemble_sha256([rt.card for rt in self.runtimes])
        self.warm = False

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.card.task_names)

    @property
    def info(self) -> dict[str, Any]:
        return {
            "model_name": self.card.model.name if hasattr(self.card.model, "name") else "drifa-net",
            "model_sha256": self.model_sha256,
            "runtime": self.runtime,
            "precision": self.cfg.precision,
            "device": self.runtimes[0].device,
            "samples": self.cfg.samples,
            "ensemble_size": len(self.runtimes),
            "tasks": list(self.tasks),
        }

    def predict(self, cases: list[Case]) -> list[dict[str, Any]]:
        """One predict record per case, in order (an error record for a bad case; never raises for one)."""
        from drifa_edge.inference.predict import PredictSummary, _Run

        summary = PredictSummary(
            None, None, self.runtime, self.cfg.precision, self.runtimes[0].device, self.cfg.samples,
            self.cfg.seed, len(self.runtimes), self.model_sha256,
        )  # fmt: skip
        writer = _Collect()
        run = _Run(
            self.runtimes,
            self.rules,
            self.engine_cfg,
            writer,
            summary,
            self.cfg.allow_channel_conversion,
            None,
        )
        items = [run.prepare(case) for case in cases]
        run.run_batch(items)
        by_id = {r["case_id"]: r for r in writer.records}
        return [by_id[c.case_id] for c in cases]

    def warm_up(self) -> float:
        """Run one synthetic case through the model (compiles, fills caches); returns seconds."""
        import time

        from PIL import Image

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="drifa-warm-") as tmp:
            inputs = {}
            for task in self.tasks:
                spec = self.card.preprocess[task]
                rng = np.random.default_rng(0)
                shape = (spec.size, spec.size) if spec.channels == 1 else (spec.size, spec.size, 3)
                path = Path(tmp) / f"{task}.png"
                Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path)
                inputs[task] = path
            record = self.predict([Case("warm-up", inputs)])[0]
        if record["status"] != "ok":
            raise RuntimeError(f"warm-up inference failed: {record['error']}")
        self.warm = True
        return time.perf_counter() - t0

    def close(self) -> None:
        for rt in self.runtimes:
            rt.close()


def open_predictor(
    artifact: str | Path, cfg: InferenceConfig, cache_dir: Path | None = None
) -> CasePredictor:
    """Load the model once (see the module doc for the switch to ``Predictor.open``)."""
    return CasePredictor(artifact, cfg, cache_dir)
