"""Feature-space out-of-distribution score: class-conditional Gaussians with one shared
covariance, scored by the Mahalanobis distance to the closest class mean.

Source: K. Lee, K. Lee, H. Lee, J. Shin, "A Simple Unified Framework for Detecting
Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018 (eq. 1-2: class means
``mu_c``, shared covariance ``Sigma`` from the class-centred training features, score
``min_c (x - mu_c)^T Sigma^-1 (x - mu_c)``; larger = further from the training data).
No input preprocessing (their eq. 4) and no layer ensemble: one feature vector per case.

The covariance is shrunk towards a scaled identity, ``(1 - a) Sigma + a (tr Sigma / D) I``,
because a few hundred training cases do not determine a 512 x 512 covariance (singular
for N < D); ``a`` = ``shrinkage``. Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np

from drifa_edge.errors import BadInputError, ConfigError


def fit_class_gaussians(
    features: np.ndarray, labels: np.ndarray, shrinkage: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit the class means and the shared precision matrix.

    ``features`` (N, D), ``labels`` (N,) integer class indices (rows with label < 0 are
    ignored). Returns (classes (K,) the labels present, means (K, D), precision (D, D)),
    float64. Raises BadInputError with fewer than 2 scored rows, or non-finite features."""
    if not 0.0 <= shrinkage < 1.0:
        raise ConfigError(f"shrinkage must be in [0, 1), got {shrinkage}")
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise BadInputError(f"features must be (N, D) and labels (N,), got {x.shape} and {y.shape}")
    keep = y >= 0
    x, y = x[keep], y[keep]
    if len(x) < 2:
        raise BadInputError(f"need at least 2 labelled feature rows to fit the OOD density, got {len(x)}")
    if not np.isfinite(x).all():
        raise BadInputError("OOD features contain NaN or Inf")
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])  # (K, D)
    centred = x - means[np.searchsorted(classes, y)]  # (N, D)
    cov = centred.T @ centred / len(x)  # (D, D), the MLE of Lee et al.
    scale = np.trace(cov) / cov.shape[0]
    if not scale > 0:
        raise BadInputError("OOD features have zero variance around their class means; cannot fit")
    cov = (1.0 - shrinkage) * cov + shrinkage * scale * np.eye(cov.shape[0])
    precision = np.linalg.pinv(cov, hermitian=True)
    return classes, means, precision


def mahalanobis_scores(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """``min_c (x - mu_c)^T P (x - mu_c)`` per row: (N, D), (K, D), (D, D) -> (N,) float64, >= 0."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != means.shape[1]:
        raise BadInputError(f"features must be (N, {means.shape[1]}), got {x.shape}")
    diff = x[:, None, :] - means[None, :, :]  # (N, K, D)
    d2 = np.einsum("nkd,de,nke->nk", diff, precision, diff)  # (N, K)
    return np.maximum(d2.min(axis=1), 0.0)


def whitening(precision: np.ndarray) -> np.ndarray:
    """A (D, D) matrix W with ``x^T P x = ||x W||^2`` for every row x (P = ``precision``,
    symmetric positive semi-definite): W = V diag(sqrt(s)) from P's eigendecomposition
    V diag(s) V^T, tiny negative eigenvalues (rounding) clipped to 0.

    Mahalanobis distances become Euclidean after ``x @ W``, so a score of an average of
    features can be updated linearly (the drift gate's noise model swaps single MC draws)."""
    p = np.asarray(precision, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise BadInputError(f"precision must be a square (D, D) matrix, got shape {p.shape}")
    s, v = np.linalg.eigh((p + p.T) / 2)
    return v * np.sqrt(np.maximum(s, 0.0))[None, :]
