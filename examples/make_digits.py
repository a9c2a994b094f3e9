"""Make the sample digit photos in examples/digits/ from MNIST test images.

They imitate real-world inputs: larger, dark ink on light paper (one light on dark), off
centre, with paper grain and uneven light, so `cnnlab predict` has to bring them back to
MNIST's form. Run: python examples/make_digits.py (uses data/mnist).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent
# (test index, canvas size, dark-on-light?)
PICKS = [(0, (160, 120), True), (1, (200, 200), True), (2, (96, 128), True),
         (3, (240, 180), False), (4, (128, 128), True), (8, (180, 220), True)]


def main() -> None:
    with gzip.open(ROOT.parent / "data/mnist/t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(ROOT.parent / "data/mnist/t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    rng = np.random.default_rng(7)
    for index, (w, h), dark_on_light in PICKS:
        digit = Image.fromarray(images[index]).resize((int(h * 0.6),) * 2, Image.BICUBIC)
        canvas = Image.new("L", (w, h), 0)
        x = int(rng.integers(0, w - digit.width + 1))
        y = int(rng.integers(0, h - digit.height + 1))
        canvas.paste(digit, (x, y))
        ink = np.asarray(canvas.filter(ImageFilter.GaussianBlur(0.8)), np.float64) / 255
        yy, xx = np.mgrid[0:h, 0:w]
        light = 0.85 + 0.1 * (xx / w) - 0.05 * (yy / h)  # uneven lighting
        grain = rng.normal(0, 0.03, (h, w))
        page = light * (1 - 0.8 * ink) + grain if dark_on_light else 0.12 + 0.8 * ink + grain
        out = Image.fromarray((np.clip(page, 0, 1) * 255).astype(np.uint8))
        kind = "paper" if dark_on_light else "board"
        out.save(ROOT / "digits" / f"digit{labels[index]}_{kind}.png", optimize=True)


if __name__ == "__main__":
    main()
