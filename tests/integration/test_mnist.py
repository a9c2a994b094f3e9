"""End to end on the real MNIST files: train on a subset, evaluate, predict sample photos."""

from pathlib import Path

import pytest

import cnnlab

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
SAMPLES = ROOT / "examples" / "digits"

pytestmark = pytest.mark.skipif(not (DATA / "mnist").is_dir(),
                                reason="the MNIST files are not in data/mnist")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("mnist") / "run"
    # the fast recipe on a fifth of the training set: a few seconds on 2 cores
    return cnnlab.train(recipe="fast", data_dir=str(DATA), limit=12000, out=out, device="cpu",
                        seed=0)


def test_accuracy_on_the_full_test_set(model):
    assert model.metrics["test_images"] == 10000
    assert model.metrics["test_accuracy"] >= 0.97, model.metrics
    assert model.metrics["train_images"] == 12000


def test_reload_gives_the_same_predictions(model):
    again = cnnlab.load(model.path)
    images = sorted(SAMPLES.glob("*.png"))
    assert [p.label for p in again.predict(images)] == [p.label for p in model.predict(images)]


def test_sample_photos_are_read_like_mnist(model):
    # each file is named digit<label>_<kind>.png
    images = sorted(SAMPLES.glob("*.png"))
    assert len(images) >= 6
    preds = model.predict(images)
    pairs = [(img.name, p.label) for p, img in zip(preds, images, strict=True)]
    correct = sum(label == name[5] for name, label in pairs)
    assert correct >= len(images) - 1, pairs
