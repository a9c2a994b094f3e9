"""Images whose class is decided by one corner, for the explanation tests."""

from __future__ import annotations

import numpy as np
import torch


def corner_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, 1, 28, 28): bright distractor strokes (1x8 or 8x1) outside the top-left
    quadrant in every image; class 1 also has a bright 6x6 square in the top-left corner."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, 28, 28), dtype=np.uint8)
    targets = np.arange(n) % 2
    for i in range(n):
        for _ in range(3):
            while True:
                y, x = rng.integers(0, 20, size=2)
                if y >= 14 or x >= 14:
                    break
            if rng.random() < 0.5:
                images[i, 0, y, x:x + 8] = 255
            else:
                images[i, 0, y:y + 8, x] = 255
        if targets[i]:
            y, x = rng.integers(1, 4, size=2)
            images[i, 0, y:y + 6, x:x + 6] = 255
    return torch.from_numpy(images), torch.from_numpy(targets)
