"""to_mnist_form on synthetic drawings and on real MNIST digits dressed up as photos."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnnlab.data import read_idx, to_mnist_form
from cnnlab.errors import DataError

N_DIGITS = 12


@pytest.fixture(scope="module")
def digits(mnist_dir) -> np.ndarray:
    return read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:N_DIGITS]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def _centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    a = a.astype(float)
    idx = np.arange(a.shape[0])
    return float((a.sum(1) * idx).sum() / a.sum()), float((a.sum(0) * idx).sum() / a.sum())


def _photo(digit: np.ndarray, rng: np.random.Generator, dark_ink: bool = True) -> np.ndarray:
    """The digit enlarged 5x on a 150x200 sheet: off centre, uneven light, sensor noise."""
    big = np.asarray(Image.fromarray(digit).resize((140, 140), Image.Resampling.BILINEAR)) / 255
    sheet = np.zeros((150, 200))
    top, left = rng.integers(0, 10), rng.integers(0, 60)
    sheet[top : top + 140, left : left + 140] = big
    if dark_ink:
        paper = 0.8 + 0.15 * np.linspace(0, 1, 200)[None, :]  # light falls off to the left
        image = paper - (paper - 0.15) * sheet
    else:
        image = 0.1 + 0.75 * sheet
    image = image + rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _check_close(outputs: list[np.ndarray], originals: np.ndarray, mean: float) -> None:
    """Each output correlates with its original (measured: mean 0.93-0.94, min 0.75)."""
    scores = [_corr(o, d) for o, d in zip(outputs, originals, strict=True)]
    assert np.mean(scores) > mean, scores
    assert min(scores) > 0.6, scores
    for o in outputs:
        assert o.shape == (28, 28) and o.dtype == np.uint8
        cy, cx = _centre_of_mass(o)
        assert abs(cy - 14) <= 0.6 and abs(cx - 14) <= 0.6


def test_dark_ink_on_light_paper(digits):
    rng = np.random.default_rng(0)
    _check_close([to_mnist_form(_photo(d, rng)) for d in digits], digits, mean=0.85)


def test_light_ink_on_dark(digits):
    rng = np.random.default_rng(1)
    _check_close([to_mnist_form(_photo(d, rng, dark_ink=False)) for d in digits], digits, mean=0.85)


def test_rgb_pil_input(digits):
    rng = np.random.default_rng(2)
    outputs = []
    for d in digits:
        grey = _photo(d, rng)
        tint = np.stack([grey, (grey * 0.9).astype(np.uint8), grey], axis=-1)  # bluish paper
        outputs.append(to_mnist_form(Image.fromarray(tint)))
    _check_close(outputs, digits, mean=0.85)


def test_mnist_digits_pass_through_almost_unchanged(digits):
    _check_close([to_mnist_form(d) for d in digits], digits, mean=0.9)


def test_transparent_canvas_drawing():
    # Black strokes on a transparent canvas, as a browser drawing pad exports them.
    canvas = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).line([(100, 30), (100, 170)], fill=(0, 0, 0, 255), width=14)
    out = to_mnist_form(canvas)
    rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    assert rows[-1] - rows[0] + 1 == 20  # the tall stroke fits the 20-pixel box
    assert cols[-1] - cols[0] + 1 <= 5
    assert out.max() == 255 and out[0].max() == 0 and out[:, 0].max() == 0


def test_wide_shape_keeps_its_aspect_ratio():
    image = np.full((300, 400), 230, dtype=np.uint8)
    image[140:160, 50:350] = 20  # a dash 300 wide and 20 high
    out = to_mnist_form(image)
    rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    assert cols[-1] - cols[0] + 1 == 20 and rows[-1] - rows[0] + 1 <= 3
    assert abs(_centre_of_mass(out)[0] - 14) <= 0.6


def test_float_input_on_unit_range():
    image = np.zeros((64, 64))
    image[10:54, 28:36] = 1.0
    assert to_mnist_form(image).max() == 255


@pytest.mark.parametrize(
    "blank",
    [
        np.full((120, 90), 200, dtype=np.uint8),
        np.zeros((28, 28), dtype=np.uint8),
        np.clip(np.random.default_rng(0).normal(200, 8, (120, 90)), 0, 255).astype(np.uint8),
        Image.new("RGB", (64, 48), (250, 250, 240)),
    ],
    ids=["uniform", "black", "noise", "rgb"],
)
def test_blank_image_has_no_ink(blank):
    with pytest.raises(DataError, match=r"to_mnist_form: no ink found .* crop it to the digit"):
        to_mnist_form(blank)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2)), np.zeros((0, 5)), "image.png"])
def test_bad_input(bad):
    with pytest.raises(DataError, match="to_mnist_form expects"):
        to_mnist_form(bad)


def test_the_8bit_mnist_form_check_agrees_with_the_float_one():
    from cnnlab.data.digits import _already_mnist_form, _already_mnist_form_8bit

    rng = np.random.default_rng(0)
    seen = set()
    for i in range(2000):
        a = rng.integers(0, 256, (28, 28)).astype(np.uint8)  # noise: not MNIST form
        if i % 3 == 1:  # dark with a bright block and a stray border pixel: either way
            a = np.full((28, 28), rng.integers(0, 30), np.uint8)
            a[10:18, 5:22] = rng.integers(10, 256)
            a[0, rng.integers(0, 28)] = rng.integers(0, 256)
        elif i % 3 == 2:  # too little contrast
            a = np.full((28, 28), rng.integers(0, 200), np.uint8)
            a[5:20, 5:20] += np.uint8(rng.integers(0, 30))
        image = Image.fromarray(a)
        expected = _already_mnist_form(a / 255.0)
        assert _already_mnist_form_8bit(image, image.tobytes()) == expected, i
        seen.add(expected)
    assert seen == {True, False}
    # and to_mnist_form gives the same array either way
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 250
    fast = to_mnist_form(Image.fromarray(digit))
    assert fast.flags.writeable and (fast == to_mnist_form(digit / 255.0)).all()
    assert not to_mnist_form(Image.fromarray(digit), copy=False).flags.writeable
