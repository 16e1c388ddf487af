"""Metrics against hand-worked cases and against scikit-learn / scipy where installed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drifa_edge import metrics as M
from drifa_edge.errors import BadInputError

# ---------------------------------------------------------------- a hand-worked case
# 6 cases, 3 classes.
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],  # pred 0, true 0  correct, conf 0.7
        [0.1, 0.6, 0.3],  # pred 1, true 1  correct, conf 0.6
        [0.3, 0.3, 0.4],  # pred 2, true 0  wrong,   conf 0.4
        [0.2, 0.5, 0.3],  # pred 1, true 2  wrong,   conf 0.5
        [0.9, 0.05, 0.05],  # pred 0, true 0 correct, conf 0.9
        [0.1, 0.1, 0.8],  # pred 2, true 2  correct, conf 0.8
    ]
)
LABELS = np.array([0, 1, 0, 2, 0, 2])
PRED = PROBS.argmax(axis=1)  # [0, 1, 2, 1, 0, 2]


def test_label_metrics_by_hand():
    assert M.accuracy(LABELS, PRED) == pytest.approx(4 / 6)
    # recall: class 0: 2 of 3; class 1: 1 of 1; class 2: 1 of 2
    assert M.per_class_recall(LABELS, PRED, 3) == pytest.approx([2 / 3, 1.0, 0.5])
    assert M.balanced_accuracy(LABELS, PRED, 3) == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    # F1: class 0: P=2/2 R=2/3 -> 0.8; class 1: P=1/2 R=1 -> 2/3; class 2: P=1/2 R=1/2 -> 0.5
    assert M.macro_f1(LABELS, PRED, 3) == pytest.approx((0.8 + 2 / 3 + 0.5) / 3)


def test_recall_of_absent_class_is_none_and_skipped():
    y, p = np.array([0, 0, 1]), np.array([0, 1, 1])
    assert M.per_class_recall(y, p, 3) == [0.5, 1.0, None]
    assert M.balanced_accuracy(y, p, 3) == pytest.approx(0.75)
    # class 2 neither present nor predicted: skipped; F1(0)=2/3, F1(1)=2/3
    assert M.macro_f1(y, p, 3) == pytest.approx(2 / 3)


def test_proper_scores_by_hand():
    p_true = np.array([0.7, 0.6, 0.3, 0.3, 0.9, 0.8])
    assert M.nll(PROBS, LABELS) == pytest.approx(-np.mean(np.log(p_true)))
    # Brier row 0: 0.3^2 + 0.2^2 + 0.1^2 = 0.14
    rows = [
        0.14,
        0.01 + 0.16 + 0.09,
        0.49 + 0.09 + 0.16,
        0.04 + 0.25 + 0.49,
        0.01 + 0.0025 + 0.0025,
        0.01 + 0.01 + 0.04,
    ]
    assert M.brier(PROBS, LABELS) == pytest.approx(np.mean(rows))


def test_ece_mce_by_hand():
    # 5 bins of width 0.2: (0.2,0.4]: conf 0.4 wrong; (0.4,0.6]: 0.6 ok, 0.5 wrong;
    # (0.6,0.8]: 0.7 ok, 0.8 ok; (0.8,1]: 0.9 ok. Bin (0, 0.2] is empty and skipped.
    gaps = {"b1": abs(0 - 0.4), "b2": abs(0.5 - 0.55), "b3": abs(1 - 0.75), "b4": abs(1 - 0.9)}
    expected = (1 * gaps["b1"] + 2 * gaps["b2"] + 2 * gaps["b3"] + 1 * gaps["b4"]) / 6
    assert M.ece(PROBS, LABELS, bins=5) == pytest.approx(expected)
    assert M.mce(PROBS, LABELS, bins=5) == pytest.approx(0.4)
    r = M.reliability_bins(PROBS, LABELS, bins=5)
    assert r["count"].tolist() == [0, 1, 2, 2, 1]


def test_adaptive_ece_by_hand():
    # sorted confidences 0.4(w) 0.5(w) 0.6(ok) 0.7(ok) 0.8(ok) 0.9(ok); 3 equal-mass bins of 2
    expected = (2 * abs(0 - 0.45) + 2 * abs(1 - 0.65) + 2 * abs(1 - 0.85)) / 6
    assert M.adaptive_ece(PROBS, LABELS, bins=3) == pytest.approx(expected)
    # more bins than cases: one case per bin
    per_case = np.mean(np.abs((PRED == LABELS) - PROBS.max(axis=1)))
    assert M.adaptive_ece(PROBS, LABELS, bins=50) == pytest.approx(per_case)


def test_ece_bin_edges():
    # a confidence of exactly 0.2 with 5 bins belongs to the first bin (0, 0.2]
    probs = np.array([[0.2, 0.2, 0.2, 0.2, 0.2]])
    assert M.reliability_bins(probs, np.array([0]), bins=5)["count"].tolist() == [1, 0, 0, 0, 0]
    probs = np.array([[1.0, 0.0]])
    assert M.reliability_bins(probs, np.array([0]), bins=15)["count"][-1] == 1
    assert M.ece(probs, np.array([0])) == 0.0


def test_auroc_aupr_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    pos = np.array([1, 0, 1, 0, 0], dtype=bool)
    # pairs (pos, neg): 0.9 beats all 3, 0.7 beats 2 of 3 -> 5/6
    assert M.auroc(scores, pos) == pytest.approx(5 / 6)
    # precision at the positives: 1/1, 2/3 -> AP = 0.5*1 + 0.5*2/3
    assert M.aupr(scores, pos) == pytest.approx(0.5 + 1 / 3)
    # ties count one half
    assert M.auroc(np.array([0.5, 0.5]), np.array([True, False])) == pytest.approx(0.5)


def test_auroc_one_class_raises():
    with pytest.raises(BadInputError, match="positives and negatives"):
        M.auroc(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(BadInputError, match="positive"):
        M.aupr(np.array([0.1, 0.2]), np.array([False, False]))


def test_risk_coverage_by_hand():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, False, True, True])
    cov, risk, aurc = M.risk_coverage(conf, correct)
    assert cov.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk.tolist() == pytest.approx([0.0, 0.5, 1 / 3, 0.25])
    assert aurc == pytest.approx((0 + 0.5 + 1 / 3 + 0.25) / 4)
    assert M.accuracy_at_coverage(conf, correct, 0.5) == pytest.approx(0.5)
    assert M.accuracy_at_coverage(conf, correct, 0.75) == pytest.approx(2 / 3)
    assert M.accuracy_at_coverage(conf, correct, 1.0) == pytest.approx(0.75)


def test_risk_coverage_ties_enter_together():
    conf = np.array([0.9, 0.5, 0.5])
    _, risk_a, aurc_a = M.risk_coverage(conf, np.array([True, True, False]))
    _, risk_b, aurc_b = M.risk_coverage(conf, np.array([True, False, True]))
    assert aurc_a == aurc_b  # the order of tied cases cannot matter
    assert risk_a.tolist() == pytest.approx([0.0, 1 / 3])


def test_kl_by_hand_and_zero_terms():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    q = np.array([[0.25, 0.75, 0.0], [0.5, 0.5, 0.0]])
    expected0 = 0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75)
    assert M.kl_divergence(p, q) == pytest.approx([expected0, math.log(2)])
    assert M.kl_divergence(p, p) == pytest.approx([0.0, 0.0])


def test_spearman_with_ties_by_hand():
    a = np.array([1.0, 2.0, 2.0, 3.0])
    b = np.array([1.0, 3.0, 2.0, 4.0])
    # ranks a: 1, 2.5, 2.5, 4; b: 1, 3, 2, 4 -> Pearson of ranks
    ra, rb = np.array([1, 2.5, 2.5, 4]), np.array([1, 3, 2, 4.0])
    assert M.spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    with pytest.raises(BadInputError, match="constant"):
        M.spearman(np.ones(4), b)


def test_bad_inputs_raise():
    with pytest.raises(BadInputError, match="NaN"):
        M.ece(np.array([[np.nan, 1.0]]), np.array([0]))
    with pytest.raises(BadInputError, match=r"\[0, 3\)"):
        M.nll(PROBS, np.array([0, 1, 0, 2, 0, 3]))
    with pytest.raises(BadInputError, match="unscored"):
        M.nll(PROBS, np.array([0, 1, 0, 2, 0, -1]))
    with pytest.raises(BadInputError, match="rows"):
        M.brier(PROBS, LABELS[:3])


# ---------------------------------------------------------------- against independent implementations


@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(7)
    n, c = 300, 5
    logits = rng.normal(size=(n, c)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.where(rng.random(n) < 0.6, probs.argmax(axis=1), rng.integers(0, c, n))
    return probs, labels


def test_label_metrics_against_hand_computed_values():
    """The metrics are library-backed (sklearn/scipy, issue 13), so comparing them with the same
    library would prove nothing: a 4-case example worked out by hand instead.
    labels [0, 0, 1, 2], predictions [0, 1, 1, 1], 3 classes."""
    labels = np.array([0, 0, 1, 2])
    pred = np.array([0, 1, 1, 1])
    assert M.accuracy(labels, pred) == pytest.approx(0.5)
    # recalls 1/2, 1/1, 0/1
    assert M.per_class_recall(labels, pred, 3) == pytest.approx([0.5, 1.0, 0.0])
    assert M.balanced_accuracy(labels, pred, 3) == pytest.approx(0.5)
    # F1: class 0 = 2*1*0.5/1.5, class 1 = 2*(1/3)*1/(4/3), class 2 = 0 (never predicted)
    assert M.macro_f1(labels, pred, 3) == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)
    np.testing.assert_array_equal(
        M.confusion_matrix(labels, pred, 3), [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    )
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.1, 0.8, 0.1], [0.2, 0.6, 0.2]])
    expected_nll = -(np.log(0.7) + np.log(0.4) + np.log(0.8) + np.log(0.2)) / 4
    assert M.nll(probs, labels) == pytest.approx(expected_nll)
    # AUROC: positives score 0.9 and 0.3, negatives 0.8 and 0.1 -> 3 of 4 pairs ordered right
    scores = np.array([0.9, 0.8, 0.3, 0.1])
    positives = np.array([True, False, True, False])
    assert M.auroc(scores, positives) == pytest.approx(0.75)
    # average precision: recall 1/2 at precision 1, recall 1 at precision 2/3
    assert M.aupr(scores, positives) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_macro_f1_with_unpredicted_class_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    y = np.array([0, 0, 1, 1, 2, 2, 3])
    p = np.array([0, 1, 1, 1, 0, 0, 0])  # class 2 and 3 never predicted
    assert M.macro_f1(y, p, 5) == pytest.approx(sk.f1_score(y, p, average="macro", zero_division=0))


def test_spearman_and_ranks_against_hand_computed_values():
    """Ranks and Spearman are scipy's now (tests/metrics/test_library_backed.py compares them with
    the numpy code they replaced); here, values worked out by hand, ties included."""
    np.testing.assert_allclose(M.rankdata([10.0, 20.0, 20.0, 30.0]), [1.0, 2.5, 2.5, 4.0])
    assert M.spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)
    assert M.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1,2,3,4) vs (1,3,2,4): d^2 = 0+1+1+0 -> 1 - 6*2/(4*15) = 0.8
    assert M.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_kl_against_scipy(random_case):
    special = pytest.importorskip("scipy.special")
    probs, _ = random_case
    q = np.roll(probs, 1, axis=0)
    expected = special.rel_entr(probs, q).sum(axis=1)
    np.testing.assert_allclose(M.kl_divergence(probs, q), expected, rtol=1e-10)


def test_ece_against_loop_implementation(random_case):
    """An independent, deliberately naive ECE: loop over bins with explicit interval tests."""
    probs, labels = random_case
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    total = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        inside = [(lo < cf <= hi) or (b == 0 and cf == 0) for cf in conf]
        idx = np.flatnonzero(inside)
        if idx.size:
            total += idx.size * abs(np.mean(pred[idx] == labels[idx]) - np.mean(conf[idx]))
    assert M.ece(probs, labels) == pytest.approx(total / labels.size)


# ---------------------------------------------------------------- per-task summaries


def _samples(rng, n=80, s=10, c=4, scale=2.0):
    logits = rng.normal(size=(n, 1, c)) * scale + rng.normal(size=(n, s, c)) * 0.5
    e = np.exp(logits - logits.max(axis=2, keepdims=True))
    return e / e.sum(axis=2, keepdims=True)


def test_task_metrics_drops_unscored_rows():
    rng = np.random.default_rng(0)
    samples = _samples(rng)
    labels = rng.integers(0, 4, size=80)
    labels_with_repeats = labels.copy()
    labels_with_repeats[60:] = -1
    full = M.task_metrics(samples[:60], labels[:60], referral_threshold=0.05)
    dropped = M.task_metrics(samples, labels_with_repeats, referral_threshold=0.05)
    assert dropped == full
    assert full["cases"] == 60
    assert full["accuracy"] == pytest.approx(M.accuracy(labels[:60], samples[:60].mean(1).argmax(1)))
    assert 0.0 <= full["referral_rate"] <= 1.0


def test_task_metrics_error_detection_none_without_errors():
    rng = np.random.default_rng(1)
    samples = _samples(rng)
    labels = samples.mean(axis=1).argmax(axis=1)  # every prediction correct
    m = M.task_metrics(samples, labels, referral_threshold=float("inf"))
    assert m["accuracy"] == 1.0 and m["error_auroc_mi"] is None and m["error_aupr_entropy"] is None
    assert m["referral_rate"] == 0.0 and m["aurc"] == 0.0


def test_pair_metrics_identical_and_different():
    rng = np.random.default_rng(2)
    a = _samples(rng)
    same = M.pair_metrics(a, a.copy(), 0.01, 0.01)
    assert same["agreement"] == 1.0 and same["mean_kl"] == pytest.approx(0.0, abs=1e-12)
    assert same["spearman_mi"] == pytest.approx(1.0) and same["referral_agreement"] == 1.0
    b = _samples(np.random.default_rng(99))
    other = M.pair_metrics(a, b, 0.01, 0.01)
    assert other["mean_kl"] > 0.1 and other["agreement"] < 0.7
    # a deterministic model (one sample) has MI == 0 everywhere: Spearman undefined -> None
    det = M.pair_metrics(a[:, :1], a[:, :1], 0.01, 0.01)
    assert det["spearman_mi"] is None and det["spearman_entropy"] == pytest.approx(1.0)


def test_fast_parts_equal_the_plain_functions(random_case):
    probs, labels = random_case
    pred, conf = probs.argmax(axis=1), probs.max(axis=1)
    parts = M.ece_from_parts(M.bin_index(conf, 15), conf, (pred == labels).astype(float), 15)
    assert parts == pytest.approx(M.ece(probs, labels, 15))
    cm = M.confusion_matrix(labels, pred, probs.shape[1])
    assert M.macro_f1_from_confusion(cm) == M.macro_f1(labels, pred, probs.shape[1])


def test_rankdata_rows_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    a = rng.integers(0, 6, size=(50, 40)).astype(float)  # heavy ties
    np.testing.assert_allclose(M.rankdata_rows(a), stats.rankdata(a, axis=1))
    np.testing.assert_allclose(M.rankdata_rows(a[:1]), M.rankdata(a[0])[None])
