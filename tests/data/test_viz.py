"""The labelled sample grid (the paper's Fig. 2)."""

import re

import pytest
from PIL import Image

from cnnlab.data import sample_grid
from cnnlab.errors import ConfigError, DataError


def test_writes_a_png(synthetic_dataset, tmp_path):
    out = sample_grid(synthetic_dataset, tmp_path / "grid.png", per_class=5, seed=1)
    assert out == tmp_path / "grid.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as image:
        width, height = image.size
    assert width > 200 and height > 200
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # written atomically


def test_rgb_and_small_classes(make_synthetic_dataset, tmp_path):
    ds = make_synthetic_dataset(num_classes=3, per_class=2, channels=3)
    out = sample_grid(ds, tmp_path / "grid.pdf", per_class=4, title="")  # fewer than asked
    assert out.read_bytes()[:4] == b"%PDF"


def test_bad_arguments(synthetic_dataset, tmp_path):
    message = "The 'per_class' parameter of sample_grid must be a positive int. Got 0 instead."
    with pytest.raises(ConfigError, match=re.escape(message)):
        sample_grid(synthetic_dataset, tmp_path / "g.png", per_class=0)
    with pytest.raises(DataError, match="is empty: nothing to draw"):
        sample_grid(synthetic_dataset.subset([]), tmp_path / "g.png")
