"""A tiny model trained to look at one corner, and the small service model's run directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from corner_synth import corner_images

from synth import train_small_abc_model


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny batches: a second intra-op thread gains nothing and spins against neighbours."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corner_model():  # type: ignore[no-untyped-def]
    """resnet-tiny trained (a few seconds) to tell the corner square from none."""
    from cnnlab.models import create_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a session fixture comes before one_torch_thread
    try:
        return _train_corner_model(create_model)
    finally:
        torch.set_num_threads(threads)


def _train_corner_model(create_model):  # type: ignore[no-untyped-def]
    from cnnlab.data.transforms import normalize

    torch.manual_seed(0)
    model = create_model("resnet-tiny", num_classes=2)
    images, targets = corner_images(192)
    x = normalize(images, model.input_spec.mean, model.input_spec.std)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(4):
        for i in range(0, len(x), 32):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[i:i + 32]), targets[i:i + 32])
            loss.backward()
            opt.step()
    model.eval()
    test_x, test_t = corner_images(64, seed=1)
    with torch.no_grad():
        accuracy = (model(normalize(test_x, model.input_spec.mean, model.input_spec.std))
                    .argmax(1) == test_t).float().mean().item()
    assert accuracy > 0.95, accuracy  # the premise of the tests that use it
    return model


@pytest.fixture(scope="session")
def abc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_abc_model(tmp_path_factory.mktemp("explain"))
