import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from cnnlab.errors import ShapeError
from cnnlab.evaluate import (
    UndefinedMetricWarning,
    accuracy,
    classification_report,
    confusion_matrix,
    evaluate_loss_accuracy,
)


def test_hand_computed_case():
    # true: 0 0 1 1 2 ; pred: 0 1 1 1 0
    t, p = [0, 0, 1, 1, 2], [0, 1, 1, 1, 0]
    cm = confusion_matrix(t, p, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    with pytest.warns(UndefinedMetricWarning, match=r"precision .* class\(es\) \['c'\]"):
        r = classification_report(t, p, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(3 / 5)
    # specificity of a: of the 3 samples that are not a, one (the c) is predicted a
    assert r["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2,
                                   "specificity": pytest.approx(2 / 3)}
    assert r["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert r["per_class"]["b"]["recall"] == 1.0
    assert r["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert r["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1,
                                   "specificity": 1.0}
    assert r["macro"]["f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)


def test_agrees_with_sklearn_on_random_predictions():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 10, 2000)
    p = np.where(rng.random(2000) < 0.7, t, rng.integers(0, 10, 2000))
    r = classification_report(torch.from_numpy(t), torch.from_numpy(p), [str(i) for i in range(10)])
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(t, p), abs=1e-12)
    assert np.array_equal(np.array(r["confusion_matrix"]), skm.confusion_matrix(t, p))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(t, p, zero_division=0)
    for i in range(10):
        c = r["per_class"][str(i)]
        assert c["precision"] == pytest.approx(prec[i], abs=1e-9)
        assert c["recall"] == pytest.approx(rec[i], abs=1e-9)
        assert c["f1"] == pytest.approx(f1[i], abs=1e-9)
        assert c["support"] == sup[i]
    for avg in ("macro", "weighted"):
        pr, rc, f, _ = skm.precision_recall_fscore_support(t, p, average=avg, zero_division=0)
        assert r[avg]["precision"] == pytest.approx(pr, abs=1e-9)
        assert r[avg]["recall"] == pytest.approx(rc, abs=1e-9)
        assert r[avg]["f1"] == pytest.approx(f, abs=1e-9)


def test_no_warning_when_every_class_is_predicted():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classification_report([0, 1], [0, 1], ["a", "b"])


def test_errors():
    with pytest.raises(ShapeError, match="same length"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match=r"The 'preds' labels must lie in \[0, 2\)"):
        confusion_matrix([0, 1], [0, 5], 2)
    with pytest.raises(ShapeError, match="1-D array"):
        accuracy(np.zeros((2, 2)), np.zeros((2, 2)))


def test_loss_accuracy_matches_torch():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    targets = torch.tensor([0, 1, 1])
    loss, acc = evaluate_loss_accuracy(logits, targets)
    assert acc == pytest.approx(2 / 3)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item())
    assert skm.log_loss(targets, torch.softmax(logits.double(), 1)) == pytest.approx(loss, abs=1e-6)
