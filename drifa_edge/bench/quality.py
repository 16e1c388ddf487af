"""Accuracy, macro-F1, ECE and the drift-gate verdict of benchmark rows (numpy only).

Every worker saves the MC probabilities of the same ``--data`` cases; here they
are scored per task (unscored rows, label -1, left out) and each row is judged by
:func:`drifa_edge.drift.gate.evaluate_drift` against the FP32 reference row, with
the reference re-run on other MC masks as the noise floor. Where a module of the
data or drift packages is missing, the columns say so instead of failing the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact.card import ModelCard
from drifa_edge.bench.rows import AUTHORS
from drifa_edge.errors import DrifaError


def reference_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The FP32 row the drift gate compares against: torch fp32, else the first ok fp32 row."""
    ok = [r for r in rows if r["status"] == "ok" and r["precision"] == "fp32" and "eval" in r]
    for r in ok:
        if r["row_id"] == "torch-fp32":
            return r
    others = [r for r in ok if r["runtime"] != AUTHORS]
    return (others or ok or [None])[0]


def prepare_eval_set(
    data: Sequence[str], card: ModelCard, split: str, limit: int | None, seed: int, workdir: Path
) -> tuple[Any, str | None, str]:
    """Load the --data cases once for every row: (labels per task, npz path, '') or (None, None, why not)."""
    try:
        from drifa_edge.data.sources import load_eval_arrays
    except ImportError as e:
        return None, None, f"n/a (module missing: {e})"
    images, labels, _ids = load_eval_arrays(list(data), card, split=split, limit=limit, seed=seed)
    path = workdir / "eval.npz"
    np.savez(path, **{f"x{k}": np.ascontiguousarray(x, dtype=np.float32) for k, x in enumerate(images)})
    return {t: np.asarray(v, dtype=np.int64) for t, v in labels.items()}, str(path), ""


def load_probs(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def quality_metrics(probs_path: str, labels: dict[str, np.ndarray]) -> dict[str, Any] | str:
    """Accuracy, macro-F1 and ECE per task of the MC-mean probabilities (unscored rows dropped)."""
    try:
        from drifa_edge.metrics import accuracy, ece, macro_f1
    except ImportError as e:
        return f"n/a (module missing: {e})"
    out: dict[str, Any] = {}
    for task, samples in load_probs(probs_path).items():
        keep = labels[task] >= 0
        probs = samples[keep].astype(np.float64).mean(axis=1)  # (N, C)
        y = labels[task][keep]
        pred = probs.argmax(axis=1)
        out[task] = {
            "cases": int(keep.sum()),
            "accuracy": accuracy(y, pred),
            "macro_f1": macro_f1(y, pred, probs.shape[1]),
            "ece": ece(probs, y),
        }
    return out


def add_gate_verdicts(
    rows: list[dict[str, Any]],
    reference: dict[str, Any],
    noise_eval: dict[str, Any],
    labels: dict[str, np.ndarray],
    policy_name: str | None = None,
    seed: int = 0,
) -> None:
    """The drift gate of every row with probabilities against the FP32 reference and its noise floor."""
    try:
        from drifa_edge.drift.gate import evaluate_drift
        from drifa_edge.drift.policy import load_policy
    except ImportError as e:
        for r in rows:
            r["gate"] = f"n/a (module missing: {e})"
        return
    policy = load_policy(policy_name)
    ref = load_probs(reference["eval"]["probs"])
    ref_card = ModelCard.from_json(Path(reference["eval"]["card"]).read_text())
    for r in rows:
        if "eval" not in r:
            continue
        if r is reference:
            r["gate"] = {"verdict": "reference", "failures": []}
            continue
        cand_card = ModelCard.from_json(Path(r["eval"]["card"]).read_text())
        try:
            report = evaluate_drift(
                ref,
                load_probs(r["eval"]["probs"]),
                labels,
                ref_card,
                cand_card,
                policy,
                seed=seed,
            ).to_dict()
        except DrifaError as e:
            r["gate"] = {"verdict": f"n/a ({e})", "failures": []}
            continue
        r["gate"] = {"verdict": report["verdict"], "failures": report["failures"], "policy": report["policy"]}
