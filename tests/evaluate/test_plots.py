import numpy as np
import pytest
from PIL import Image

from cnnlab.evaluate import expected_calibration_error, plots, roc_auc, roc_curves

CLASSES = ["zero", "one", "two"]


def _probs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    targets = np.arange(n) % 3
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), targets] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return targets, probs


def _check_png(path, expected):
    assert path == expected
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 50 and im.size[1] > 50
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_confusion_matrix_roc_reliability_f1(tmp_path):
    targets, probs = _probs()
    preds = probs.argmax(1)
    cm = np.bincount(targets * 3 + preds, minlength=9).reshape(3, 3)
    _check_png(plots.plot_confusion_matrix(cm, CLASSES, tmp_path / "cm.png"), tmp_path / "cm.png")
    aucs = roc_auc(targets, probs, average=None)
    out = tmp_path / "sub" / "roc.png"  # missing folders are made
    _check_png(plots.plot_roc_curves(roc_curves(targets, probs), aucs, CLASSES, out,
                                     micro_auc=0.9), out)
    ece, bins = expected_calibration_error(targets, probs)
    _check_png(plots.plot_reliability(bins, tmp_path / "rel.png", ece=ece), tmp_path / "rel.png")
    _check_png(plots.plot_per_class_f1({"zero": 0.9, "one": 0.8, "two": 1.0}, tmp_path / "f1.png",
                                       macro_f1=0.9), tmp_path / "f1.png")


def test_training_curves_accept_csv_rows_with_empty_validation(tmp_path):
    rows = [{"epoch": "1", "train_loss": "1.2", "train_accuracy": "0.5", "val_loss": "",
             "val_accuracy": ""},
            {"epoch": "2", "train_loss": "0.7", "train_accuracy": "0.8", "val_loss": "",
             "val_accuracy": ""}]
    _check_png(plots.plot_training_curves(rows, tmp_path / "t.png"), tmp_path / "t.png")
    rows = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 0.9,
             "val_accuracy": 0.6}]
    _check_png(plots.plot_training_curves(rows, tmp_path / "v.png"), tmp_path / "v.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grids(tmp_path, channels):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, channels, 12, 12), dtype=np.uint8)
    targets, preds = np.arange(10) % 3, np.array([0, 1, 2, 0, 2, 2, 0, 1, 1, 0])
    _check_png(plots.plot_sample_grid(images, targets, preds, CLASSES, tmp_path / "g.png",
                                      cols=4), tmp_path / "g.png")
    wrong = np.flatnonzero(targets != preds)
    _check_png(plots.plot_confident_mistakes(images[wrong], targets[wrong], preds[wrong],
                                             np.linspace(0.9, 0.5, len(wrong)), CLASSES,
                                             tmp_path / "m.png"), tmp_path / "m.png")


def test_no_mistakes_and_no_pairs_still_draw(tmp_path):
    empty = np.zeros((0, 1, 8, 8), dtype=np.uint8)
    none = np.zeros(0, dtype=int)
    _check_png(plots.plot_confident_mistakes(empty, none, none, none.astype(float), CLASSES,
                                             tmp_path / "m.png"), tmp_path / "m.png")
    _check_png(plots.plot_confused_pairs([], tmp_path / "p.png"), tmp_path / "p.png")
    _check_png(plots.plot_confused_pairs([("one", "two", 7), ("two", "one", 3)],
                                         tmp_path / "q.png"), tmp_path / "q.png")


def test_all_is_exported():
    assert sorted(plots.__all__) == sorted(n for n in dir(plots) if n.startswith("plot_"))
