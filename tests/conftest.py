"""Shared test fixtures: real MNIST (skipped when absent), small fake IDX files, an image folder
with odd files, and a learnable synthetic image dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from PIL import Image

if TYPE_CHECKING:  # imported lazily so a broken cnnlab.data does not break every test
    from cnnlab.data import ImageDataset

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The directory holding the four real MNIST .gz files; skips the test if there is none."""
    for candidate in (REPO_ROOT / "data" / "mnist", REPO_ROOT.parent / "shared" / "data" / "mnist"):
        if all((candidate / name).is_file() for name in MNIST_FILES):
            return candidate
    pytest.skip("real MNIST files not found in data/mnist or ../shared/data/mnist")


def make_synthetic(
    num_classes: int = 4,
    per_class: int = 32,
    size: int = 16,
    channels: int = 1,
    seed: int = 0,
) -> ImageDataset:
    """Learnable images: class k is a bright bar at angle k * 180 / num_classes through
    a jittered centre, on a dark noisy background."""
    from cnnlab.data import ImageDataset

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    images, targets = [], []
    for k in range(num_classes):
        angle = np.pi * k / num_classes
        for _ in range(per_class):
            cy, cx = size / 2 + rng.uniform(-1.5, 1.5, 2)
            distance = np.abs((xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle))
            bar = np.clip(1.5 - distance, 0, 1) * rng.uniform(0.7, 1.0)
            pixels = np.clip(bar + rng.normal(0, 0.05, bar.shape), 0, 1)
            images.append(np.repeat((pixels * 255).astype(np.uint8)[None], channels, axis=0))
            targets.append(k)
    return ImageDataset(
        images=torch.from_numpy(np.stack(images)),
        targets=torch.tensor(targets, dtype=torch.int64),
        classes=[f"bar{round(180 * k / num_classes)}" for k in range(num_classes)],
        name="synthetic-bars",
        source="make_synthetic",
    )


@pytest.fixture
def synthetic_dataset() -> ImageDataset:
    """4 classes x 32 images of 1x16x16 bars: small, and a tiny CNN learns it in seconds."""
    return make_synthetic()


@pytest.fixture
def make_synthetic_dataset() -> Callable[..., ImageDataset]:
    """:func:`make_synthetic` itself, for tests that want other sizes."""
    return make_synthetic


@pytest.fixture
def fake_idx(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """Factory writing a small valid IDX pair (random 28x28 images, labels 0..9)."""

    def write(
        directory: Path | None = None,
        prefix: str = "t10k",
        n: int = 20,
        n_labels: int | None = None,
        num_classes: int = 10,
        gz: bool = True,
        seed: int = 0,
    ) -> tuple[Path, Path]:
        from cnnlab.data import write_idx

        directory = directory or tmp_path
        directory.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        suffix = ".gz" if gz else ""
        images = directory / f"{prefix}-images-idx3-ubyte{suffix}"
        labels = directory / f"{prefix}-labels-idx1-ubyte{suffix}"
        write_idx(images, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(labels, (np.arange(n if n_labels is None else n_labels) % num_classes)
                  .astype(np.uint8))
        return images, labels

    return write


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """``root/{cat,dog}/`` of 8x8 images, plus files the loader must skip: a .txt, hidden
    files and a hidden directory. ``dog`` mixes a greyscale PNG, an RGB JPEG-named PNG with
    an upper-case extension and a BMP."""
    root = tmp_path / "pets"
    (root / "dog").mkdir(parents=True)  # made first: classes must still come out sorted
    (root / "cat").mkdir()
    (root / ".hidden_class").mkdir()
    Image.new("L", (8, 8), 10).save(root / ".hidden_class" / "a.png")
    Image.new("L", (8, 8), 200).save(root / "cat" / "c1.png")
    Image.new("L", (8, 8), 100).save(root / "cat" / "c2.bmp")
    Image.new("L", (8, 8), 50).save(root / "dog" / "d1.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(root / "dog" / "D2.PNG")
    Image.new("L", (8, 8), 0).save(root / "dog" / ".d3.png")  # hidden: skipped
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "cat" / "cat.jpg.bak").write_bytes(b"\xff\xd8 junk")  # other extension: skipped
    (root / "README.md").write_text("files directly in root are ignored")
    return root


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the internet: dataset downloads are off unless a test turns them on
    (the download tests do, against a server on 127.0.0.1)."""
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _engine_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
                  ) -> None:
    """ONNX exports and engine choices go to a temporary cache, not the user's."""
    monkeypatch.setenv("CNNLAB_ENGINE_CACHE", str(tmp_path_factory.getbasetemp() / "engines"))


@pytest.fixture(autouse=True)
def _empty_working_directory(monkeypatch: pytest.MonkeyPatch,
                             tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test starts in an empty working directory, not wherever pytest was started.

    Registered datasets are also looked up in ``./data/<name>`` (the repository ships MNIST
    there), so from the repository root a test expecting "mnist not found" would find, and
    train on, the real files; and relative defaults (``runs/<name>``, ``grid.png``) would
    land in the checkout. A test that wants a working directory chdirs into its own.
    """
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
