"""k-fold cross-validation: manifest, aggregation, out-of-fold matrix, curves, resume, errors."""

import json
import statistics

import numpy as np
import pytest
import torch

from cnnlab.config import resolve_config
from cnnlab.data.transforms import normalize
from cnnlab.errors import ConfigError, DataError
from cnnlab.training import loop
from cnnlab.tune import cross_validate
from cnnlab.tune import cv as cv_module
from synth import prepared_data

FOLDS = 3


def _cfg(**train):
    return resolve_config({"model": {"name": "paper-cnn-tiny"},
                           "train": {"epochs": 2, "batch_size": 16, "seed": 0, "device": "cpu",
                                     **train},
                           "optim": {"lr": 3e-3}})


def _data():
    # pooled training set: 3 classes x (9 train + 3 val) = 36 images, 12 per class
    return prepared_data(n_per_class=9, num_classes=3, val_per_class=3, test_per_class=3)


@pytest.fixture(scope="module")
def cv_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "cv"
    result = cross_validate(_cfg(), FOLDS, out_dir=out, progress=False, data=_data())
    return out, result


def test_cross_validation_writes_folds_manifest_metrics_and_curves(cv_dir):
    out, result = cv_dir
    for name in ("config.toml", "folds.json", "cv_metrics.json", "learning_curves.png"):
        assert (out / name).is_file(), name
    for f in range(1, FOLDS + 1):
        assert {"model.pt", "last.pt", "history.csv", "metrics.json"} <= {
            p.name for p in (out / f"fold-{f}").iterdir()}
    assert not list(out.rglob("*.tmp"))
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'val_fraction = 0.0' in (out / "config.toml").read_text()

    manifest = json.loads((out / "folds.json").read_text())
    assert manifest["folds"] == FOLDS and manifest["samples"] == 36
    assert manifest["class_counts"] == [12, 12, 12]
    fold_of = np.array(manifest["fold_of"])
    assert sorted(set(fold_of.tolist())) == [1, 2, 3]
    assert np.bincount(fold_of)[1:].tolist() == manifest["fold_sizes"] == [12, 12, 12]

    per_fold = [json.loads((out / f"fold-{f}" / "metrics.json").read_text())
                for f in range(1, FOLDS + 1)]
    assert [m["val_images"] for m in per_fold] == manifest["fold_sizes"]
    saved = json.loads((out / "cv_metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    for key in ("val_accuracy", "val_loss", "test_accuracy", "train_time_s", "best_epoch"):
        values = [m[key] for m in per_fold]
        agg = result["metrics"][key]
        assert agg["values"] == values
        assert agg["mean"] == pytest.approx(sum(values) / FOLDS)
        mean = sum(values) / FOLDS
        assert agg["std"] == pytest.approx(
            (sum((v - mean) ** 2 for v in values) / (FOLDS - 1)) ** 0.5)
        assert agg["std"] == pytest.approx(statistics.stdev(values))
    assert "stopped_early" not in result["metrics"]  # booleans are not averaged

    oof = result["out_of_fold"]
    cm = np.array(oof["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == 36 == oof["images"]
    assert cm.sum(axis=1).tolist() == [12, 12, 12]
    assert oof["accuracy"] == pytest.approx(np.trace(cm) / 36)
    assert oof["accuracy"] >= 0.8, oof  # the synthetic classes are trivially learnable

    # the pooled matrix against scikit-learn on the saved out-of-fold predictions, and every
    # prediction made by the best model of the fold that held the image out
    from sklearn.metrics import confusion_matrix

    from cnnlab.api import load

    rows = (out / "oof_predictions.csv").read_text().splitlines()
    assert rows[0] == "index,fold,target,prediction" and len(rows) == 1 + 36
    table = np.array([[int(v) for v in r.split(",")] for r in rows[1:]])
    assert table[:, 1].tolist() == manifest["fold_of"]
    assert np.array_equal(confusion_matrix(table[:, 2], table[:, 3]), cm)
    pooled = _data()
    images = torch.cat([pooled.train.images, pooled.val.images])
    targets = torch.cat([pooled.train.targets, pooled.val.targets])
    assert table[:, 2].tolist() == targets.tolist()
    for f in range(1, FOLDS + 1):
        held_out = fold_of == f
        model = load(out / f"fold-{f}")
        assert model.metrics["val_accuracy"] == per_fold[f - 1]["val_accuracy"]
        preds = model.classifier(
            normalize(images[held_out], model.input_spec.mean, model.input_spec.std)).argmax(1)
        assert preds.tolist() == table[held_out, 3].tolist()


def test_resume_after_an_interruption_trains_only_what_is_left(tmp_path, monkeypatch):
    out = tmp_path / "cv"
    write = loop._write_history

    def interrupt_in_fold_3(path, history):
        if path.parent.name == "fold-3" and len(history) == 2:
            raise KeyboardInterrupt
        write(path, history)

    monkeypatch.setattr(loop, "_write_history", interrupt_in_fold_3)
    with pytest.raises(KeyboardInterrupt):
        cross_validate(_cfg(), FOLDS, out_dir=out, progress=False, data=_data())
    assert (out / "fold-2" / "metrics.json").is_file()
    assert not (out / "fold-3" / "metrics.json").exists()
    assert (out / "fold-3" / "last.pt").is_file()  # epoch 1 of fold 3 was saved
    assert not (out / "cv_metrics.json").exists()
    monkeypatch.setattr(loop, "_write_history", write)

    calls = []
    fit = cv_module.fit

    def spy(cfg, **kw):
        calls.append((kw["out_dir"].name, kw["resume"]))
        return fit(cfg, **kw)

    monkeypatch.setattr(cv_module, "fit", spy)
    with pytest.raises(ConfigError, match="already holds a cross-validation; set resume=True"):
        cross_validate(_cfg(), FOLDS, out_dir=out, progress=False, data=_data())
    result = cross_validate(_cfg(), FOLDS, out_dir=out, resume=True, progress=False,
                            data=_data())
    assert calls == [("fold-3", True)]  # folds 1 and 2 skipped, fold 3 continued from last.pt
    history = (out / "fold-3" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2
    assert result["out_of_fold"]["images"] == 36
    assert len(result["metrics"]["val_accuracy"]["values"]) == FOLDS

    # --overwrite with fewer folds leaves no fold of the old cross-validation behind
    calls.clear()
    cross_validate(_cfg(epochs=1), 2, out_dir=out, overwrite=True, progress=False, data=_data())
    assert calls == [("fold-1", False), ("fold-2", False)]
    assert sorted(p.name for p in out.glob("fold-*")) == ["fold-1", "fold-2"]
    assert json.loads((out / "folds.json").read_text())["folds"] == 2


def test_resume_refuses_a_manifest_that_does_not_match(cv_dir, tmp_path):
    out, _ = cv_dir
    with pytest.raises(ConfigError, match=r"do not match this data and settings \(seed: saved 0, "
                                          r"now 1; fold_of_sha256"):
        cross_validate(_cfg(seed=1), FOLDS, out_dir=out, resume=True, progress=False,
                       data=_data())
    with pytest.raises(ConfigError, match=r"the settings differ from those in .*config\.toml "
                                          r"\(optim\.lr: saved 0\.003, now 0\.01; train\.epochs: "
                                          r"saved 2, now 5\); every fold must train the same way"):
        cross_validate(resolve_config(_cfg(epochs=5).to_dict(), {"optim": {"lr": 0.01}}),
                       FOLDS, out_dir=out, resume=True, progress=False, data=_data())
    with pytest.raises(ConfigError, match="folds: saved 3, now 4"):
        cross_validate(_cfg(), 4, out_dir=out, resume=True, progress=False, data=_data())
    # the same class counts in another order
    with pytest.raises(ConfigError, match="targets_sha256"):
        cross_validate(_cfg(), FOLDS, out_dir=out, resume=True, progress=False,
                       data=prepared_data(n_per_class=9, num_classes=3, val_per_class=3,
                                          test_per_class=3, seed=5))

    edited = tmp_path / "edited"
    edited.mkdir()
    manifest = json.loads((out / "folds.json").read_text())
    manifest["fold_of"][0], manifest["fold_of"][1] = 3, 1
    (edited / "folds.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="has been edited"):
        cross_validate(_cfg(), FOLDS, out_dir=edited, resume=True, progress=False,
                       data=_data())
    with pytest.raises(ConfigError, match=r"folds\.json does not exist; is .* a cross-validation "
                                          r"directory"):
        cross_validate(_cfg(), FOLDS, out_dir=tmp_path / "none", resume=True, progress=False,
                       data=_data())


@pytest.mark.parametrize("folds", [1, 0, True, 2.5, "3"])
def test_folds_must_be_an_int_of_at_least_2(folds, tmp_path):
    with pytest.raises(ConfigError, match=r"The 'folds' parameter of cross_validate must be an "
                                          rf"int >= 2\. Got {folds!r} instead\."):
        cross_validate(_cfg(), folds, out_dir=tmp_path, progress=False, data=_data())


def test_every_class_needs_at_least_folds_images(tmp_path):
    data = prepared_data(n_per_class=2, num_classes=2, val_per_class=1, test_per_class=1)
    with pytest.raises(DataError, match=r"The 'folds' setting of cross_validate \(4\) needs at "
                                        r"least 4 training images in every class, so that each "
                                        r"fold validates on it; too few in class '0' \(3\), '1' "
                                        r"\(3\)\. Lower it"):
        cross_validate(_cfg(), 4, out_dir=tmp_path, progress=False, data=data)
    assert not (tmp_path / "folds.json").exists()


def test_learning_curve_bands_by_hand(tmp_path):
    # fold 2 stopped early after one epoch: epoch 2's band comes from fold 1 alone
    histories = [[{"train_loss": 1.0, "val_loss": 2.0}, {"train_loss": 0.5, "val_loss": 1.0}],
                 [{"train_loss": 3.0, "val_loss": float("nan")}]]
    epochs, mean, std = cv_module._band(histories, "train_loss")
    assert epochs.tolist() == [1, 2]
    assert mean.tolist() == [2.0, 0.5]
    assert std.tolist() == pytest.approx([statistics.stdev([1.0, 3.0]), 0.0])
    _, mean, _ = cv_module._band(histories, "val_loss")
    assert mean.tolist() == [2.0, 1.0]  # a missing (NaN) value does not poison the mean
    png = cv_module.plot_learning_curves(histories, tmp_path / "curves.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_public_names():
    import cnnlab.training.runs
    import cnnlab.tune

    assert cnnlab.tune.__all__ == ["cross_validate"]
    assert set(cnnlab.training.runs.__all__) == {"COLUMNS", "find_runs", "list_runs", "run_summary",
                                        "sort_runs"}
    for module in (cnnlab.tune, cnnlab.training.runs, cv_module):
        for name in module.__all__:
            assert hasattr(module, name), name
