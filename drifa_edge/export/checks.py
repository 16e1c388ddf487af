"""The checks that end every export: is the exported model the PyTorch model, with
its MC dropout still alive?

- ``onnx.checker`` on every ONNX graph;
- deterministic parity: prefix + ``suffix_det`` vs PyTorch with dropout off, max
  |p_export - p_torch| <= ``tolerance`` (1e-4) over every case, task and class;
- fixed-mask parity: ``suffix_masks`` vs PyTorch fed the *same* uniforms, same tolerance;
- stochastic: two calls on identical input differ, the same row repeated inside one
  batch gets different masks, and the predictive variance is > 0;
- MC consistency: per case and class, mean and standard deviation of T >= 200 MC
  probabilities agree with PyTorch's within ``z`` standard errors (plus ``floor``), and
  the std differences pooled over cases show no systematic shift (``z`` again).

A failed check raises :class:`ParityError` with the numbers; the results are written
to ``checks.json`` and the card's export section either way. The checks take runtimes
through the registry, so the same functions serve ONNX Runtime, OpenVINO and later builds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact import layout
from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.errors import ConfigError, ParityError, missing_dependency
from drifa_edge.inference.engine import EngineConfig, run_mc, softmax
from drifa_edge.model.config import dropout_shapes
from drifa_edge.runtimes.base import Runtime, RuntimeOptions, open_runtime


@dataclass(frozen=True)
class CheckConfig:
    """Sizes and tolerances of the export checks.

    ``tolerance`` bounds float32 round-off between two implementations of the same
    arithmetic (observed ~1e-8 on probabilities, 1e-6 on features). ``z`` = 5 standard
    errors per comparison: with a few hundred comparisons (cases x classes x {mean, std})
    a false alarm has probability < 1e-3. Measured power on a tiny model, 8 cases, T = 256:
    dropout p 0.25 -> 0.2 gives a pooled std shift of -8 z, a missing 1/(1-p) scale -24 z,
    the final dropout missing -30 z (one early dropout missing is below the statistical
    radar; the export's op count catches that). ``floor`` absorbs round-off where the
    standard error is ~0 (a saturated class).
    """

    cases: int = 8
    samples: int = 256
    tolerance: float = 1e-4
    z: float = 5.0
    floor: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.cases < 1:
            raise ConfigError(f"checks need at least 1 case, got {self.cases}")
        if self.samples < 200:
            raise ConfigError(f"the MC consistency check needs T >= 200 samples, got {self.samples}")
        if not self.tolerance > 0 or not self.z > 0 or self.floor < 0:
            raise ConfigError(
                f"tolerance and z must be > 0, floor >= 0; got {self.tolerance}, {self.z}, {self.floor}"
            )


@dataclass(frozen=True)
class CheckResult:
    name: str
    runtime: str
    passed: bool
    value: float  # the measured number the limit applies to
    limit: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return f"{self.runtime}: {self.name} {verdict} ({self.value:.3g} vs limit {self.limit:.3g})"


def random_images(runtime: Runtime, cases: int, seed: int) -> list[np.ndarray]:
    """Standard-normal inputs of the card's shapes (harsher than preprocessed images)."""
    rng = np.random.default_rng(seed)
    size = runtime.card.model.image_size
    return [
        rng.standard_normal((cases, t.channels, size, size)).astype(np.float32)
        for t in runtime.card.model.tasks
    ]


def random_uniforms(runtime: Runtime, rows: int, seed: int) -> list[np.ndarray]:
    """One uniform array in [0, 1) per MC dropout, shaped (rows, C, H, W)."""
    rng = np.random.default_rng(seed)
    return [rng.random((rows, *shape), dtype=np.float32) for shape in dropout_shapes(runtime.card.model)]


def _label(runtime: Runtime) -> str:
    """Where a result is filed: the runtime name, with the precision when not FP32."""
    return runtime.name if runtime.precision == "fp32" else f"{runtime.name}:{runtime.precision}"


def _probabilities(runtime: Runtime, logits: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [
        softmax(z, runtime.card.temperature_of(t))
        for z, t in zip(logits, runtime.card.task_names, strict=True)
    ]


def _max_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    return max(float(np.abs(np.asarray(x, np.float64) - y).max()) for x, y in zip(a, b, strict=True))


def check_onnx_graphs(root: Path, precision: str = "fp32") -> CheckResult:
    """``onnx.checker.check_model(full_check=True)`` on the four graphs of a build."""
    try:
        import onnx
    except ImportError as e:
        raise missing_dependency("onnx", "onnx") from e
    errors = {}
    for graph in layout.GRAPHS:
        path = root / layout.onnx_file(graph, precision)
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
            errors[graph] = str(e)[:500]
    return CheckResult("onnx_checker", "onnx", not errors, float(len(errors)), 0.0, {"errors": errors})


def check_deterministic(
    reference: Runtime, candidate: Runtime, images: Sequence[np.ndarray], config: CheckConfig
) -> CheckResult:
    """Both runtimes opened with dropout off: probabilities must agree within tolerance."""
    ref_feats, cand_feats = reference.run_prefix(images), candidate.run_prefix(images)
    ref_logits, cand_logits = reference.run_suffix(ref_feats), candidate.run_suffix(cand_feats)
    diff = _max_diff(_probabilities(reference, ref_logits), _probabilities(candidate, cand_logits))
    details = {"max_abs_diff_features": _max_diff(ref_feats, cand_feats)}
    details["max_abs_diff_logits"] = _max_diff(ref_logits, cand_logits)
    return CheckResult(
        "deterministic_parity", _label(candidate), diff <= config.tolerance, diff, config.tolerance, details
    )


def check_fixed_masks(
    reference: Runtime, candidate: Runtime, images: Sequence[np.ndarray], config: CheckConfig
) -> CheckResult:
    """Identical uniforms fed to both: the masked forward passes must agree within tolerance."""
    uniforms = random_uniforms(reference, images[0].shape[0], config.seed + 1)
    ref_logits = reference.run_suffix(reference.run_prefix(images), uniforms)
    cand_logits = candidate.run_suffix(candidate.run_prefix(images), uniforms)
    diff = _max_diff(_probabilities(reference, ref_logits), _probabilities(candidate, cand_logits))
    details = {"max_abs_diff_logits": _max_diff(ref_logits, cand_logits)}
    return CheckResult(
        "fixed_mask_parity", _label(candidate), diff <= config.tolerance, diff, config.tolerance, details
    )


def check_stochastic(candidate: Runtime, images: Sequence[np.ndarray], rows: int = 16) -> CheckResult:
    """Case 0 repeated ``rows`` times, run twice: calls and rows must differ, variance > 0."""
    feats = [np.repeat(f, rows, axis=0) for f in candidate.run_prefix([x[:1] for x in images])]
    first = _probabilities(candidate, candidate.run_suffix(feats))
    second = _probabilities(candidate, candidate.run_suffix(feats))
    between_calls = _max_diff(first, second)
    within_batch = min(float(np.abs(p - p[:1]).max()) for p in first)  # every task must vary
    variance = min(float(p.var(axis=0, ddof=1).sum()) for p in first)  # summed over classes
    value = min(between_calls, within_batch, variance)
    details = {
        "max_abs_diff_between_calls": between_calls,
        "max_abs_diff_within_batch": within_batch,
        "min_task_predictive_variance": variance,
        "rows": rows,
    }
    return CheckResult("mc_stochastic", _label(candidate), value > 0.0, value, 0.0, details)


def _std_error_of_std(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample std over axis 1 and its standard error by the delta method,
    Var(s^2) ~ (m4 - s^4) / T  =>  SE(s) ~ sqrt((m4 - s^4) / T) / (2 s)."""
    t = p.shape[1]
    centred = p - p.mean(axis=1, keepdims=True)
    var = (centred**2).mean(axis=1)
    m4 = (centred**4).mean(axis=1)
    std = np.sqrt(var)
    se = np.sqrt(np.maximum(m4 - var**2, 0.0) / t) / np.maximum(2.0 * std, 1e-12)
    return std, np.where(std > 0, se, 0.0)


def compare_mc_samples(
    ref: np.ndarray, cand: np.ndarray, z: float, floor: float
) -> tuple[bool, float, dict[str, float]]:
    """Compare MC probabilities shaped (B, T, C) of a reference and a candidate.

    Per case and class: |mean diff| <= z * SE_mean + floor and |std diff| <= z * SE_std
    + floor. Pooled: a dropout that is too weak or too strong moves every std the same
    way, so the standardized std differences are averaged over classes (correlated, so
    the average has variance <= 1) and summed over the independent cases / sqrt(B);
    that statistic must stay within +-z. The returned value is the worst ratio of a
    statistic to its limit (<= 1 passes)."""
    ref, cand = np.asarray(ref, np.float64), np.asarray(cand, np.float64)
    t_ref, t_cand = ref.shape[1], cand.shape[1]
    se_mean = np.sqrt(ref.var(axis=1, ddof=1) / t_ref + cand.var(axis=1, ddof=1) / t_cand)
    mean_diff = np.abs(ref.mean(axis=1) - cand.mean(axis=1))  # (B, C)
    std_ref, se_ref = _std_error_of_std(ref)
    std_cand, se_cand = _std_error_of_std(cand)
    se_std = np.sqrt(se_ref**2 + se_cand**2)
    std_shift = np.where(se_std > 0, (std_cand - std_ref) / np.maximum(se_std, 1e-12), 0.0)
    pooled = float(std_shift.mean(axis=1).sum() / np.sqrt(ref.shape[0]))
    mean_ratio = mean_diff / (z * se_mean + floor)
    std_ratio = np.abs(std_cand - std_ref) / (z * se_std + floor)
    worst = float(max(mean_ratio.max(), std_ratio.max(), abs(pooled) / z))
    details = {
        "max_abs_mean_diff": float(mean_diff.max()),
        "max_mean_diff_in_se": float((mean_diff / np.maximum(se_mean, 1e-12)).max()),
        "max_abs_std_diff": float(np.abs(std_cand - std_ref).max()),
        "max_std_diff_in_se": float(np.abs(std_shift).max()),
        "pooled_std_shift_z": pooled,
        "mean_std_reference": float(std_ref.mean()),
        "mean_std_candidate": float(std_cand.mean()),
    }
    return worst <= 1.0, worst, details


def check_mc_consistency(
    reference: Runtime, candidate: Runtime, images: Sequence[np.ndarray], config: CheckConfig
) -> CheckResult:
    """MC mean and std per class agree with the reference's over ``config.samples`` samples."""
    engine = EngineConfig(samples=config.samples, seed=config.seed, max_rows=64)
    ref, cand = run_mc([reference], images, engine), run_mc([candidate], images, engine)
    passed, worst = True, 0.0
    details: dict[str, Any] = {"samples": config.samples, "z": config.z, "floor": config.floor}
    for task in reference.card.task_names:
        ok, value, task_details = compare_mc_samples(ref[task], cand[task], config.z, config.floor)
        passed, worst = passed and ok, max(worst, value)
        details[task] = task_details
    return CheckResult("mc_consistency", _label(candidate), passed, worst, 1.0, details)


def run_checks(
    checkpoint: Path,
    artifact: Path,
    runtime: str,
    config: CheckConfig | None = None,
    options: RuntimeOptions | None = None,
) -> list[CheckResult]:
    """Open ``artifact`` in ``runtime`` and ``checkpoint`` in torch; run the four runtime checks."""
    config = config or CheckConfig()
    options = options or RuntimeOptions()

    def opened(name: str, path: Path, dropout: str) -> Runtime:
        if name == "torch":  # the reference is always the FP32 checkpoint
            return open_runtime(
                name, path, RuntimeOptions(threads=options.threads, extra={"dropout": dropout})
            )
        return open_runtime(name, path, replace(options, extra={**options.extra, "dropout": dropout}))

    results = []
    ref, cand = opened("torch", checkpoint, "off"), opened(runtime, artifact, "off")
    images = random_images(ref, config.cases, config.seed)
    try:
        results.append(check_deterministic(ref, cand, images, config))
        results.append(check_fixed_masks(ref, cand, images, config))
    finally:
        ref.close()
        cand.close()
    ref, cand = opened("torch", checkpoint, "mc"), opened(runtime, artifact, "mc")
    try:
        results.append(check_stochastic(cand, images))
        results.append(check_mc_consistency(ref, cand, images, config))
    finally:
        ref.close()
        cand.close()
    return results


def record_checks(artifact: Path, results: Sequence[CheckResult]) -> None:
    """Merge results into ``checks.json`` and the card's export section (hashing checks.json)."""
    path = artifact / layout.CHECKS_FILE
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    for r in results:
        recorded.setdefault(r.runtime, {})[r.name] = r.to_dict()
    atomic_write(path, json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    summary = {rt: {name: r["passed"] for name, r in checks.items()} for rt, checks in recorded.items()}
    layout.update_card(artifact, {"checks": summary}, hash_files=[layout.CHECKS_FILE])


def raise_on_failure(artifact: Path, results: Sequence[CheckResult]) -> None:
    failed = [r for r in results if not r.passed]
    if failed:
        lines = "; ".join(f"{r.describe()} {json.dumps(r.details, default=str)[:400]}" for r in failed)
        raise ParityError(
            f"{artifact}: export check failed: {lines}. The artifact is kept for inspection "
            f"({artifact / layout.CHECKS_FILE}); do not deploy it"
        )
