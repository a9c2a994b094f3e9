"""AlexNet with torchvision-format ImageNet weights (created here: nothing downloads), found in
the PyTorch hub cache by name, adapted to 1x28x28 and to 3x224x224 input, fine-tuned on small
image folders end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.errors import CheckpointError
from cnnlab.models import create_model
from cnnlab.training.finetune import FinetuneSettings, finetune

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$TORCH_HOME with alexnet in torchvision's file name and key layout (random values)."""
    home = tmp_path_factory.mktemp("torch-home")
    hub = home / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.manual_seed(0)
    state = create_model("alexnet", in_channels=3, num_classes=1000, input_size=224).state_dict()
    torch.save(state, hub / "alexnet-owt-7be5be79.pth")
    return home


def _folder(root: Path, mode: str, size: int, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for k, name in enumerate(["circle", "square"]):
        (root / name).mkdir(parents=True)
        for i in range(n):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            a = rng.integers(0, 60, shape).astype(np.uint8)
            lo, hi = size // 4, 3 * size // 4
            a[lo:hi, lo + k * 2:hi] = 220  # the two classes differ in where the bright box is
            Image.fromarray(a, mode).save(root / name / f"{i}.png")
    return root


def test_alexnet_on_grey_28x28_digits_like_images(torch_home: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    folder = _folder(tmp_path / "grey", "L", 28)
    out = tmp_path / "ft"
    r = finetune(FinetuneSettings(source="alexnet", train_dir=str(folder), out=str(out),
                                  image_size=28, epochs=1, batch_size=8, threads=2,
                                  device="cpu", progress=False))
    src = r.info["source"]
    assert src["weights"] == "alexnet" and src["adapted_first_conv"] is True
    assert Path(src["source"]).name == "alexnet-owt-7be5be79.pth"
    assert r.info["input"] == [1, 28, 28] and r.info["head"] == "new"
    # one channel: ImageNet's statistics averaged, stored in the checkpoint
    model = cnnlab.load(out)
    spec = model.input_spec
    assert spec.mean == pytest.approx((sum(IMAGENET_MEAN) / 3,), abs=1e-6)
    assert spec.std == pytest.approx((sum(IMAGENET_STD) / 3,), abs=1e-6)
    assert model.classes == ["circle", "square"]
    assert model.classifier.features[0].weight.shape == (64, 1, 11, 11)
    assert model.predict([folder / "circle" / "0.png"])[0].label in model.classes


def test_alexnet_on_rgb_224_with_the_feature_cache(torch_home: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    folder = _folder(tmp_path / "rgb", "RGB", 64, n=3)  # resized to the weights' 224x224
    out = tmp_path / "lin"
    before = torch.load(torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth",
                        weights_only=True)
    r = finetune(FinetuneSettings(source="alexnet", train_dir=str(folder), out=str(out),
                                  strategy="linear", epochs=3, threads=2, device="cpu",
                                  progress=False))
    assert r.info["input"] == [3, 224, 224] and r.info["feature_cache"] is True
    after = r.model.state_dict()
    for key in ("features.0.weight", "features.10.weight", "classifier.1.weight",
                "classifier.4.weight"):
        assert torch.equal(before[key], after[key]), key  # the backbone stays as loaded
    assert after["classifier.6.weight"].shape == (2, 4096)
    model = cnnlab.load(out)
    assert model.input_spec.mean == pytest.approx(IMAGENET_MEAN)
    assert model.input_spec.shape == (3, 224, 224)


def test_missing_weights_say_where_they_were_looked_for(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-home"))
    folder = _folder(tmp_path / "f", "L", 16, n=2)
    with pytest.raises(CheckpointError, match=r"vgg11-8a719046\.pth"):
        finetune(FinetuneSettings(source="vgg11", train_dir=str(folder), out=str(tmp_path / "o"),
                                  epochs=1, progress=False))
