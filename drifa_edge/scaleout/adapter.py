"""The one place scale-out code touches the local prediction code.

Ray workers need local ``predict`` cut in two: ``prepare_case`` (read + preprocess
one case; picklable result, errors captured, runs in a Ray Data task) and a
``Predictor`` opened once per actor or replica whose ``predict_prepared`` turns
prepared cases into exactly the JSON records ``drifa-edge predict`` writes.

The re-layering (issue 11) adds these as ``drifa_edge.inference.predictor`` (and
moves the card to ``drifa_edge.artifact``); until that is on the branch, a stand-in
with the same names is built here on top of ``drifa_edge.inference.predict`` (its
``_Run`` does the batch, the error isolation and the record; nothing is computed
differently). When the real modules are there, this file shrinks to the imports.
Scale-out code imports all of these from here, never from their current homes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case, load_case
from drifa_edge.runtimes.base import RuntimeOptions

try:  # the re-layered package (issue 11)
    from drifa_edge.artifact.card import ModelCard, read_card  # type: ignore
    from drifa_edge.artifact.ensemble import resolve_members  # type: ignore
    from drifa_edge.errors import PARTIAL_FAILURE_EXIT  # type: ignore
    from drifa_edge.inference.predictor import (  # type: ignore
        Predictor,
        PreparedCase,
        choose_runtime,
        prepare_case,
    )

    NATIVE = True
except ImportError:
    from drifa_edge.card import ModelCard, read_card
    from drifa_edge.inference.predict import PARTIAL_FAILURE_EXIT, choose_runtime, resolve_members

    NATIVE = False

if not NATIVE:

    @dataclass
    class PreparedCase:  # type: ignore[no-redef]
        """One case after reading and preprocessing: arrays (C, S, S) per task, or the error."""

        case: Case
        arrays: list[np.ndarray] | None = None
        converted: dict[str, str] = field(default_factory=dict)
        error: str | None = None

    def prepare_case(case: Case, card: ModelCard, allow_conversion: bool = False) -> PreparedCase:  # type: ignore[no-redef]
        """Read and preprocess one case as the card says; a bad file becomes ``error``."""
        from drifa_edge.inference.predict import _message

        try:
            arrays, converted = load_case(case, card, allow_conversion)
        except Exception as e:  # a bad file must never stop the batch (same as predict)
            return PreparedCase(case, error=_message(e))
        return PreparedCase(case, arrays, converted)

    class _Collector:
        """A JsonlWriter stand-in that keeps the records instead of writing them."""

        def __init__(self) -> None:
            self.records: list[dict[str, Any]] = []

        def write(self, record: dict[str, Any]) -> None:
            self.records.append(record)

    class Predictor:  # type: ignore[no-redef]
        """An artifact opened once; turns prepared cases into predict's JSON records."""

        def __init__(self, runtimes, run, collector: _Collector) -> None:
            self._runtimes = runtimes
            self._run = run
            self._collector = collector
            self.card: ModelCard = runtimes[0].card
            self.meta: dict[str, Any] = run.meta

        @classmethod
        def open(
            cls,
            artifact: str | Path,
            runtime: str = "auto",
            options: RuntimeOptions | None = None,
            engine_cfg: EngineConfig | None = None,
        ) -> Predictor:
            from drifa_edge.inference import predict as p
            from drifa_edge.inference.writers import ensemble_sha256, model_sha256

            options = options or RuntimeOptions()
            cfg = engine_cfg or EngineConfig()
            name = p.choose_runtime(artifact, runtime, options.precision)
            runtimes = p._open_members(Path(artifact), name, options)
            try:
                cards = [rt.card for rt in runtimes]
                sha = model_sha256(cards[0]) if len(cards) == 1 else ensemble_sha256(cards)
                summary = p.PredictSummary(
                    None, None, name, options.precision, runtimes[0].device, cfg.samples, cfg.seed,
                    len(runtimes), sha,
                )  # fmt: skip
                collector = _Collector()
                rules = p.referral_rules(Path(artifact), runtimes)
                run = p._Run(runtimes, rules, cfg, collector, summary, False, None)
            except BaseException:
                for rt in runtimes:
                    rt.close()
                raise
            return cls(runtimes, run, collector)

        def predict_prepared(self, items: Sequence[PreparedCase]) -> list[dict[str, Any]]:
            """One record per item, in order: predictions or the case's error."""
            batch = []
            for it in items:
                d: dict[str, Any] = {"case": it.case}
                if it.error is not None:
                    d["error"] = it.error
                else:
                    d["arrays"], d["converted"] = it.arrays, it.converted
                batch.append(d)
            self._collector.records = []
            self._run.summary.preview.clear()  # the stand-in keeps no history
            self._run.run_batch(batch)
            by_id = {r["case_id"]: r for r in self._collector.records}
            return [by_id[it.case.case_id] for it in items]

        def close(self) -> None:
            for rt in self._runtimes:
                rt.close()
            self._runtimes = []


def model_card(artifact: str | Path) -> ModelCard:
    """The (first member's) model card of an artifact, without opening a runtime."""
    return read_card(resolve_members(artifact)[0], verify=False)


def member_cards(artifact: str | Path) -> list[ModelCard]:
    """Every member's model card (one for a single model), without opening a runtime."""
    return [read_card(m, verify=False) for m in resolve_members(artifact)]


__all__ = [
    "NATIVE",
    "PARTIAL_FAILURE_EXIT",
    "Predictor",
    "PreparedCase",
    "choose_runtime",
    "member_cards",
    "model_card",
    "prepare_case",
]
