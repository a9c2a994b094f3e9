"""Fixtures of the robustness tests: digit-like 28x28 strokes, and a tiny model that learns
bars in a second."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cnnlab.inference import Model
from cnnlab.models import create_model


def stroke_digits(n: int = 6, seed: int = 0) -> np.ndarray:
    """uint8 (n, 28, 28) MNIST-form strokes (white on black, 20x20 box): digit-like enough
    for corruptions and shifts to act on."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = Image.new("L", (28, 28), 0)
        draw = ImageDraw.Draw(img)
        points = [tuple(int(v) for v in rng.integers(5, 23, size=2)) for _ in range(4)]
        draw.line(points, fill=255, width=3)
        out.append(np.asarray(img))
    return np.stack(out)


@pytest.fixture
def digits() -> np.ndarray:
    return stroke_digits()


def bars(n_per_class: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 1, 28, 28) images of one bar each (4 classes: horizontal, vertical, two
    diagonals), white on black, with noise."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for k in range(4):
        for _ in range(n_per_class):
            img = Image.new("L", (28, 28), 0)
            draw = ImageDraw.Draw(img)
            a, b = int(rng.integers(4, 10)), int(rng.integers(18, 24))
            c = int(rng.integers(10, 18))
            line = [((a, c), (b, c)), ((c, a), (c, b)), ((a, a), (b, b)), ((a, b), (b, a))][k]
            draw.line(line, fill=255, width=3)
            arr = np.asarray(img).astype(np.float64) + rng.normal(0, 10, size=(28, 28))
            images.append(np.clip(arr, 0, 255).astype(np.uint8))
            targets.append(k)
    return (torch.from_numpy(np.stack(images))[:, None],
            torch.tensor(targets, dtype=torch.int64))


@pytest.fixture(scope="module")
def bar_model() -> tuple[Model, torch.Tensor, torch.Tensor]:
    """paper-cnn-tiny trained on bars (60 steps), with held-out bars to attack."""
    torch.manual_seed(0)
    classifier = create_model("paper-cnn-tiny", num_classes=4)
    images, targets = bars(40, seed=0)
    spec = classifier.input_spec
    x = (images.float() / 255 - spec.mean[0]) / spec.std[0]
    opt = torch.optim.Adam(classifier.parameters(), lr=3e-3)
    classifier.train()
    for _ in range(15):
        for i in range(0, len(x), 40):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(classifier(x[i:i + 40]),
                                                     targets[i:i + 40])
            loss.backward()
            opt.step()
    model = Model(classifier, ["h", "v", "d1", "d2"],
                  {"kind": "mnist-digits", "channels": 1, "height": 28, "width": 28})
    test_images, test_targets = bars(10, seed=1)
    return model, test_images, test_targets
