"""Group metrics: MetricFrame figures against a hand computation, cluster-bootstrap intervals
wider than digit-level ones when writers matter, small groups left out of comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.errors import ConfigError, DataError
from cnnlab.fairness.metrics import group_metrics, metric_frame, writer_breakdown

CLASSES = ["0", "1", "2"]


def _hand_case():
    # group a: 6 images, 2 wrong; group b: 4 images, 1 wrong
    targets = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0, 0, 1, 2, 1])
    groups = np.array(["a"] * 6 + ["b"] * 4)
    p_true = np.array([0.9, 0.2, 0.8, 0.7, 0.6, 0.1, 0.95, 0.5, 0.9, 0.3])
    return targets, preds, p_true, groups


def test_metric_frame_matches_a_hand_computation() -> None:
    t, p, pt, g = _hand_case()
    frame = metric_frame(t, p, pt, g, 3).by_group
    assert frame.loc["a", "accuracy"] == pytest.approx(4 / 6)
    assert frame.loc["b", "error_rate"] == pytest.approx(1 / 4)
    assert frame.loc["a", "log_loss"] == pytest.approx(-np.log([0.9, 0.2, 0.8, 0.7, 0.6,
                                                                 0.1]).mean())
    # a: true 0 at 0, 1 -> recall_0 = 1/2; predicted 1 at 1, 2, 3 -> precision_1 = 2/3
    assert frame.loc["a", "recall_0"] == pytest.approx(1 / 2)
    assert frame.loc["a", "precision_1"] == pytest.approx(2 / 3)
    # b: true 2 at 8, 9 -> recall_2 = 1/2; b never predicts 0 wrongly: precision_0 = 1
    assert frame.loc["b", "recall_2"] == pytest.approx(1 / 2)
    assert frame.loc["b", "precision_0"] == pytest.approx(1.0)


def test_group_metrics_figures_and_comparisons() -> None:
    t, p, pt, g = _hand_case()
    r = group_metrics(t, p, pt, g, classes=CLASSES, n_boot=200, min_group=3)
    a, _b = r["groups"]
    assert (a["name"], a["samples"], a["errors"]) == ("a", 6, 2)
    assert a["recall"] == {"0": pytest.approx(0.5), "1": pytest.approx(1.0),
                           "2": pytest.approx(0.5)}
    assert r["overall"]["accuracy"] == pytest.approx(7 / 10)
    assert r["worst_group"]["name"] == "a"
    assert r["differences"]["accuracy"]["value"] == pytest.approx(3 / 4 - 4 / 6)
    assert r["ratios"]["accuracy"]["value"] == pytest.approx((4 / 6) / (3 / 4))
    assert r["gap"]["value"] == pytest.approx(2 / 6 - 1 / 4)
    # equal opportunity: recall of class 0 is 1/2 in a and 1 in b; class 1 is 1 in both
    assert r["equal_opportunity"]["0"]["recall_gap"] == pytest.approx(0.5)
    assert r["equal_opportunity"]["0"]["lowest"] == "a"
    assert r["equal_opportunity"]["1"]["recall_gap"] == pytest.approx(0.0)
    for g_ in r["groups"]:
        low, high = g_["accuracy_ci"]
        assert low <= g_["accuracy"] <= high


def test_small_groups_are_reported_but_not_compared() -> None:
    t, p, pt, g = _hand_case()
    r = group_metrics(t, p, pt, g, classes=CLASSES, n_boot=50)  # MIN_GROUP = 30
    assert all(x["small"] for x in r["groups"])
    assert any("has 6 images (< 30)" in w for w in r["warnings"])
    assert "ratios" not in r and "worst_group" not in r and "gap" not in r
    # one large group and one small: still nothing to compare
    rng = np.random.default_rng(0)
    t2 = rng.integers(0, 3, 100)
    g2 = np.array(["big"] * 90 + ["tiny"] * 10)
    r2 = group_metrics(t2, t2, np.ones(100), g2, classes=CLASSES, n_boot=50)
    assert [x["small"] for x in r2["groups"]] == [False, True]
    assert "ratios" not in r2 and any("tiny" in w for w in r2["warnings"])


def _writer_effect_data(seed: int = 0):
    """60 writers of 50 digits each in two groups; each writer has their own error rate
    (some write badly), so digits of one writer are correlated."""
    rng = np.random.default_rng(seed)
    writers = np.repeat(np.arange(60), 50)
    groups = np.where(writers < 30, "x", "y")
    rate = rng.beta(0.5, 6, size=60)[writers]  # per-writer error rates, mean ~ 0.08
    t = rng.integers(0, 3, len(writers))
    wrong = rng.random(len(writers)) < rate
    p = np.where(wrong, (t + 1) % 3, t)
    return t, p, np.where(wrong, 0.2, 0.9), groups, writers


def test_writer_intervals_are_wider_than_digit_intervals_with_writer_effects() -> None:
    t, p, pt, g, w = _writer_effect_data()
    by_writer = group_metrics(t, p, pt, g, w, classes=CLASSES, n_boot=1000)
    by_digit = group_metrics(t, p, pt, g, None, classes=CLASSES, n_boot=1000)
    assert by_writer["bootstrap"]["unit"] == "writer" and by_digit["bootstrap"]["unit"] == "image"

    def width(ci):
        return ci[1] - ci[0]

    for gw, gd in zip(by_writer["groups"], by_digit["groups"], strict=True):
        assert gw["error_rate"] == gd["error_rate"]  # same point, other interval
        assert width(gw["error_rate_ci"]) > 1.3 * width(gd["error_rate_ci"])
    assert width(by_writer["gap"]["ci"]) > 1.3 * width(by_digit["gap"]["ci"])


def test_without_writer_effects_the_intervals_agree() -> None:
    rng = np.random.default_rng(1)
    writers = np.repeat(np.arange(60), 50)
    t = rng.integers(0, 3, len(writers))
    wrong = rng.random(len(writers)) < 0.08  # the same rate for every writer
    p = np.where(wrong, (t + 1) % 3, t)
    g = np.where(writers < 30, "x", "y")
    a = group_metrics(t, p, np.full(len(t), 0.5), g, writers, classes=CLASSES, n_boot=2000)
    b = group_metrics(t, p, np.full(len(t), 0.5), g, None, classes=CLASSES, n_boot=2000)
    wa = a["gap"]["ci"][1] - a["gap"]["ci"][0]
    wb = b["gap"]["ci"][1] - b["gap"]["ci"][0]
    assert wa == pytest.approx(wb, rel=0.25)


def test_writer_breakdown() -> None:
    t = np.zeros(40, dtype=int)
    writers = np.repeat(np.arange(10), 4)
    p = t.copy()
    p[[0, 1, 2, 5]] = 1  # writer 0: 3 errors, writer 1: 1 error
    r = writer_breakdown(t, p, writers, worst=3, n_boot=100)
    assert r["writers"] == 10 and r["perfect_writers"] == 8
    assert [w["writer"] for w in r["worst"]] == [0, 1, 2]
    assert r["worst"][0] == {"writer": 0, "images": 4, "errors": 3, "accuracy": 0.25}
    # the worst 10 % of 10 writers is writer 0: 3 of the 4 errors
    assert r["worst_share"]["writers"] == 1
    assert r["worst_share"]["share_of_errors"] == pytest.approx(0.75)
    assert sum(r["histogram"]["counts"]) == 10


def test_bad_input() -> None:
    t, p, pt, g = _hand_case()
    with pytest.raises(DataError, match="one preds entry per image: 10 targets but 9"):
        group_metrics(t, p[:9], pt, g, classes=CLASSES)
    with pytest.raises(ConfigError, match="'n_boot'"):
        group_metrics(t, p, pt, g, classes=CLASSES, n_boot=5)
    with pytest.raises(ConfigError, match="'confidence'"):
        group_metrics(t, p, pt, g, classes=CLASSES, confidence=float("nan"))
    with pytest.raises(DataError, match="not in the group order"):
        group_metrics(t, p, pt, g, classes=CLASSES, order=["a"])
