"""Out-of-distribution referral per task: score a case by how far its pooled features lie
from the training data (Mahalanobis distance, :mod:`drifa_edge.metrics.mahalanobis`).

Why: MC dropout stays confident on inputs unlike the training data (a wrong series or
body part sent to a task); its mutual information does not rise there. The features are
the suffix's ``embedding`` output averaged over the T MC samples, so the score costs one
extra graph output and a (D, D) matrix product per case, on any runtime that returns it
(torch, ONNX Runtime, OpenVINO, TensorRT engines built from such an export), without
torch. The density is fitted by :mod:`drifa_edge.export.ood` (``drifa-edge calibrate-ood``)
and stored in ``ood.npz``.

Feature space per task: ``branch`` (that task's own W3 columns of the fused embedding,
after the cross-modal MIFA) or ``fused`` (all M * W3 columns the heads read).

Ensembles: every member has its own density (its own feature space: members' embeddings
are not comparable, so they are never averaged). Each member scores the case against its
own density, the score is divided by that member's threshold, and the ensemble's score is
the mean of these ratios, with threshold 1: ``ood_score`` 1.3 means "on average 30 % past
the members' thresholds". Each ratio is <= 1 for all but the target share of its member's
validation cases, and a mean of such correlated ratios is <= 1 at least as often (a mean
shrinks the tails), so the false-referral rate stays at or below the members' target; it
is not refitted on the ensemble's own validation run.
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


def ood_scores(densities: dict[str, TaskDensity], embedding: np.ndarray) -> dict[str, np.ndarray]:
    """Mahalanobis score per task, (B,) float64, from the MC-mean embedding (B, M*W3)."""
    return {
        task: mahalanobis_scores(d.select(embedding), d.means, d.precision) for task, d in densities.items()
    }


@dataclass(frozen=True)
class OodScorer:
    """The OOD densities of one model (one entry) or of every ensemble member, in member order."""

    members: tuple[dict[str, TaskDensity], ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise ArtifactError("an OOD scorer needs the density of at least one model")

    @property
    def tasks(self) -> list[str]:
        """Tasks every member has a density for."""
        return [t for t in self.members[0] if all(t in m for m in self.members)]

    @property
    def fitted_samples(self) -> set:
        """The MC samples T the densities were fitted with (the score depends on T)."""
        return {d.fit.get("samples") for m in self.members for d in m.values()}

    def threshold(self, task: str) -> float:
        """The referral threshold of ``task``'s score: the model's own, 1.0 for an ensemble."""
        return self.members[0][task].threshold if len(self.members) == 1 else 1.0

    def scores(self, embeddings: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Per task (B,) float64 from every member's MC-mean embedding (B, M*W3): the
        Mahalanobis score for one model; the mean over members of score / threshold for
        an ensemble (see the module docstring)."""
        if len(embeddings) != len(self.members):
            raise ArtifactError(
                f"{len(embeddings)} member embeddings for the OOD densities of {len(self.members)} members"
            )
        per_member = [ood_scores(m, e) for m, e in zip(self.members, embeddings, strict=True)]
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
