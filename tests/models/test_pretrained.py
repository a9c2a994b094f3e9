"""torchvision-format weights: finding, reading, recognising, adapting and loading them.

Nothing downloads: the files are tiny models' state dicts saved in torchvision's key layout
(``alexnet-tiny`` has alexnet's keys, ``vgg-tiny`` vgg11's), and the downloader is replaced
where a test needs it. Full-size models are only built on the meta device, except once.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.models import create_model
from cnnlab.models.base import IMAGENET_MEAN, IMAGENET_STD
from cnnlab.models.pretrained import (
    WEIGHTS,
    adapt_first_conv,
    create_pretrained,
    find_weights_file,
    guess_arch,
    hub_dir,
    load_pretrained_weights,
    read_state_dict,
)

HEAD = ["classifier.6.weight", "classifier.6.bias"]


@pytest.fixture
def checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``$TORCH_HOME`` in tmp_path; returns its hub/checkpoints (not created)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home" / "hub" / "checkpoints"


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)


def _tiny(name: str, in_channels: int = 3, num_classes: int = 10, seed: int = 0,
          input_size: int = 32) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model(name, in_channels=in_channels, num_classes=num_classes,
                         input_size=input_size)
    with torch.no_grad():  # non-zero conv biases, so that wrong biases show
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def _save(obj: object, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


# ---- the registry and finding files -----------------------------------------------------------


def test_registered_weights_are_torchvisions() -> None:
    assert WEIGHTS.names() == ["alexnet", "vgg11", "vgg16"]
    for entry in WEIGHTS:
        spec = entry.obj
        assert entry.description and spec.name == entry.name == spec.arch
        assert spec.url == "https://download.pytorch.org/models/" + spec.filename
        assert spec.filename.endswith(f"-{spec.sha256_prefix}.pth")
        assert (spec.input_size, spec.num_classes, spec.categories) == (224, 1000, None)
        assert (spec.mean, spec.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert WEIGHTS.get("alexnet").filename == "alexnet-owt-7be5be79.pth"
    assert (WEIGHTS.get("alexnet").min_size, WEIGHTS.get("vgg16").min_size) == (63, 32)


def test_hub_dir_follows_torch_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_dir() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"
    assert hub_dir() == Path(torch.hub.get_dir()) / "checkpoints"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert hub_dir() == tmp_path / "th" / "hub" / "checkpoints"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert hub_dir() == Path("~/.cache/torch/hub/checkpoints").expanduser()


@pytest.mark.usefixtures("no_download")
def test_missing_registered_file_offline_names_the_full_path(checkpoints: Path) -> None:
    expected = checkpoints / "vgg16-397923af.pth"
    with pytest.raises(CheckpointError) as info:
        find_weights_file("vgg16")  # $CNNLAB_OFFLINE=1 (tests/conftest.py)
    message = str(info.value)
    assert f"expected {expected};" in message
    assert "downloading is off" in message and "Fix: copy vgg16-397923af.pth" in message
    assert "pass the file's path" in message
    with pytest.raises(CheckpointError, match="downloading is off"):
        create_pretrained("vgg16", download=False)
    assert not checkpoints.exists()


@pytest.mark.usefixtures("no_download")
def test_registered_file_in_torch_home_is_found(checkpoints: Path) -> None:
    path = _save(_tiny("alexnet-tiny").state_dict(), checkpoints / "alexnet-owt-7be5be79.pth")
    assert find_weights_file("alexnet") == (path, WEIGHTS.get("alexnet"))


def test_download_uses_torch_hub_with_the_hash_prefix(
    checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        calls.append((url, dst, hash_prefix, progress))
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake)
    path, spec = find_weights_file("vgg11", download=True, progress=False)
    assert path == checkpoints / "vgg11-8a719046.pth" and path.read_bytes() == b"weights"
    assert calls == [(spec.url, str(path), "8a719046", False)]


def test_failed_download_is_a_checkpoint_error(
    checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake)
    monkeypatch.setenv("CNNLAB_OFFLINE", "0")  # download=None now means yes
    with pytest.raises(CheckpointError, match=r"downloading https://download\.pytorch\.org/"
                                              r"models/vgg11-8a719046\.pth failed.*no network"):
        find_weights_file("vgg11")


def test_path_sources(tmp_path: Path) -> None:
    state = _tiny("vgg-tiny").state_dict()
    named = _save(state, tmp_path / "vgg16-397923af.pth")
    assert find_weights_file(str(named)) == (named, WEIGHTS.get("vgg16"))
    other = _save(state, tmp_path / "mine.pt")
    assert find_weights_file(str(other)) == (other, None)
    with pytest.raises(CheckpointError, match=r"'vgg61' is neither an existing file nor a "
                                              r"registered name.*did you mean 'vgg16'"):
        find_weights_file("vgg61")
    with pytest.raises(CheckpointError, match="is a directory"):
        find_weights_file(str(tmp_path))


# ---- reading files ----------------------------------------------------------------------------


def test_read_state_dict_accepts_wrappers_and_strips_module_prefix(tmp_path: Path) -> None:
    state = _tiny("alexnet-tiny").state_dict()
    keys = list(state)
    module = {f"module.{k}": v for k, v in state.items()}
    for i, obj in enumerate([
        state, {"state_dict": state, "epoch": 3}, {"model": state},
        {"model": {"name": "alexnet-tiny"}, "state_dict": state},  # a cnnlab checkpoint
        module, {"state_dict": module},
    ]):
        got = read_state_dict(_save(obj, tmp_path / f"{i}.pth"))
        assert list(got) == keys, i
        assert all(torch.equal(got[k], state[k]) for k in keys)


def test_read_state_dict_rejects_corrupt_and_other_files(tmp_path: Path) -> None:
    good = _save(_tiny("alexnet-tiny").state_dict(), tmp_path / "good.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:1000])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file")
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match=rf"{path.name}' cannot be read by torch\.load"):
            read_state_dict(path)
    for obj in ([torch.zeros(2)], {"epoch": 3}, {}):
        with pytest.raises(CheckpointError, match="holds no state dict"):
            read_state_dict(_save(obj, tmp_path / "other.pth"))
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "absent.pth")


# ---- recognising and adapting -----------------------------------------------------------------


def test_guess_arch() -> None:
    for name in ("alexnet", "vgg11", "vgg16"):
        with torch.device("meta"):
            state = create_model(name, in_channels=1, num_classes=10).state_dict()
        assert guess_arch(state) == name
    assert guess_arch(_tiny("alexnet-tiny").state_dict()) == "alexnet-tiny"
    assert guess_arch(_tiny("vgg-tiny", in_channels=1, num_classes=2).state_dict()) == "vgg-tiny"
    assert guess_arch(_tiny("resnet-tiny").state_dict()) is None
    wider = _tiny("alexnet-tiny", input_size=28)
    wider.reset_classifier(7)
    state = dict(wider.state_dict())
    state["features.0.weight"] = torch.zeros(5, 3, 11, 11)  # alexnet keys, no shapes match
    assert guess_arch(state) == "alexnet"  # first with the same keys


def test_fold_3_to_1_channel_is_exact_in_the_interior() -> None:
    torch.manual_seed(0)
    weight, bias = torch.randn(6, 3, 5, 5, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    grey = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    m = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    rgb = F.conv2d((grey.repeat(1, 3, 1, 1) - m) / s, weight, bias, padding=2)
    w1, b1 = adapt_first_conv(weight, bias, 1, IMAGENET_MEAN, IMAGENET_STD)
    assert w1.shape == (6, 1, 5, 5) and b1 is not None and b1.shape == (6,)
    one = F.conv2d((grey - m.mean()) / s.mean(), w1, b1, padding=2)
    torch.testing.assert_close(one[..., 2:-2, 2:-2], rgb[..., 2:-2, 2:-2], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(one[..., 0, 0], rgb[..., 0, 0])  # zero padding: only the interior
    w32, b32 = adapt_first_conv(weight.float(), bias.float(), 1)  # ImageNet stats by default
    assert w32.dtype == b32.dtype == torch.float32
    torch.testing.assert_close(w32, w1.float())


def test_repeat_1_to_3_channels_and_other_cases() -> None:
    weight, bias = torch.randn(4, 1, 3, 3), torch.randn(4)
    w3, b3 = adapt_first_conv(weight, bias, 3, IMAGENET_MEAN, IMAGENET_STD)
    assert w3.shape == (4, 3, 3, 3) and b3 is bias
    torch.testing.assert_close(w3.sum(1, keepdim=True), weight)
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(F.conv2d(x.repeat(1, 3, 1, 1), w3, b3), F.conv2d(x, weight, bias))
    assert adapt_first_conv(weight, bias, 1, IMAGENET_MEAN, IMAGENET_STD) == (weight, bias)
    with pytest.raises(CheckpointError, match=r"3 input channel\(s\) cannot be adapted to 2"):
        adapt_first_conv(torch.randn(4, 3, 3, 3), None, 2, IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(CheckpointError, match="needs the 3 per-channel mean"):
        adapt_first_conv(torch.randn(4, 3, 3, 3), None, 1, (0.5,), (0.5,))


# ---- loading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alexnet-tiny", "vgg-tiny"])
def test_same_architecture_gives_identical_outputs(name: str, tmp_path: Path) -> None:
    source = _tiny(name, num_classes=10)
    path = _save(source.state_dict(), tmp_path / "weights.pth")
    model, info = create_pretrained(str(path), in_channels=3, num_classes=10, input_size=32)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
    assert info == {
        "source": str(path), "weights": None, "arch": name, "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD), "min_size": model.min_size, "input_size": [32, 32],
        "categories": None, "skipped": [], "adapted_first_conv": False,
    }
    assert model.input_spec.shape == (3, 32, 32) and model.input_spec.mean == IMAGENET_MEAN


def test_head_is_skipped_when_classes_differ(tmp_path: Path) -> None:
    source = _tiny("vgg-tiny", num_classes=10)
    path = _save(source.state_dict(), tmp_path / "weights.pth")
    model, info = create_pretrained(str(path), arch="vgg-tiny", num_classes=4, input_size=32)
    assert info["skipped"] == HEAD and info["arch"] == "vgg-tiny"
    assert model.classifier[6].weight.shape == (4, 32) and model.num_classes == 4
    for key, value in model.state_dict().items():
        if key not in HEAD:
            assert torch.equal(value, source.state_dict()[key]), key
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval().forward_head(model.forward_features(x), pre_logits=True),
            source.forward_head(source.forward_features(x), pre_logits=True),
        )
    fresh = create_model("vgg-tiny", in_channels=3, num_classes=4, input_size=32)
    with pytest.raises(CheckpointError, match=r"key 'classifier\.6\.weight' has shape \(10, 32\) "
                                              r"in the file but \(4, 32\).*num_classes=10"):
        load_pretrained_weights(fresh, source.state_dict(), arch="vgg-tiny", skip_head=False)


def test_rgb_weights_fold_into_a_grey_model(tmp_path: Path) -> None:
    source = _tiny("alexnet-tiny", num_classes=10)
    path = _save(source.state_dict(), tmp_path / "weights.pth")
    model, info = create_pretrained(str(path), in_channels=1, input_size=28)
    assert info["adapted_first_conv"] and info["skipped"] == HEAD
    assert info["mean"] == pytest.approx([sum(IMAGENET_MEAN) / 3])
    assert info["std"] == pytest.approx([sum(IMAGENET_STD) / 3])
    assert model.input_spec.mean == pytest.approx((sum(IMAGENET_MEAN) / 3,))
    assert model.input_spec.shape == (1, 28, 28)
    w, b = adapt_first_conv(source.features[0].weight, source.features[0].bias, 1,
                            IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(model.features[0].weight, w) and torch.equal(model.features[0].bias, b)
    assert torch.equal(model.features[3].weight, source.features[3].weight)


def test_grey_weights_repeat_into_an_rgb_model(tmp_path: Path) -> None:
    source = _tiny("vgg-tiny", in_channels=1)
    path = _save(source.state_dict(), tmp_path / "weights.pth")
    model, info = create_pretrained(str(path), in_channels=3, num_classes=10, input_size=32)
    assert info["adapted_first_conv"] and info["skipped"] == [] and info["arch"] == "vgg-tiny"
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(model.eval()(x.repeat(1, 3, 1, 1)), source(x))


def test_wrong_architecture_names_the_key_and_the_guess(tmp_path: Path) -> None:
    path = _save(_tiny("vgg-tiny").state_dict(), tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match=(
        r"do not fit model 'alexnet-tiny': missing key 'features\.10\.weight' \(and \d+ more\); "
        r"unexpected key 'features\.11\.weight' \(and \d+ more\)\. These look like vgg-tiny "
        r"weights, not alexnet-tiny")):
        create_pretrained(str(path), arch="alexnet-tiny", num_classes=10, input_size=32)
    with torch.device("meta"):  # same keys as alexnet-tiny, other shapes; no memory used
        alexnet = create_model("alexnet", in_channels=3, num_classes=10)
    with pytest.raises(CheckpointError, match=(
        r"'features\.0\.weight' has shape \(4, 3, 11, 11\) in the file but \(64, 3, 11, 11\) in "
        r"the model\. These look like alexnet-tiny weights, not alexnet")):
        load_pretrained_weights(alexnet, _tiny("alexnet-tiny").state_dict(), arch="alexnet")


def test_missing_unexpected_and_misshapen_keys_are_named() -> None:
    state = dict(_tiny("alexnet-tiny").state_dict())
    model = create_model("alexnet-tiny", in_channels=3, num_classes=10, input_size=32)
    missing = {k: v for k, v in state.items() if k != "features.3.bias"}
    with pytest.raises(CheckpointError, match=r"missing key 'features\.3\.bias'\. Expected 16 "
                                              r"keys"):
        load_pretrained_weights(model, missing, arch="alexnet-tiny")
    extra = {**state, "features.99.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected key 'features\.99\.weight'\."):
        load_pretrained_weights(model, extra, arch="alexnet-tiny")
    wrong = {**state, "classifier.4.weight": torch.zeros(32, 31)}
    with pytest.raises(CheckpointError, match=r"key 'classifier\.4\.weight' has shape \(32, 31\) "
                                              r"in the file but \(32, 32\) in the model\.$"):
        load_pretrained_weights(model, wrong, arch="alexnet-tiny")


def test_unknown_architecture_asks_for_arch(tmp_path: Path) -> None:
    path = _save(_tiny("resnet-tiny").state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match=r"cannot tell which architecture.*set arch"):
        create_pretrained(str(path))


@pytest.mark.usefixtures("no_download")
def test_arch_must_agree_with_registered_weights(checkpoints: Path) -> None:
    _save({"x": torch.zeros(1)}, checkpoints / "vgg11-8a719046.pth")
    with pytest.raises(ConfigError, match=r"weights 'vgg11' are for model 'vgg11', not 'alexnet'"):
        create_pretrained("vgg11", arch="alexnet")


@pytest.mark.usefixtures("no_download")
def test_real_size_alexnet_by_name(checkpoints: Path) -> None:
    """The one full-size load: torchvision's alexnet file layout into a 1x28x28 10-class model."""
    torch.manual_seed(0)
    with torch.no_grad():
        source = create_model("alexnet", in_channels=3, num_classes=1000, input_size=224)
    _save(source.state_dict(), checkpoints / "alexnet-owt-7be5be79.pth")
    model, info = create_pretrained("alexnet", in_channels=1, num_classes=10, input_size=28)
    assert info["weights"] == "alexnet" and info["arch"] == "alexnet"
    assert info["skipped"] == HEAD and info["adapted_first_conv"]
    assert info["min_size"] == 63 and info["input_size"] == [28, 28]
    assert model.small_input and model.input_spec.shape == (1, 28, 28)
    assert torch.equal(model.classifier[4].weight, source.classifier[4].weight)
    assert model.eval()(torch.randn(1, 1, 28, 28)).shape == (1, 10)
