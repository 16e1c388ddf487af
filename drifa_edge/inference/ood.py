"""Out-of-distribution referral per task: score a case by how far its pooled features lie
from the training data (Mahalanobis distance, :mod:`drifa_edge.metrics.mahalanobis`).

Why: MC dropout stays confident on inputs unlike the training data (a wrong series or
body part sent to a task); its mutual information does not rise there. Two feature sets,
each with class-conditional Gaussians and a shared covariance (Lee et al., NeurIPS 2018):

- the suffix's ``embedding`` output averaged over the T MC samples (what the heads read;
  one extra graph output), in the task's ``branch`` columns (after the cross-modal MIFA) or
  all ``fused`` columns;
- the task's own prefix output (stem + first residual block, deterministic, computed by
  every runtime anyway), pooled to a per-channel mean and standard deviation (2 * W0
  values): low-level colour and texture statistics, which tell a pap-smear crop from a
  dermoscopy photo far better than the last layer does (benchmarks/ood_referral.py).

Score: with a prefix part, ``(s_prefix - c_p) / sd_p + (s_embedding - c_e) / sd_e``, each
Mahalanobis score standardised by its mean and standard deviation on the in-distribution
validation split (a feature ensemble as in Lee et al. 2018, section 2.2, with equal weights
instead of weights fitted on OOD samples, which a site does not have); without one (format
1 files, or ``--score embedding``), the embedding's Mahalanobis score alone. The density is
fitted by :mod:`drifa_edge.export.ood` (``drifa-edge calibrate-ood``), stored in
``ood.npz``, and scored here with numpy only (no torch).

Ensembles: every member has its own density (its own feature space: members' embeddings
are not comparable, so they are never averaged). Each member scores the case against its
own density, the score is divided by that member's threshold, and the ensemble's score is
the mean of these ratios, with threshold 1: ``ood_score`` 1.3 means "on average 30 % past
the members' thresholds". A mean past 1 needs at least one member past its own threshold,
so the false-referral rate is at most the rate at which any member refers (the members'
target when they agree, K times it at worst); it is not refitted on the ensemble's own
validation run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drifa_edge.artifact.ensemble import resolve_members
from drifa_edge.artifact.ood import TaskDensity, read_ood
from drifa_edge.errors import ArtifactError
from drifa_edge.metrics.mahalanobis import mahalanobis_scores


def prefix_statistics(prefix_outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per task (B, 2 * W0) float64: the channel means then the channel standard deviations
    over the spatial axes of the runtime's prefix output, M x (B, W0, H/4, W/4)."""
    out = []
    for f in prefix_outputs:
        x = np.asarray(f, dtype=np.float64)
        if x.ndim != 4:
            raise ArtifactError(f"prefix output must be (B, C, H, W), got shape {x.shape}")
        out.append(np.concatenate([x.mean(axis=(2, 3)), x.std(axis=(2, 3))], axis=1))
    return out


def run_prefix_statistics(runtime, images: Sequence[np.ndarray], rows: int = 64) -> list[np.ndarray]:
    """:func:`prefix_statistics` of ``images`` (per task (B, C, S, S)), ``rows`` cases per call."""
    batch = len(images[0])
    parts = [
        prefix_statistics(runtime.run_prefix([x[i : i + rows] for x in images]))
        for i in range(0, batch, rows)
    ]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(images))]


def task_score(d: TaskDensity, embedding: np.ndarray, prefix_stats: np.ndarray | None = None) -> np.ndarray:
    """One task's OOD score (B,) float64 from the MC-mean embedding (B, M*W3) and, when the
    density has a prefix part, that task's prefix statistics (B, 2 * W0)."""
    s = mahalanobis_scores(d.select(embedding), d.means, d.precision)
    if d.prefix is None:
        return s
    if prefix_stats is None:
        raise ArtifactError(
            "this OOD density has a prefix part; pass the task's prefix statistics "
            "(drifa_edge.inference.ood.run_prefix_statistics)"
        )
    p = d.prefix
    sp = mahalanobis_scores(prefix_stats, p.means, p.precision)
    return (sp - p.center) / p.scale + (s - p.embedding_center) / p.embedding_scale


def ood_scores(
    densities: dict[str, TaskDensity],
    embedding: np.ndarray,
    prefix_stats: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """OOD score per task, (B,) float64, from the MC-mean embedding (B, M*W3) and, for
    densities with a prefix part, ``prefix_stats`` {task: (B, 2 * W0)}."""
    return {
        task: task_score(d, embedding, None if prefix_stats is None else prefix_stats.get(task))
        for task, d in densities.items()
    }


@dataclass(frozen=True)
class OodScorer:
    """The OOD densities of one model (one entry) or of every ensemble member, in member order."""

    members: tuple[dict[str, TaskDensity], ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise ArtifactError("an OOD scorer needs the density of at least one model")
        bad = [t for m in self.members for t, d in m.items() if not d.threshold > 0]
        if len(self.members) > 1 and bad:  # the ensemble score is a mean of score / threshold
            raise ArtifactError(
                f"ensemble OOD thresholds must be > 0 (tasks {sorted(set(bad))}); refit with "
                "'drifa-edge calibrate-ood' on the ensemble folder"
            )

    @property
    def tasks(self) -> list[str]:
        """Tasks every member has a density for."""
        return [t for t in self.members[0] if all(t in m for m in self.members)]

    @property
    def needs_prefix(self) -> bool:
        """Whether a density has a prefix part (the predictor then computes prefix statistics)."""
        return any(d.prefix is not None for m in self.members for d in m.values())

    @property
    def fitted_samples(self) -> set:
        """The MC samples T the densities were fitted with (the score depends on T)."""
        return {d.fit.get("samples") for m in self.members for d in m.values()}

    def threshold(self, task: str) -> float:
        """The referral threshold of ``task``'s score: the model's own, 1.0 for an ensemble."""
        return self.members[0][task].threshold if len(self.members) == 1 else 1.0

    def scores(
        self, embeddings: Sequence[np.ndarray], prefix_stats: Sequence[dict[str, np.ndarray]] | None = None
    ) -> dict[str, np.ndarray]:
        """Per task (B,) float64 from every member's MC-mean embedding (B, M*W3) and, when
        :attr:`needs_prefix`, every member's prefix statistics {task: (B, 2 * W0)}: the
        model's score for one model; the mean over members of score / threshold for an
        ensemble (see the module docstring)."""
        if len(embeddings) != len(self.members):
            raise ArtifactError(
                f"{len(embeddings)} member embeddings for the OOD densities of {len(self.members)} members"
            )
        prefixes = list(prefix_stats) if prefix_stats is not None else [None] * len(self.members)
        per_member = [ood_scores(m, e, p) for m, e, p in zip(self.members, embeddings, prefixes, strict=True)]
        if len(self.members) == 1:
            return {t: per_member[0][t] for t in self.tasks}
        return {
            t: np.mean([s[t] / m[t].threshold for s, m in zip(per_member, self.members, strict=True)], axis=0)
            for t in self.tasks
        }


def load_ood(artifact: Path) -> OodScorer | None:
    """The OOD scorer of a model or an ensemble folder; None when no member has ``ood.npz``.
    Raises ArtifactError when only some members have one (fit them all: calibrate-ood on the
    ensemble folder)."""
    members = resolve_members(Path(artifact))
    densities = [read_ood(m) for m in members]
    missing = [str(m) for m, d in zip(members, densities, strict=True) if d is None]
    if len(missing) == len(members):
        return None
    if missing:
        raise ArtifactError(
            f"{artifact}: ensemble members {missing} have no ood.npz while others do; run "
            f"'drifa-edge calibrate-ood {artifact} --data ...' to fit every member"
        )
    return OodScorer(tuple(densities))
