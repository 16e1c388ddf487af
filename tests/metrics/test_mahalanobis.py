"""The Mahalanobis OOD score against independent computations (numpy covariance, scipy distance)."""

from __future__ import annotations

import numpy as np
import pytest

from drifa_edge.errors import BadInputError, ConfigError
from drifa_edge.metrics.mahalanobis import fit_class_gaussians, mahalanobis_scores


def _data(n: int = 300, d: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = rng.normal(0, 3, (3, d))
    mix = rng.normal(0, 1, (d, d))  # a correlated, non-diagonal shared covariance
    x = centres[labels] + rng.normal(0, 1, (n, d)) @ mix
    return x, labels


def test_fit_matches_numpy_class_means_and_pooled_covariance():
    x, y = _data()
    classes, means, precision = fit_class_gaussians(x, y, shrinkage=0.0)
    assert classes.tolist() == [0, 1, 2]
    for k in range(3):
        np.testing.assert_allclose(means[k], x[y == k].mean(axis=0), rtol=1e-12)
    centred = np.concatenate([x[y == k] - x[y == k].mean(axis=0) for k in range(3)])
    pooled = np.cov(centred, rowvar=False, bias=True)  # the MLE of Lee et al. (divide by N)
    np.testing.assert_allclose(precision, np.linalg.inv(pooled), rtol=1e-8)


def test_shrinkage_moves_towards_a_scaled_identity():
    x, y = _data()
    _, _, p0 = fit_class_gaussians(x, y, shrinkage=0.0)
    _, _, p = fit_class_gaussians(x, y, shrinkage=0.5)
    cov0 = np.linalg.inv(p0)
    expected = 0.5 * cov0 + 0.5 * np.trace(cov0) / len(cov0) * np.eye(len(cov0))
    np.testing.assert_allclose(np.linalg.inv(p), expected, rtol=1e-8)


def test_scores_match_scipy_mahalanobis():
    distance = pytest.importorskip("scipy.spatial.distance")
    x, y = _data()
    _, means, precision = fit_class_gaussians(x, y, shrinkage=0.1)
    queries = np.random.default_rng(1).normal(0, 4, (20, x.shape[1]))
    ours = mahalanobis_scores(queries, means, precision)
    theirs = [min(distance.mahalanobis(q, m, precision) ** 2 for m in means) for q in queries]
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)


def test_far_points_score_higher_than_training_points():
    x, y = _data()
    _, means, precision = fit_class_gaussians(x, y)
    inside = mahalanobis_scores(x, means, precision)
    outside = mahalanobis_scores(x + 50.0, means, precision)
    assert np.median(outside) > 10 * np.quantile(inside, 0.95)


def test_unlabelled_rows_are_ignored_and_bad_input_refused():
    x, y = _data()
    y2 = y.copy()
    y2[::2] = -1
    _, means, _ = fit_class_gaussians(x, y2)
    np.testing.assert_allclose(means[0], x[(y2 == 0)].mean(axis=0))
    with pytest.raises(BadInputError, match="at least 2"):
        fit_class_gaussians(x[:1], y[:1])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        fit_class_gaussians(bad, y)
    with pytest.raises(ConfigError, match="shrinkage"):
        fit_class_gaussians(x, y, shrinkage=1.0)
    with pytest.raises(BadInputError, match=r"\(N, 5\)"):
        mahalanobis_scores(x[:, :3], np.zeros((2, 5)), np.eye(5))
