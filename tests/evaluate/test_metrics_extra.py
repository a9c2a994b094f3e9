import math
import re

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

import cnnlab.evaluate
from cnnlab.errors import ShapeError
from cnnlab.evaluate import (
    UndefinedMetricWarning,
    balanced_accuracy,
    bootstrap_ci,
    classification_report,
    expected_calibration_error,
    log_loss,
    mcnemar,
    normalized_confusion_matrix,
    roc_auc,
    roc_curves,
    top_k_accuracy,
)

K = 5


@pytest.fixture(scope="module")
def random_case():
    """Random but informative predictions: (targets, probs, preds) with every class present."""
    rng = np.random.default_rng(0)
    n = 600
    targets = rng.integers(0, K, n)
    logits = rng.normal(size=(n, K)) + 1.5 * np.eye(K)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return targets, probs, probs.argmax(1)


def test_all_is_exported():
    names = ["balanced_accuracy", "bootstrap_ci", "expected_calibration_error", "log_loss",
             "mcnemar", "normalized_confusion_matrix", "roc_auc", "roc_curves", "top_k_accuracy"]
    assert set(names) <= set(cnnlab.evaluate.__all__)
    assert set(cnnlab.evaluate.metrics.__all__) <= set(cnnlab.evaluate.__all__)
    for name in cnnlab.evaluate.__all__:
        assert getattr(cnnlab.evaluate, name) is not None


# --- balanced accuracy ---------------------------------------------------------------------------

def test_balanced_accuracy_hand_computed():
    # recall: class 0 1/2, class 1 2/2, class 2 0/1
    assert balanced_accuracy([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3) == pytest.approx(0.5)
    assert balanced_accuracy(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 0]), 2) == 0.5


def test_balanced_accuracy_warns_for_predicted_class_without_samples():
    with pytest.warns(UndefinedMetricWarning, match=r"class\(es\) \[2\]"):
        value = balanced_accuracy([0, 1], [0, 2], 3)
    assert value == 0.5  # mean over the present classes 0 and 1


def test_balanced_accuracy_matches_sklearn(random_case):
    t, _, p = random_case
    assert balanced_accuracy(t, p, K) == pytest.approx(skm.balanced_accuracy_score(t, p), abs=1e-6)


# --- top-k accuracy ------------------------------------------------------------------------------

def test_top_k_accuracy_hand_computed():
    probs = [[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.4, 0.4, 0.2]]
    targets = [1, 0, 1]
    assert top_k_accuracy(targets, probs, 1) == 0.0  # tie in row 3 goes to class 0, like argmax
    assert top_k_accuracy(targets, probs, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(targets, probs, 3) == 1.0


def test_top_k_accuracy_matches_sklearn(random_case):
    t, probs, p = random_case
    assert top_k_accuracy(t, probs, 1) == pytest.approx(skm.accuracy_score(t, p), abs=1e-12)
    for k in (1, 2, 3, 4):
        expected = skm.top_k_accuracy_score(t, probs, k=k, labels=range(K))
        assert top_k_accuracy(torch.from_numpy(t), torch.from_numpy(probs), k) == pytest.approx(
            expected, abs=1e-6)


# --- specificity in the report -------------------------------------------------------------------

def test_report_specificity_hand_computed():
    # true: 0 0 1 1 2 ; pred: 0 1 1 1 0  -> FP: 1, 1, 0 ; negatives: 3, 3, 4
    with pytest.warns(UndefinedMetricWarning, match="precision"):
        r = classification_report([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"],
                                  specificity=True)
    spec = [2 / 3, 2 / 3, 1.0]
    for name, s in zip("abc", spec, strict=True):
        assert r["per_class"][name]["specificity"] == pytest.approx(s)
    assert set(r["per_class"]["a"]) == {"precision", "recall", "f1", "support", "specificity"}
    assert r["macro"]["specificity"] == pytest.approx(sum(spec) / 3)
    assert r["weighted"]["specificity"] == pytest.approx((2 * spec[0] + 2 * spec[1] + spec[2]) / 5)
    assert r["per_class"]["a"]["recall"] == 0.5  # existing keys unchanged


def test_report_keys_with_and_without_specificity():
    r = classification_report([0, 1], [0, 1], ["a", "b"])
    assert r["per_class"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1,
                                   "specificity": 1.0}
    assert set(r["macro"]) == set(r["weighted"]) == {"precision", "recall", "f1", "specificity"}
    r = classification_report([0, 1], [0, 1], ["a", "b"], specificity=False)
    assert r["per_class"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert set(r["macro"]) == set(r["weighted"]) == {"precision", "recall", "f1"}


def test_report_specificity_matches_sklearn_recall_of_the_rest(random_case):
    t, _, p = random_case
    r = classification_report(t, p, [str(c) for c in range(K)], specificity=True)
    for c in range(K):
        expected = skm.recall_score(t != c, p != c)
        assert r["per_class"][str(c)]["specificity"] == pytest.approx(expected, abs=1e-9)


def test_report_specificity_undefined_without_negatives():
    with pytest.warns(UndefinedMetricWarning) as record:
        r = classification_report([0, 0], [0, 1], ["a", "b"], specificity=True)
    messages = [str(w.message) for w in record]
    assert "specificity (no negative samples) is undefined for class(es) ['a'] and set to 0.0" \
        in messages
    assert r["per_class"]["a"]["specificity"] == 0.0
    assert r["per_class"]["b"]["specificity"] == 0.5


# --- normalized confusion matrix -----------------------------------------------------------------

def test_normalized_confusion_matrix_hand_computed():
    cm = np.array([[1, 1, 0], [0, 2, 0], [0, 0, 0]])
    true = normalized_confusion_matrix(cm, "true")
    assert true.tolist() == [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    pred = normalized_confusion_matrix(torch.from_numpy(cm), over="pred")
    assert pred == pytest.approx(np.array([[1, 1 / 3, 0], [0, 2 / 3, 0], [0, 0, 0]]))
    assert normalized_confusion_matrix(cm, "all") == pytest.approx(cm / 4)
    assert not np.isnan(normalized_confusion_matrix(np.zeros((2, 2)), "true")).any()


@pytest.mark.parametrize("over", ["true", "pred", "all"])
def test_normalized_confusion_matrix_matches_sklearn(random_case, over):
    t, _, p = random_case
    p = np.where(p == 4, 3, p)  # class 4 never predicted: an empty column
    ours = normalized_confusion_matrix(skm.confusion_matrix(t, p, labels=range(K)), over)
    expected = skm.confusion_matrix(t, p, labels=range(K), normalize=over)
    np.testing.assert_allclose(ours, expected, atol=1e-6)


# --- ROC -----------------------------------------------------------------------------------------

def test_roc_hand_computed():
    # class 1 scores: positives 0.8, 0.4; negatives 0.6, 0.2 -> AUC 3/4
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.4, 0.6], [0.8, 0.2]])
    targets = [1, 1, 0, 0]
    fpr, tpr, thresholds = roc_curves(targets, probs, drop_intermediate=False)[1]
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1]
    assert tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert thresholds.tolist() == [np.inf, 0.8, 0.6, 0.4, 0.2]
    assert roc_auc(targets, probs, average=None) == pytest.approx([0.75, 0.75])
    assert roc_auc(targets, probs) == pytest.approx(0.75)
    assert roc_auc(targets, probs, "micro") == pytest.approx(0.75)


def test_roc_matches_sklearn(random_case):
    t, probs, _ = random_case
    curves = roc_curves(torch.from_numpy(t), torch.from_numpy(probs))
    assert len(curves) == K
    for c, (fpr, tpr, thresholds) in enumerate(curves):
        sk_fpr, sk_tpr, sk_thr = skm.roc_curve(t == c, probs[:, c])
        np.testing.assert_allclose(fpr, sk_fpr, atol=1e-6)
        np.testing.assert_allclose(tpr, sk_tpr, atol=1e-6)
        np.testing.assert_allclose(thresholds, sk_thr, atol=1e-6)
    assert roc_auc(t, probs) == pytest.approx(
        skm.roc_auc_score(t, probs, multi_class="ovr", average="macro"), abs=1e-6)
    onehot = label_binarize(t, classes=range(K))
    assert roc_auc(t, probs, "micro") == pytest.approx(
        skm.roc_auc_score(onehot, probs, average="micro"), abs=1e-6)
    np.testing.assert_allclose(roc_auc(t, probs, None),
                               skm.roc_auc_score(onehot, probs, average=None), atol=1e-6)


def test_roc_auc_leaves_out_class_without_positives(random_case):
    t, probs, _ = random_case
    t = np.where(t == 2, 0, t)  # class 2 has no positives
    with pytest.warns(UndefinedMetricWarning, match=r"left out .* class\(es\) \[2\] have no "
                                                    r"positive samples"):
        macro = roc_auc(t, probs)
    with pytest.warns(UndefinedMetricWarning):
        areas = roc_auc(t, probs, None)
    assert np.isnan(areas[2])
    assert macro == pytest.approx(np.nanmean(areas))
    with pytest.warns(UndefinedMetricWarning, match=r"ROC curve .* \[2\]"):
        fpr, tpr, _ = roc_curves(t, probs)[2]
    assert np.isnan(tpr).all() and not np.isnan(fpr).any()


# --- log loss ------------------------------------------------------------------------------------

def test_log_loss_hand_computed():
    probs = [[0.5, 0.5], [0.1, 0.9], [1.0, 0.0]]
    expected = -(math.log(0.5) + math.log(0.9) + math.log(1e-15)) / 3
    assert log_loss([0, 1, 1], probs) == pytest.approx(expected)
    assert log_loss([0, 1, 1], probs, eps=1e-3) == pytest.approx(
        -(math.log(0.5) + math.log(0.9) + math.log(1e-3)) / 3)


def test_log_loss_matches_sklearn(random_case):
    t, probs, _ = random_case
    assert log_loss(t, probs) == pytest.approx(skm.log_loss(t, probs), abs=1e-6)
    as_float32 = torch.from_numpy(probs).float()
    assert log_loss(t, as_float32) == pytest.approx(skm.log_loss(t, probs), abs=1e-6)


# --- calibration ---------------------------------------------------------------------------------

def test_ece_hand_computed():
    probs = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]
    targets = [0, 1, 1, 0]
    # 2 bins: (0.5, 1] holds all 4: mean confidence 0.75, accuracy 0.5 -> ECE 0.25
    ece, bins = expected_calibration_error(targets, probs, n_bins=2)
    assert ece == pytest.approx(0.25)
    assert bins["count"].tolist() == [0, 4]
    assert bins["confidence"] == pytest.approx([0.0, 0.75])
    assert bins["accuracy"] == pytest.approx([0.0, 0.5])
    # 5 bins: 0.6 in (0.4, 0.6] wrong; 0.7 right and 0.8 wrong in (0.6, 0.8]; 0.9 right
    ece, bins = expected_calibration_error(targets, probs, n_bins=5)
    assert bins["count"].tolist() == [0, 0, 1, 2, 1]
    assert ece == pytest.approx((abs(0 - 0.6) + 2 * abs(0.5 - 0.75) + abs(1 - 0.9)) / 4)


def test_ece_matches_direct_computation(random_case):
    t, probs, _ = random_case
    ece, bins = expected_calibration_error(t, probs, n_bins=15)
    edges = np.linspace(0, 1, 16)
    conf, pred = probs.max(1), probs.argmax(1)
    direct = 0.0
    for b in range(15):
        inside = (conf > edges[b]) & (conf <= edges[b + 1])
        assert bins["count"][b] == inside.sum()
        if inside.any():
            acc, mean_conf = (pred[inside] == t[inside]).mean(), conf[inside].mean()
            assert bins["accuracy"][b] == pytest.approx(acc)
            assert bins["confidence"][b] == pytest.approx(mean_conf)
            direct += inside.mean() * abs(acc - mean_conf)
    assert bins["count"].sum() == len(t)
    assert ece == pytest.approx(direct, abs=1e-12)


# --- bootstrap -----------------------------------------------------------------------------------

def test_bootstrap_ci_point_and_interval(random_case):
    t, _, p = random_case
    point, low, high = bootstrap_ci(t, p)
    assert point == pytest.approx(skm.accuracy_score(t, p))
    assert low < point < high
    point, low, high = bootstrap_ci(torch.from_numpy(t), torch.from_numpy(p), "macro_f1")
    assert point == pytest.approx(skm.f1_score(t, p, average="macro"), abs=1e-9)
    assert low < point < high
    assert bootstrap_ci(t, p, seed=3) == bootstrap_ci(t, p, seed=3)  # reproducible


def test_bootstrap_ci_hand_computed_degenerate():
    assert bootstrap_ci([0, 1, 1], [0, 1, 1], n_boot=50) == (1.0, 1.0, 1.0)
    assert bootstrap_ci([0, 1, 1], [1, 0, 0], "macro_f1", n_boot=50) == (0.0, 0.0, 0.0)


def test_bootstrap_ci_matches_index_resampling():
    # the multinomial shortcut has the distribution of resampling indices
    rng = np.random.default_rng(1)
    t = rng.integers(0, 3, 300)
    p = np.where(rng.random(300) < 0.6, t, rng.integers(0, 3, 300))
    idx = rng.integers(0, 300, (4000, 300))
    direct = np.array([skm.f1_score(t[i], p[i], average="macro") for i in idx[:300]])
    _, low, high = bootstrap_ci(t, p, "macro_f1", n_boot=4000, confidence=0.9)
    lo_d, hi_d = np.quantile(direct, [0.05, 0.95])
    assert abs(low - lo_d) < 0.02 and abs(high - hi_d) < 0.02
    acc = (t[idx] == p[idx]).mean(1)
    _, low, high = bootstrap_ci(t, p, n_boot=4000, confidence=0.9)
    assert low == pytest.approx(np.quantile(acc, 0.05), abs=0.01)
    assert high == pytest.approx(np.quantile(acc, 0.95), abs=0.01)


def test_bootstrap_ci_narrows_with_more_samples():
    rng = np.random.default_rng(2)
    widths = []
    for n in (500, 10_000):
        t = rng.integers(0, 10, n)
        p = np.where(rng.random(n) < 0.8, t, rng.integers(0, 10, n))
        _, low, high = bootstrap_ci(t, p, "macro_f1", n_boot=1000)
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


# --- McNemar -------------------------------------------------------------------------------------

def _mcnemar_case(b, c, both_right=5, both_wrong=3):
    """targets and two prediction vectors with b samples only A gets right, c only B."""
    t = np.zeros(b + c + both_right + both_wrong, dtype=int)
    a = np.r_[np.zeros(b), np.ones(c), np.zeros(both_right), np.ones(both_wrong)].astype(int)
    bb = np.r_[np.ones(b), np.zeros(c), np.zeros(both_right), np.ones(both_wrong)].astype(int)
    return t, a, bb


def test_mcnemar_exact_hand_computed():
    stat, p = mcnemar(*_mcnemar_case(10, 2))
    assert stat == 2
    assert p == pytest.approx(2 * sum(math.comb(12, i) for i in range(3)) / 2**12)
    assert mcnemar(*_mcnemar_case(0, 0)) == (0.0, 1.0)
    assert mcnemar(*_mcnemar_case(3, 3))[1] == 1.0  # 2 * P(X <= 3) > 1 is capped


def test_mcnemar_chi2_hand_computed():
    stat, p = mcnemar(*_mcnemar_case(30, 10))
    assert stat == pytest.approx(19**2 / 40)
    assert p == pytest.approx(math.erfc(math.sqrt(19**2 / 40 / 2)), rel=1e-9)
    stat, p = mcnemar(*_mcnemar_case(13, 13))
    assert (stat, p) == (0.0, 1.0)


# --- errors --------------------------------------------------------------------------------------

GOOD_PROBS = [[0.7, 0.3], [0.2, 0.8]]


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: balanced_accuracy(np.zeros((2, 2)), [0, 1], 2), ShapeError,
     "The 'targets' parameter of balanced_accuracy must be a 1-D array of integer labels. "
     "Got shape (2, 2) instead."),
    (lambda: balanced_accuracy([0, 1], [0], 2), ShapeError,
     "The 'preds' parameter of balanced_accuracy must have the same length as 'targets' (2). "
     "Got length 1 instead."),
    (lambda: balanced_accuracy([0, 3], [0, 1], 2), ValueError,
     "The 'targets' parameter of balanced_accuracy must hold labels in [0, 2). "
     "Got values from 0 to 3 instead."),
    (lambda: balanced_accuracy([0, 1], [0, 1], 0), ValueError,
     "The 'num_classes' parameter of balanced_accuracy must be an int >= 1. Got 0 instead."),
    (lambda: balanced_accuracy([], [], 2), ValueError,
     "The 'targets' parameter of balanced_accuracy must contain at least one label."),
    (lambda: balanced_accuracy([0.5, 1], [0, 1], 2), ValueError,
     "must be a 1-D array of integer labels. Got dtype float64 with non-integer values"),
    (lambda: top_k_accuracy([0, 1], GOOD_PROBS, 0), ValueError,
     "The 'k' parameter of top_k_accuracy must be an int in [1, 2]. Got 0 instead."),
    (lambda: top_k_accuracy([0, 1], GOOD_PROBS, 3), ValueError,
     "The 'k' parameter of top_k_accuracy must be an int in [1, 2]. Got 3 instead."),
    (lambda: top_k_accuracy([0, 1], [0.7, 0.3], 1), ShapeError,
     "The 'probs' parameter of top_k_accuracy must be a 2-D array of shape (n_samples, "
     "n_classes) with n_classes >= 2. Got shape (2,) instead."),
    (lambda: top_k_accuracy([0, 1, 1], GOOD_PROBS, 1), ShapeError,
     "The 'probs' parameter of top_k_accuracy must have one row per target (3). "
     "Got 2 rows instead."),
    (lambda: log_loss([0, 1], [[0.7, 0.2], [0.2, 0.8]]), ValueError,
     "The 'probs' parameter of log_loss must have rows that sum to 1. Got row sums from 0.9 "
     "to 1 instead (apply softmax to logits first)."),
    (lambda: roc_auc([0, 1], [[2.0, -1.0], [0.0, 1.0]]), ValueError,
     "The 'probs' parameter of roc_auc must hold probabilities in [0, 1]. "
     "Got values from -1.0 to 2.0 instead"),
    (lambda: roc_curves([0, 2], GOOD_PROBS), ValueError,
     "The 'targets' parameter of roc_curves must hold labels in [0, 2) (one class per column "
     "of 'probs'). Got values from 0 to 2 instead."),
    (lambda: roc_auc([0, 1], GOOD_PROBS, average="weighted"), ValueError,
     "The 'average' parameter of roc_auc must be one of 'macro', 'micro', None. "
     "Got 'weighted' instead."),
    (lambda: log_loss([0, 1], GOOD_PROBS, eps=0), ValueError,
     "The 'eps' parameter of log_loss must be a float in (0, 0.5). Got 0 instead."),
    (lambda: expected_calibration_error([0, 1], GOOD_PROBS, n_bins=0), ValueError,
     "The 'n_bins' parameter of expected_calibration_error must be an int >= 1. "
     "Got 0 instead."),
    (lambda: normalized_confusion_matrix(np.ones((2, 3))), ShapeError,
     "The 'cm' parameter of normalized_confusion_matrix must be a square 2-D array. "
     "Got shape (2, 3) instead."),
    (lambda: normalized_confusion_matrix(np.eye(2), over="rows"), ValueError,
     "The 'over' parameter of normalized_confusion_matrix must be one of 'true', 'pred', "
     "'all'. Got 'rows' instead."),
    (lambda: normalized_confusion_matrix(-np.eye(2)), ValueError,
     "The 'cm' parameter of normalized_confusion_matrix must hold non-negative counts."),
    (lambda: bootstrap_ci([0, 1], [0, 1], metric="f1"), ValueError,
     "The 'metric' parameter of bootstrap_ci must be one of 'accuracy', 'macro_f1'. "
     "Got 'f1' instead."),
    (lambda: bootstrap_ci([0, 1], [0, 1], confidence=95), ValueError,
     "The 'confidence' parameter of bootstrap_ci must be a float in (0, 1). Got 95 instead."),
    (lambda: bootstrap_ci([0, 1], [0, 1], n_boot=0), ValueError,
     "The 'n_boot' parameter of bootstrap_ci must be an int >= 1. Got 0 instead."),
    (lambda: mcnemar([0, 1], [0, 1], [0]), ShapeError,
     "The 'preds_b' parameter of mcnemar must have the same length as 'targets' (2). "
     "Got length 1 instead."),
])
def test_errors(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


# --- cross-checks of what stays hand-written -----------------------------------------------------

def test_report_specificity_matches_sklearn_multilabel_confusion_matrix(random_case):
    t, _, p = random_case
    p = np.where(p == 4, 3, p)  # class 4 never predicted
    with pytest.warns(UndefinedMetricWarning, match=r"precision .* \['4'\]"):
        r = classification_report(t, p, [str(c) for c in range(K)])
    for c, ((tn, fp), _) in enumerate(skm.multilabel_confusion_matrix(t, p, labels=range(K))):
        assert r["per_class"][str(c)]["specificity"] == pytest.approx(tn / (tn + fp), abs=1e-12)


def test_ece_matches_sklearn_calibration_curve(random_case):
    from sklearn.calibration import calibration_curve

    t, probs, p = random_case
    confidence, correct = probs.max(1), (p == t).astype(int)
    ece, bins = expected_calibration_error(t, probs, n_bins=10)
    frac_correct, mean_conf = calibration_curve(correct, confidence, n_bins=10)
    nonempty = bins["count"] > 0
    np.testing.assert_allclose(bins["accuracy"][nonempty], frac_correct, atol=1e-12)
    np.testing.assert_allclose(bins["confidence"][nonempty], mean_conf, atol=1e-12)
    weights = bins["count"][nonempty] / len(t)
    assert ece == pytest.approx((weights * np.abs(frac_correct - mean_conf)).sum(), abs=1e-12)


def test_top_k_accuracy_ties_differ_from_sklearn_on_purpose():
    # why top_k_accuracy is ours: scikit-learn gives the tie in row 3 to class 1, argmax to 0
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.4, 0.4, 0.2]])
    targets = [1, 0, 1]
    assert skm.top_k_accuracy_score(targets, probs, k=1, labels=range(3)) == pytest.approx(1 / 3)
    assert top_k_accuracy(targets, probs, 1) == skm.accuracy_score(targets, probs.argmax(1)) == 0


def test_bootstrap_ci_matches_scipy_bootstrap():
    from scipy import stats

    rng = np.random.default_rng(4)
    t = rng.integers(0, 5, 2000)
    p = np.where(rng.random(2000) < 0.8, t, rng.integers(0, 5, 2000))
    _, low, high = bootstrap_ci(t, p, n_boot=4000, seed=0)
    res = stats.bootstrap((t, p), lambda a, b, axis=-1: (a == b).mean(axis=axis), paired=True,
                          vectorized=True, n_resamples=4000, method="percentile",
                          rng=np.random.default_rng(0))
    assert low == pytest.approx(res.confidence_interval.low, abs=0.004)
    assert high == pytest.approx(res.confidence_interval.high, abs=0.004)


def test_mcnemar_table_and_p_values_match_scipy():
    from scipy import stats

    rng = np.random.default_rng(5)
    t = rng.integers(0, 3, 400)
    a = np.where(rng.random(400) < 0.8, t, rng.integers(0, 3, 400))
    b = np.where(rng.random(400) < 0.7, t, rng.integers(0, 3, 400))
    (_, only_a), (only_b, _) = skm.confusion_matrix(a == t, b == t, labels=[True, False])
    stat, p = mcnemar(t, a, b)
    assert only_a + only_b >= 25  # the chi-square branch
    assert stat == pytest.approx((abs(only_a - only_b) - 1) ** 2 / (only_a + only_b))
    assert p == pytest.approx(stats.chi2.sf(stat, 1))
    for b_, c_ in ((7, 1), (0, 5), (12, 12)):
        exact = min(1.0, 2 * stats.binom.cdf(min(b_, c_), b_ + c_, 0.5))
        assert mcnemar(*_mcnemar_case(b_, c_))[1] == pytest.approx(exact, rel=1e-12)


def test_confusion_matrix_of_no_samples_is_zeros():
    from cnnlab.evaluate import confusion_matrix

    assert confusion_matrix([], [], 2).tolist() == [[0, 0], [0, 0]]
