import pytest
import torch

from cnnlab.errors import CheckpointError
from cnnlab.training.checkpoint import REQUIRED_KEYS, load_checkpoint, save_checkpoint


def _payload():
    return {"model": {"name": "lenet5", "kwargs": {}}, "state_dict": {"w": torch.ones(2)},
            "classes": ["a", "b"], "input_spec": {}, "preprocessing": {}, "config": {},
            "metrics": {"val_accuracy": 0.5}}


def test_round_trip_with_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _payload())
    raw = torch.load(path, weights_only=True)
    assert set(REQUIRED_KEYS) <= set(raw)
    ckpt = load_checkpoint(path)
    assert ckpt["classes"] == ["a", "b"]
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2))
    assert ckpt["versions"]["torch"] == torch.__version__
    assert list(tmp_path.iterdir()) == [path]  # no temp files left behind


def test_run_directory_means_its_model_pt(tmp_path):
    save_checkpoint(tmp_path / "model.pt", _payload())
    assert load_checkpoint(tmp_path)["path"].endswith("model.pt")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"does not exist; pass a \.pt file"):
        load_checkpoint(tmp_path / "none.pt")


def test_corrupt_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _payload())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cannot be read .* corrupt, truncated"):
        load_checkpoint(path)


def test_foreign_file(tmp_path):
    torch.save({"w": torch.ones(1)}, tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not a cnnlab checkpoint"):
        load_checkpoint(tmp_path / "sd.pt")


def test_missing_key_is_named(tmp_path):
    payload = _payload()
    save_checkpoint(tmp_path / "m.pt", payload)
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    del raw["classes"]
    torch.save(raw, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="lacks the required key 'classes'"):
        load_checkpoint(tmp_path / "m.pt")


def test_newer_format_refused(tmp_path):
    save_checkpoint(tmp_path / "m.pt", _payload())
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    raw["format_version"] = 99
    torch.save(raw, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "m.pt")


def test_failed_write_keeps_old_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _payload())
    before = path.read_bytes()
    bad = _payload()
    bad["state_dict"] = {"w": object()}  # torch.save refuses arbitrary objects? it pickles them
    bad["metrics"] = {"x": lambda: 0}  # lambdas cannot be pickled
    with pytest.raises(Exception):  # noqa: B017  (any pickling error)
        save_checkpoint(path, bad)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]
