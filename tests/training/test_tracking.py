import pytest

from cnnlab.config import resolve_config
from cnnlab.training import tracking
from cnnlab.training.loop import fit
from synth import prepared_data

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")


def _cfg(epochs=2):
    return resolve_config({"model": {"name": "paper-cnn-tiny"},
                           "train": {"epochs": epochs, "batch_size": 16, "device": "cpu"}})


def _scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return acc


def test_a_run_writes_scalars_and_hyperparameters(tmp_path):
    fit(_cfg(), out_dir=tmp_path, progress=False, data=prepared_data())
    acc = _scalars(tmp_path)
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "run/lr"} <= set(tags)
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert acc.PluginTagToContent("hparams")  # raises KeyError when no hparams were written


def test_figures_are_added(tmp_path):
    from PIL import Image

    png = tmp_path / "fig.png"
    Image.new("RGB", (8, 6), "red").save(png)
    assert tracking.log_figures(tmp_path, {"confusion_matrix": png}) is True
    acc = _scalars(tmp_path)
    assert acc.Tags()["images"] == ["figures/confusion_matrix"]


def test_without_tensorboard_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "_writer_class", lambda: None)
    fit(_cfg(epochs=1), out_dir=tmp_path, progress=False, data=prepared_data())
    assert not (tmp_path / "tensorboard").exists()
    assert tracking.log_figures(tmp_path, {}) is False
