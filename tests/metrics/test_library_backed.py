"""The metrics now computed by scipy / scikit-learn (issue 13) against the numpy code they
replaced: the previous implementations are kept here, verbatim in substance, as the
independent computation. Data with heavy ties, rare classes and near-zero probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drifa_edge import metrics as M
from drifa_edge.metrics.temperature import fit_temperature, mc_nll

pytest.importorskip("scipy")
pytest.importorskip("sklearn")


# ----------------------------------------------------------------------------- the replaced numpy code


def old_rankdata(a):
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    lengths = np.diff(np.r_[starts, a.size])
    ranks = np.empty(a.size)
    ranks[order] = np.repeat(starts + (lengths + 1) / 2.0, lengths)
    return ranks


def old_spearman(a, b):
    ra, rb = old_rankdata(a), old_rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / math.sqrt(float(ra @ ra) * float(rb @ rb)))


def old_auroc(scores, positives):
    ranks = old_rankdata(scores)
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def old_aupr(scores, positives):
    order = np.argsort(-scores, kind="stable")
    s, pos = scores[order], positives[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(pos)[last_of_tie]
    precision = tp / (np.flatnonzero(last_of_tie) + 1)
    recall = tp / positives.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def old_nll(probs, labels):
    return float(-np.mean(np.log(np.clip(probs[np.arange(labels.size), labels], 1e-12, 1.0))))


def old_brier(probs, labels):
    onehot = np.zeros_like(probs)
    onehot[np.arange(labels.size), labels] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def old_macro_f1(y_true, y_pred, classes):
    cm = np.bincount(y_true * classes + y_pred, minlength=classes**2).reshape(classes, classes)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    seen = (support + predicted) > 0
    return float((2 * tp[seen] / (support[seen] + predicted[seen])).mean())


def old_fit_temperature(z, y, grid=49, tol=1e-4):
    """Grid bracket, then golden-section search on log T (the previous hand-written search)."""
    golden = (math.sqrt(5.0) - 1.0) / 2.0

    def loss(log_t):
        return mc_nll(z, y, math.exp(log_t))

    points = np.linspace(math.log(0.05), math.log(20.0), grid)
    values = [loss(x) for x in points]
    best = int(np.argmin(values))
    lo, hi = points[max(best - 1, 0)], points[min(best + 1, grid - 1)]
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = loss(a), loss(b)
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = loss(b)
    log_t, f_t = min([(a, fa), (b, fb), (points[best], values[best])], key=lambda p: p[1])
    return math.exp(log_t) if f_t < loss(0.0) else 1.0


# ----------------------------------------------------------------------------- comparisons


@pytest.fixture(params=[0, 1, 2])
def case(request):
    rng = np.random.default_rng(request.param)
    n, c = 300, 6
    logits = rng.normal(size=(n, c)) * 3.0
    logits[: n // 10, 0] += 40.0  # some probabilities below 1e-12 elsewhere in the row
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    labels = rng.choice(c - 1, size=n)  # class c - 1 never present
    scores = np.round(rng.random(n), 1)  # heavy ties
    return probs, labels, scores


def test_ranks_and_spearman_equal_the_numpy_versions(case):
    _, labels, scores = case
    np.testing.assert_allclose(M.rankdata(scores), old_rankdata(scores))
    rows = np.stack([scores, scores[::-1], labels.astype(float)])
    np.testing.assert_allclose(M.rankdata_rows(rows), np.stack([old_rankdata(r) for r in rows]))
    assert M.spearman(scores, labels) == pytest.approx(old_spearman(scores, labels), abs=1e-12)


def test_auroc_aupr_equal_the_numpy_versions(case):
    _, labels, scores = case
    positives = labels == 0
    assert M.auroc(scores, positives) == pytest.approx(old_auroc(scores, positives), abs=1e-12)
    assert M.aupr(scores, positives) == pytest.approx(old_aupr(scores, positives), abs=1e-12)


def test_scoring_rules_and_label_metrics_equal_the_numpy_versions(case):
    probs, labels, _ = case
    # log_loss clips at float64 eps, the old code at 1e-12: equal wherever p >= 1e-12
    ok = probs[np.arange(labels.size), labels] >= 1e-12
    assert M.nll(probs[ok], labels[ok]) == pytest.approx(old_nll(probs[ok], labels[ok]), rel=1e-12)
    assert M.nll(probs, labels) >= old_nll(probs, labels)  # the library charges more below 1e-12
    assert M.brier(probs, labels) == pytest.approx(old_brier(probs, labels), rel=1e-12)
    pred = probs.argmax(axis=1)
    assert M.accuracy(labels, pred) == pytest.approx(float(np.mean(labels == pred)))
    assert M.macro_f1(labels, pred, probs.shape[1]) == pytest.approx(
        old_macro_f1(labels, pred, probs.shape[1])
    )


@pytest.mark.parametrize("true_t", [0.4, 1.0, 2.5])
def test_temperature_search_equals_the_golden_section_search(true_t):
    rng = np.random.default_rng(7)
    base = rng.normal(size=(400, 1, 5)) * 3.0
    z = base + 0.5 * rng.normal(size=(400, 8, 5))
    p = np.exp(base[:, 0] / true_t)
    p /= p.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p])
    new, old = fit_temperature(z, y), old_fit_temperature(z, y)
    assert new == pytest.approx(old, rel=2e-3)
    assert mc_nll(z, y, new) <= mc_nll(z, y, old) + 1e-6
