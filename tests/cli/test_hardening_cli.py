"""Issue 14 §2 and §4 through the CLI, one case per item: a careless user's input gets exit 2
(1 for a real runtime failure such as a full disk) and one ``error:`` line that says what and
how to fix, no traceback, and nothing half-written."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch

from cli_helpers import error_line
from cnnlab.cli.main import main
from synth import train_small_abc_model, write_image_folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_abc_model(tmp_path_factory.mktemp("hardening"))


@pytest.fixture(scope="module")
def image(run_dir: Path) -> Path:
    return next((run_dir.parent / "data" / "test" / "a").glob("*.png"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("folder") / "data", n_per_class=6,
                              num_classes=2, size=16)


def _train(folder: Path, out: Path, *extra: str, model: str = "convnet") -> list[str]:
    width = ["--set", "model.width=4"] if model == "convnet" else []
    return ["train", "--dataset", str(folder), "--model", model, *width, "--epochs", "1",
            "--threads", "1", "--no-report", "-q", "--out", str(out), *extra]


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *, code: int = 2) -> str:
    assert main(argv) == code
    return error_line(capsys)


# --- parsing and settings: refused before any data is read -------------------------------------

@pytest.mark.parametrize(("extra", "message"), [
    (["--seed", "-1"], "--seed: The 'train.seed' setting must be in [0, 4294967295]"),
    (["--seed", "1e20"], "argument --seed: invalid int value: '1e20'"),
    (["--set", "train.seed=1e20"], "'train.seed' setting must be in [0, 4294967295]"),
    (["--set", "optim.warmup_epochs=inf"], "'optim.warmup_epochs' setting must be finite"),
    (["--weight-decay", "inf"], "--weight-decay"),
    (["--set", "train.min_delta=nan"], "'train.min_delta' setting must be finite"),
    (["--set", "model.kernel_size=-3"], "'kernel_size' parameter of model 'convnet'"),
    (["--set", "model.nope=1"], "unknown keyword argument 'nope'"),
], ids=["seed-negative", "seed-1e20", "set-seed-1e20", "warmup-inf", "weight-decay-inf",
        "min-delta-nan", "kernel-negative", "unknown-model-key"])
def test_train_settings_refused(extra: list[str], message: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused(_train(tmp_path / "nodata", tmp_path / "run", *extra), capsys)
    assert message in line
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


@pytest.mark.parametrize(("model", "extra", "message"), [
    ("convnet", ["--set", "model.kernel_size=17"],
     "layer features.0.conv (Conv2d) has a 17x17 kernel, larger than the 16x16 input; it "
     "needs inputs of at least 17x17: set a larger data.image_size"),
    ("resnet", ["--image-size", "2"], "model 'resnet' does not fit 2x2 inputs: layer stem"),
    ("vgg-tiny", ["--image-size", "1"], "model 'vgg-tiny'"),
], ids=["kernel-over-image", "resnet-at-2x2", "vgg-at-1x1"])
def test_model_that_does_not_fit_the_images_is_refused_before_training(
        model: str, extra: list[str], message: str, folder: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused(_train(folder, tmp_path / "run", *extra, model=model), capsys)
    assert message in line
    assert not (tmp_path / "run" / "history.csv").exists()  # no epoch ran


@pytest.mark.parametrize(("argv", "message"), [
    (["evaluate", "RUN", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["predict", "RUN", "IMG", "--top-k", "0"], "--top-k must be >= 1"),
    (["prune", "RUN", "--amount", "0.5", "--out", "OUT", "--threads", "-1"],
     "argument --threads: must be an integer >= 0"),
    (["tune", "--seed", "-1"], "argument --seed: must be an integer in [0, 4294967295]"),
    (["finetune", "RUN", "--train-dir", "DIR", "--out", "OUT", "--seed", "1e20"],
     "argument --seed: must be an integer in [0, 4294967295]"),
])
def test_option_values_refused(argv: list[str], message: str, run_dir: Path, image: Path,
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = {"RUN": str(run_dir), "IMG": str(image), "OUT": str(tmp_path / "out"),
             "DIR": str(tmp_path)}
    assert message in _refused([names.get(a, a) for a in argv], capsys)


# --- checkpoints ------------------------------------------------------------------------------

def _edited_checkpoint(run_dir: Path, path: Path, **changes: object) -> Path:
    ckpt = torch.load(run_dir / "model.pt", weights_only=True)
    ckpt.update(changes)
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("verb", ["predict", "evaluate"])
@pytest.mark.parametrize("case", ["zero-byte", "fewer-classes", "more-classes", "more-outputs",
                                  "onnx", "garbage", "pickle-protocol-5-garbage"])
def test_bad_checkpoints(case: str, verb: str, run_dir: Path, image: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.pt"
    if case == "zero-byte":
        path.write_bytes(b"")
        expected = "is empty (0 bytes)"
    elif case == "fewer-classes":
        _edited_checkpoint(run_dir, path, classes=["a", "b"])
        expected = "names 2 classes (a, b) but its model has 3 outputs"
    elif case == "more-classes":
        _edited_checkpoint(run_dir, path, classes=["a", "b", "c", "d"])
        expected = "names 4 classes (a, b, c, d) but its model has 3 outputs"
    elif case == "more-outputs":
        ckpt = torch.load(run_dir / "model.pt", weights_only=True)
        record = {**ckpt["model"], "kwargs": {**ckpt["model"]["kwargs"], "num_classes": 5}}
        _edited_checkpoint(run_dir, path, model=record)
        expected = "names 3 classes (a, b, c) but its model has 5 outputs"
    elif case == "onnx":
        path = tmp_path / "fast.onnx"
        path.write_bytes(b"\x08\x07\x12\x07pytorch")  # an ONNX protobuf's first bytes
        expected = "is an ONNX file, not a cnnlab checkpoint"
    else:  # seeded; the second starts like a pickle of protocol 5 (torch warns, then fails)
        garbage = random.Random(0).randbytes(512)
        path.write_bytes(garbage if case == "garbage" else b"\x80\x05" + garbage)
        expected = "cannot be read"
    argv = [verb, str(path), *([str(image)] if verb == "predict" else ["--data-dir",
                                                                       str(image.parent.parent)])]
    line = _refused(argv, capsys)
    assert expected in line and "weights_only" not in line
    if case == "onnx":
        assert "--engine onnx" in line  # the CLI names its flag for the library's setting


def test_model_predict_takes_a_path_string_as_one_image(run_dir: Path, image: Path) -> None:
    import cnnlab

    model = cnnlab.load(str(run_dir), engine="torch")
    one = model.predict(str(image))
    assert len(one) == 1 and one[0].label in model.classes
    two = model.predict([str(image), str(image)])
    assert len(two) == 2 and (two[1].label, two[1].index) == (one[0].label, one[0].index)


# --- the run directory ------------------------------------------------------------------------

def test_second_train_on_a_held_run_directory_fails_at_once(folder: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    import fcntl

    from cnnlab.training.runlock import LOCK_NAME

    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT)  # as another process holds it
    (out / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "h", "command":
                                             "cnnlab train --out run", "since": 0}))
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        line = _refused(_train(folder, out), capsys)
    finally:
        os.close(fd)
    assert f"the run directory {str(out)!r} is in use by pid 4242 on h" in line
    assert "`cnnlab train --out run`" in line
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing of the run written
    assert main(_train(folder, out)) == 0  # released: the run goes ahead
    assert (out / "model.pt").is_file()


def test_out_is_a_file(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    assert "is a file, not a directory" in _refused(_train(folder, tmp_path / "afile"), capsys)
    assert "'" + str(tmp_path / "afile") + "' is a file" in _refused(
        _train(folder, tmp_path / "afile" / "run"), capsys)


def test_data_dir_naming_an_image_folder_is_refused(folder: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # the dataset left at mnist: without the check, MNIST found elsewhere would be trained on
    argv = ["train", "--data-dir", str(folder), "--epochs", "1", "--threads", "1",
            "--no-report", "-q", "--out", str(tmp_path / "run")]
    line = _refused(argv, capsys)
    assert f"{folder} is an image folder (class subfolders), not where the mnist files" in line
    assert f"pass --dataset {folder}" in line
    assert not (tmp_path / "run" / "model.pt").exists()


def test_read_only_out(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    real_mkdir = Path.mkdir

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        if tmp_path / "ro" in (self, *self.parents):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", read_only)
    line = _refused(_train(folder, tmp_path / "ro" / "run"), capsys)
    assert "read-only file system; choose a directory you can write to" in line
    assert "internal error" not in line


def test_full_disk_is_exit_1_and_leaves_nothing_half_written(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import cnnlab.inference.checkpoint as checkpoint

    real_save = torch.save

    def save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        if isinstance(obj, dict) and "train_state" in obj:  # last.pt: the disk is full
            f.write(b"partial")  # type: ignore[attr-defined]
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:  # as torch does: its own error, the OSError as the context
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected "
                                   "pos 704 vs 598") from None
        real_save(obj, f, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(checkpoint.torch, "save", save)
    out = tmp_path / "run"
    line = _refused(_train(folder, out), capsys, code=1)
    assert line.startswith(f"error: no space left on the device to write {out / 'last.pt'}")
    assert "free some space or choose another directory" in line
    assert not (out / "last.pt").exists()  # the temp file went, no partial last.pt
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    torch.load(out / "model.pt", weights_only=True)  # what was written is whole


def test_empty_validation_split_says_so(tmp_path: Path) -> None:
    from cnnlab.config import resolve_config
    from cnnlab.data import ImageDataset
    from cnnlab.errors import ConfigError
    from cnnlab.training.loop import fit
    from synth import prepared_data

    data = prepared_data(n_per_class=4, num_classes=2)
    data.val = ImageDataset(data.val.images[:0], data.val.targets[:0], data.classes, "e", "m")
    cfg = resolve_config({"model": {"name": "convnet", "width": 4},
                          "train": {"epochs": 1, "threads": 1}})
    with pytest.raises(ConfigError, match="the validation split is empty"):
        fit(cfg, data=data, out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_runs_lists_finished_tune_trials_as_done(run_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    trial = tmp_path / "tune" / "trials" / "0003"
    trial.mkdir(parents=True)
    shutil.copy(run_dir / "model.pt", trial / "model.pt")  # what a trial writes: model.pt alone
    (tmp_path / "tune" / "trials" / "0004").mkdir()
    (tmp_path / "tune" / "trials" / "0004" / "model.pt").write_bytes(b"")
    assert main(["runs", str(tmp_path / "tune"), "--json", "--sort", "name"]) == 0
    rows = json.loads(capsys.readouterr().out)
    rows = rows if isinstance(rows, list) else rows["runs"]
    done, broken = rows
    assert done["name"] == "trials/0003" and done["status"] == "done"
    assert done["model"] == "convnet" and done["val_accuracy"] is not None
    assert broken["status"] == "broken" and "is empty" in broken["problem"]


def test_prune_threads(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["prune", str(run_dir), "--amount", "0.5", "--finetune-epochs", "1",
                     "--threads", "1", "--out", str(tmp_path / "p"), "-q", "--json"]) == 0
        assert torch.get_num_threads() == 1  # the fine-tuning ran with --threads
        report = json.loads(capsys.readouterr().out)
        assert report["run_dir"] == str(tmp_path / "p")
    finally:
        torch.set_num_threads(before)
