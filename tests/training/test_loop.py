import csv
import json
import logging

import pytest
import torch

from cnnlab.config import resolve_config
from cnnlab.errors import ConfigError
from cnnlab.training import loop
from cnnlab.training.checkpoint import load_checkpoint
from cnnlab.training.loop import fit
from synth import prepared_data


def _cfg(**sections):
    base = {"model": {"name": "paper-cnn-tiny"},
            "train": {"epochs": 3, "batch_size": 16, "seed": 0, "device": "cpu"},
            "optim": {"lr": 3e-3}}
    for key, value in sections.items():
        base.setdefault(key, {}).update(value)
    return resolve_config(base)


def test_fit_learns_and_writes_the_run_directory(tmp_path):
    result = fit(_cfg(), out_dir=tmp_path, progress=False, data=prepared_data())
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.toml", "model.pt", "last.pt", "history.csv", "metrics.json",
            "env.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["val_accuracy"] >= 0.9, m
    assert m["test_accuracy"] >= 0.9, m
    assert m["epochs_run"] == 3 and m["train_time_s"] > 0 and m["images_per_s"] > 0
    with (tmp_path / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert set(rows[0]) == set(loop.HISTORY_FIELDS)
    ckpt = load_checkpoint(tmp_path / "model.pt")
    assert ckpt["metrics"]["test_accuracy"] == m["test_accuracy"]
    assert ckpt["model"] == {"name": "paper-cnn-tiny", "kwargs": {
        "in_channels": 1, "num_classes": 4, "input_size": [28, 28]}}
    assert result.model.input_spec.mean == prepared_data().mean


def test_same_seed_same_result_on_cpu():
    a = fit(_cfg(data={"augment": {"enabled": True}}), progress=False, data=prepared_data())
    b = fit(_cfg(data={"augment": {"enabled": True}}), progress=False, data=prepared_data())
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                           strict=True):
        assert torch.equal(va, vb), k
    c = fit(_cfg(train={"seed": 1}), progress=False, data=prepared_data())
    assert [r["train_loss"] for r in c.history] != [r["train_loss"] for r in a.history]


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, monkeypatch):
    cfg = _cfg(train={"epochs": 4, "ema": 0.9}, optim={"scheduler": "onecycle"},
               data={"augment": {"enabled": True}})
    fit(cfg, out_dir=tmp_path / "full", progress=False, data=prepared_data())

    write = loop._write_history

    def interrupt_at_epoch_3(path, history):
        if len(history) == 3:
            raise KeyboardInterrupt
        write(path, history)

    monkeypatch.setattr(loop, "_write_history", interrupt_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, out_dir=tmp_path / "cut", progress=False, data=prepared_data())
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["train_state"]["epoch"] == 2
    monkeypatch.setattr(loop, "_write_history", write)
    fit(None, out_dir=tmp_path / "cut", resume=True, progress=False, data=prepared_data())

    full = load_checkpoint(tmp_path / "full" / "model.pt")
    cut = load_checkpoint(tmp_path / "cut" / "model.pt")
    for k, v in full["state_dict"].items():
        assert torch.equal(v, cut["state_dict"][k]), k
    assert full["metrics"]["test_accuracy"] == cut["metrics"]["test_accuracy"]
    assert (tmp_path / "full" / "history.csv").read_text().count("\n") == \
        (tmp_path / "cut" / "history.csv").read_text().count("\n")


def test_resume_without_a_run_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"resume=True needs a run directory with last\.pt"):
        fit(_cfg(), out_dir=tmp_path, resume=True, progress=False, data=prepared_data())


def test_resume_refuses_to_stretch_a_onecycle_run(tmp_path):
    fit(_cfg(train={"epochs": 1}, optim={"scheduler": "onecycle"}), out_dir=tmp_path,
        progress=False, data=prepared_data())
    with pytest.raises(ConfigError, match="cannot change the number of epochs"):
        fit(_cfg(train={"epochs": 2}, optim={"scheduler": "onecycle"}), out_dir=tmp_path,
            resume=True, progress=False, data=prepared_data())


def test_early_stopping_stops(tmp_path):
    # a learning rate too small to change the accuracy: no gain, so it stops after 2 epochs
    result = fit(_cfg(train={"epochs": 10, "early_stopping": 2}, optim={"lr": 1e-12}),
                 out_dir=tmp_path, progress=False, data=prepared_data())
    assert result.metrics["stopped_early"] is True
    assert result.metrics["epochs_run"] == 3
    assert result.metrics["best_epoch"] == 1


@pytest.mark.parametrize(("optimizer", "scheduler"), [
    ("sgd", "onecycle"), ("adamw", "cosine"), ("adam", "step"), ("sgd", "plateau"),
    ("adam", "none"),
])
def test_optimizers_and_schedules_train(optimizer, scheduler):
    lr = 0.05 if optimizer == "sgd" else 3e-3
    result = fit(_cfg(optim={"optimizer": optimizer, "scheduler": scheduler, "lr": lr,
                             "warmup_epochs": 1, "weight_decay": 1e-4},
                      train={"epochs": 3, "label_smoothing": 0.1}),
                 progress=False, data=prepared_data())
    assert result.metrics["val_accuracy"] >= 0.75, result.history


def test_no_validation_split_uses_the_last_epoch(tmp_path):
    data = prepared_data()
    data.val = None
    result = fit(_cfg(train={"epochs": 2}), out_dir=tmp_path, progress=False, data=data)
    assert "val_accuracy" not in result.metrics
    assert result.metrics["best_epoch"] == 2


def test_progress_lines_when_not_a_terminal(capsys):
    fit(_cfg(train={"epochs": 1}), progress=True, data=prepared_data())
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "img/s" in err and "val_acc" in err


def test_mixed_precision_and_channels_last_path_on_cpu():
    # the path CUDA takes by default, exercised on the CPU with bf16 autocast
    result = fit(_cfg(train={"amp": "on", "channels_last": "on", "ema": 0.9}),
                 progress=False, data=prepared_data())
    assert result.metrics["val_accuracy"] >= 0.75, result.history


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_training_with_autocast_and_channels_last(tmp_path):
    result = fit(_cfg(train={"device": "cuda", "ema": 0.9}, data={"augment": {"enabled": True}}),
                 out_dir=tmp_path, progress=False, data=prepared_data())
    assert result.metrics["val_accuracy"] >= 0.75, result.history
    assert next(result.model.parameters()).is_cuda


def test_resume_after_early_stopping_trains_no_more(tmp_path):
    cfg = _cfg(train={"epochs": 10, "early_stopping": 1}, optim={"lr": 1e-12})
    first = fit(cfg, out_dir=tmp_path, progress=False, data=prepared_data())
    again = fit(None, out_dir=tmp_path, resume=True, progress=False, data=prepared_data())
    assert again.metrics["epochs_run"] == first.metrics["epochs_run"] == 2
    assert again.metrics["stopped_early"] is True


def test_resume_with_another_model_is_refused(tmp_path):
    fit(_cfg(train={"epochs": 1}), out_dir=tmp_path, progress=False, data=prepared_data())
    with pytest.raises(ConfigError, match=r"cannot resume: .* was trained as"):
        fit(_cfg(train={"epochs": 1}, model={"name": "lenet5"}), out_dir=tmp_path, resume=True,
            progress=False, data=prepared_data())


def test_an_existing_run_is_not_overwritten_by_accident(tmp_path):
    fit(_cfg(train={"epochs": 1}), out_dir=tmp_path, progress=False, data=prepared_data())
    before = (tmp_path / "model.pt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run; set resume=True to continue it"):
        fit(_cfg(train={"epochs": 1}), out_dir=tmp_path, progress=False, data=prepared_data())
    assert (tmp_path / "model.pt").read_bytes() == before
    fit(_cfg(train={"epochs": 1, "seed": 3}), out_dir=tmp_path, overwrite=True, progress=False,
        data=prepared_data())
    assert (tmp_path / "model.pt").read_bytes() != before


def test_a_loss_that_is_no_longer_finite_stops_training(tmp_path):
    # plain SGD at lr 1e6 overflows the weights within the first epoch
    cfg = _cfg(optim={"optimizer": "sgd", "lr": 1e6, "momentum": 0.0})
    with pytest.raises(ConfigError) as e:
        fit(cfg, out_dir=tmp_path, progress=False, data=prepared_data())
    message = str(e.value)
    assert message.startswith("training diverged: the training loss is no longer finite")
    assert "in epoch 1" in message and "learning rate 1e+06" in message
    assert "lower optim.lr" in message
    assert not (tmp_path / "model.pt").exists()  # nothing of the diverged epoch is saved


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _log_lines(fn):
    """``fn()``'s result and the lines it logged on the 'cnnlab' logger."""
    logger, handler = logging.getLogger("cnnlab"), _Lines()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return fn(), handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_resuming_a_finished_run_says_so_and_writes_its_figures_again(tmp_path):
    cfg = _cfg(train={"epochs": 2})
    first = fit(cfg, out_dir=tmp_path, progress=False, data=prepared_data())
    (tmp_path / "metrics.json").unlink()
    again, lines = _log_lines(lambda: fit(None, out_dir=tmp_path, resume=True, progress=False,
                                          data=prepared_data()))
    assert not [ln for ln in lines if ln.startswith("resuming")], lines
    assert any("is complete (2 of train.epochs = 2 epochs trained)" in ln for ln in lines), lines
    assert again.metrics == first.metrics
    assert json.loads((tmp_path / "metrics.json").read_text()) == first.metrics
    assert len(again.history) == 2


def test_an_interrupted_run_says_where_it_resumes(tmp_path, monkeypatch):
    write = loop._write_history

    def interrupt_at_epoch_2(path, history):
        if len(history) == 2:
            raise KeyboardInterrupt
        write(path, history)

    monkeypatch.setattr(loop, "_write_history", interrupt_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(train={"epochs": 2}), out_dir=tmp_path, progress=False, data=prepared_data())
    monkeypatch.setattr(loop, "_write_history", write)
    result, lines = _log_lines(lambda: fit(None, out_dir=tmp_path, resume=True, progress=False,
                                           data=prepared_data()))
    assert f"resuming {tmp_path} at epoch 2 of 2" in lines
    assert result.metrics["epochs_run"] == 2


def test_model_settings_are_refused_before_the_data_is_loaded(tmp_path):
    # the dataset does not exist: the model's options must fail first
    cfg = _cfg(model={"name": "resnet", "nope": 1}, data={"dataset": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="model 'resnet' got an unknown keyword argument "
                                          "'nope'"):
        fit(cfg, progress=False)
    cfg = _cfg(model={"name": "resnet", "kernel_size": -3},
               data={"dataset": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="The 'kernel_size' parameter of model 'resnet'"):
        fit(cfg, progress=False)


def test_fit_is_composed_of_its_steps():
    # the step path fit takes, callable on its own: one epoch of the tiny model learns
    data = prepared_data()
    cfg = _cfg()
    device, amp, channels_last = loop._devices(cfg.train)
    trainer = loop._setup(cfg, data, device, amp, channels_last, model=None, lr_groups=None)
    before = loop.validate(trainer, data, cfg.train)
    bar = loop.Progress(len(data.train), "epoch", enabled=False)
    rows = [loop.train_one_epoch(trainer, data, cfg.train, epoch, bar=bar) for epoch in range(3)]
    assert set(rows[0]) == {"train_loss", "train_accuracy", "lr", "epoch_time_s",
                            "images_per_s"}
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert loop.validate(trainer, data, cfg.train)[1] > before[1]
