"""Out-of-distribution referral per task: score a case by how far its pooled features lie
from the training data (Mahalanobis distance, :mod:`drifa_edge.metrics.mahalanobis`).

Why: MC dropout stays confident on inputs unlike the training data (a wrong series or
body part sent to a task); its mutual information does not rise there. The features are
the suffix's ``embedding`` output averaged over the T MC samples, so the score costs one
extra graph output and a (D, D) matrix product per case, on any runtime that returns it
(torch, ONNX Runtime, OpenVINO), without torch. The density is fitted by
:mod:`drifa_edge.export.ood` (``drifa-edge calibrate-ood``) and stored in ``ood.npz``.

Feature space per task: ``branch`` (that task's own W3 columns of the fused embedding,
after the cross-modal MIFA) or ``fused`` (all M * W3 columns the heads read).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drifa_edge.artifact.ensemble import resolve_members
from drifa_edge.artifact.ood import TaskDensity
from drifa_edge.errors import ArtifactError
from drifa_edge.metrics.mahalanobis import mahalanobis_scores


def ood_scores(densities: dict[str, TaskDensity], embedding: np.ndarray) -> dict[str, np.ndarray]:
    """Mahalanobis score per task, (B,) float64, from the MC-mean embedding (B, M*W3)."""
    return {
        task: mahalanobis_scores(d.select(embedding), d.means, d.precision) for task, d in densities.items()
    }


def single_member(artifact: Path) -> Path:
    members = resolve_members(Path(artifact))
    if len(members) != 1:
        raise ArtifactError(
            f"{artifact}: an ensemble of {len(members)} members; the OOD density is fitted per model, "
            "run calibrate-ood on each member folder (ensemble OOD scoring is not supported yet)"
        )
    return members[0]
