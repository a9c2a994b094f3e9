"""Exporting datasets as image folders: sklearn's digits in MNIST form, registered datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import load_image_folder
from cnnlab.data.export import digits_to_mnist_form, export_dataset
from cnnlab.errors import ConfigError


def test_digits_to_mnist_form_fits_20x20_and_centres_by_mass() -> None:
    digit = np.zeros((8, 8))
    digit[:, 6:] = 16  # a bar at the right edge: its mass is off-centre in the 8x8 frame
    out = digits_to_mnist_form(digit)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    ys, xs = np.indices(out.shape)
    mass = out.astype(float)
    cy, cx = (ys * mass).sum() / mass.sum(), (xs * mass).sum() / mass.sum()
    assert abs(cy - 13.5) <= 1.0 and abs(cx - 13.5) <= 1.0
    assert out.max() == 255 and out[0].sum() == 0  # white ink on black, margins empty
    rows = np.nonzero(out.max(axis=1))[0]
    assert rows.max() - rows.min() + 1 == 20  # the bar's longer side is 20 pixels


def test_export_sklearn_digits(tmp_path: Path) -> None:
    counts = export_dataset("sklearn-digits", tmp_path / "digits", limit=60, progress=False)
    assert sum(counts.values()) == 60 and list(counts) == [str(k) for k in range(10)]
    ds = load_image_folder(tmp_path / "digits", progress=False)
    assert ds.images.shape[1:] == (1, 28, 28) and len(ds) == 60
    raw = export_dataset("sklearn-digits", tmp_path / "raw", form="raw", limit=20,
                         progress=False)
    assert sum(raw.values()) == 20
    assert load_image_folder(tmp_path / "raw", progress=False).images.shape[1:] == (1, 8, 8)
    # an existing folder is kept unless overwritten; no partial folder is left behind
    with pytest.raises(ConfigError, match="already exists"):
        export_dataset("sklearn-digits", tmp_path / "digits", limit=5, progress=False)
    export_dataset("sklearn-digits", tmp_path / "digits", limit=10, overwrite=True,
                   progress=False)
    assert len(load_image_folder(tmp_path / "digits", progress=False)) == 10
    assert not list(tmp_path.glob(".*partial"))


def test_export_registered_dataset_and_errors(mnist_dir: Path, tmp_path: Path) -> None:
    counts = export_dataset("mnist", tmp_path / "out", split="test",
                            data_dir=str(mnist_dir.parent), limit=12, progress=False)
    assert sum(counts.values()) == 12
    ds = load_image_folder(tmp_path / "out", progress=False)
    assert ds.images.shape[1:] == (1, 28, 28)
    with pytest.raises(ConfigError, match="cannot export 'cifar'"):
        export_dataset("cifar", tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="The 'form' setting of export_dataset must be "
                                          "mnist or raw"):
        export_dataset("sklearn-digits", tmp_path / "x", form="png", progress=False)
