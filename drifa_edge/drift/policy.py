"""Drift policy: the margins of ``drifa-edge check``, its decision rule and significance level.

Two FP32 runs of one model with different dropout draws already disagree (on
real data with T = 30: Spearman of MI 0.87-0.92, referral agreement 0.89-0.92),
so every margin is a shift *beyond* what two runs of the reference show (the
permutation null of :mod:`drifa_edge.drift.noise`). ``calibration/default.toml``
holds the defaults below, with their reasons; ``calibration/strict-clinical.toml``
is the strict profile.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drifa_edge.artifact.card import REFERRAL_METRICS
from drifa_edge.errors import ConfigError, suggest
from drifa_edge.profiles import profile_file, profile_names, read_toml

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python >= 3.11; only a type here

DECISIONS = ("material", "difference", "equivalence")
# keys of earlier policies and what replaced them
REMOVED_KEYS = {
    "delta_test": "decision = 'material' (was 'significant') or 'equivalence' (was 'noninferiority')",
    "bootstrap_reps": "permutations (the null is a permutation of MC draws, not a case bootstrap)",
    "kl_require_significance": "decision (every criterion, KL included, is judged by the same rule)",
}


@dataclass(frozen=True)
class DriftPolicy:
    name: str = "default"
    description: str = ""
    # margins: how much worse than two runs of the reference the candidate may be
    # predictive distribution: mean KL(ref || cand) / the null's median mean KL
    kl_ratio_max: float = 2.0
    kl_noise_min: float = 1e-6  # mean KL is floored here (a deterministic model has no MC noise)
    # uncertainty ranking: Spearman(ref, cand) >= null median - margin
    spearman_mi_margin: float = 0.03
    spearman_entropy_margin: float = 0.03
    # referral: agreement >= null median - margin; |rate(cand) - rate(ref)| <= null median + max
    referral_agreement_margin: float = 0.02
    referral_rate_diff_max: float = 0.02
    referral_metric: str = "mutual_information"
    referral_target_rate: float = 0.10  # for thresholds fitted by check (missing or --recalibrate)
    # OOD score (ood.npz, issue 18), like MI: Spearman(ref, cand) >= null median - margin,
    # OOD-flag agreement >= null median - margin
    spearman_ood_margin: float = 0.03
    ood_agreement_margin: float = 0.02
    # metric deltas (candidate - reference) beyond the null's median
    accuracy_drop_max: float = 0.02
    macro_f1_drop_max: float = 0.03
    ece_rise_max: float = 0.02
    # how a criterion is judged (drift/criteria.py): "material" fails when the Holm-corrected
    # difference test rejects and the shift exceeds the margin; "equivalence" passes only
    # when the upper bound of the shift is within the margin; "difference" ignores margins
    decision: str = "material"
    # the gate's false-alarm rate (material, difference: family-wise over criteria x tasks,
    # Holm) or its chance of passing a build beyond a margin (equivalence)
    alpha: float = 0.02
    permutations: int = 999  # random draw swaps of the null; p >= 1 / (permutations + 1)
    # reporting
    ece_bins: int = 15
    coverages: tuple[float, ...] = (1.0, 0.9, 0.8)

    def __post_init__(self) -> None:
        if not self.kl_ratio_max > 1.0:
            raise ConfigError(
                f"policy kl_ratio_max must be > 1 (a ratio to the noise), got {self.kl_ratio_max}"
            )
        if not self.kl_noise_min > 0:
            raise ConfigError(f"policy kl_noise_min must be > 0, got {self.kl_noise_min}")
        non_negative = (
            "spearman_mi_margin",
            "spearman_entropy_margin",
            "spearman_ood_margin",
            "ood_agreement_margin",
            "referral_agreement_margin",
            "referral_rate_diff_max",
            "accuracy_drop_max",
            "macro_f1_drop_max",
            "ece_rise_max",
        )
        for key in non_negative:
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"policy {key} must be in [0, 1] (a fraction, 0.02 = 2 points), got {value}"
                )
        if self.decision not in DECISIONS:
            raise ConfigError(
                f"policy decision must be one of {DECISIONS}, got {self.decision!r}"
                + suggest(self.decision, DECISIONS)
            )
        if self.referral_metric not in REFERRAL_METRICS:
            raise ConfigError(
                f"policy referral_metric must be one of {REFERRAL_METRICS}, got {self.referral_metric!r}"
                + suggest(self.referral_metric, REFERRAL_METRICS)
            )
        if not 0.0 <= self.referral_target_rate < 1.0:
            raise ConfigError(
                f"policy referral_target_rate must be in [0, 1), got {self.referral_target_rate}"
            )
        if not 0.0 < self.alpha < 0.5:
            raise ConfigError(f"policy alpha must be in (0, 0.5), got {self.alpha}")
        if self.permutations < 99:
            raise ConfigError(f"policy permutations must be >= 99, got {self.permutations}")
        if self.ece_bins < 2:
            raise ConfigError(f"policy ece_bins must be >= 2, got {self.ece_bins}")
        if not self.coverages or any(not 0.0 < c <= 1.0 for c in self.coverages):
            raise ConfigError(f"policy coverages must be fractions in (0, 1], got {self.coverages}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["coverages"] = list(self.coverages)
        return d


def resolve_policy_path(value: str | Path) -> Path | Traversable:
    """A policy file path, or the name of a shipped profile ("default", "strict-clinical")."""
    path = Path(value)
    if path.is_file():
        return path
    named = profile_file("calibration", str(value))
    if path.suffix == "" and named is not None:
        return named
    known = profile_names("calibration")
    raise ConfigError(
        f"drift policy {str(value)!r} not found; pass a TOML file or one of the profiles {known}"
        + suggest(str(value), known)
    )


def load_policy(path: str | Path | None = None) -> DriftPolicy:
    """Read a policy TOML (flat keys, see ``calibration/README.md``); ``None`` = the defaults."""
    if path is None:
        return DriftPolicy()
    path = resolve_policy_path(path)
    data = read_toml(path)
    known = [f.name for f in dataclasses.fields(DriftPolicy)]
    for key in data:
        if key in REMOVED_KEYS:
            raise ConfigError(f"{path}: policy key {key!r} was replaced; use {REMOVED_KEYS[key]}")
        if key not in known:
            raise ConfigError(f"{path}: unknown policy key {key!r}." + suggest(key, known))
    if "coverages" in data:
        if not isinstance(data["coverages"], list):
            raise ConfigError(f"{path}: coverages must be a list of fractions, got {data['coverages']!r}")
        data["coverages"] = tuple(float(c) for c in data["coverages"])
    data.setdefault("name", path.name.removesuffix(".toml"))
    try:
        return DriftPolicy(**data)
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from e
