"""cnnlab: from a folder of images to a trained, evaluated and deployed CNN classifier.

The public API is small and lazily imported, so ``import cnnlab`` and the CLI start fast::

    import cnnlab
    model = cnnlab.train(recipe="fast", out="runs/fast")
    model = cnnlab.load("runs/fast")
    model.predict(["digit.png"])[0].label
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnlab._version import __version__

__all__ = [
    "CnnlabError",
    "Model",
    "Prediction",
    "__version__",
    "create_model",
    "list_models",
    "load",
    "load_dataset",
    "train",
]

_LAZY = {
    "Model": "cnnlab.api",
    "Prediction": "cnnlab.api",
    "load": "cnnlab.api",
    "train": "cnnlab.api",
    "create_model": "cnnlab.models",
    "list_models": "cnnlab.models",
    "load_dataset": "cnnlab.data",
    "CnnlabError": "cnnlab.errors",
}

if TYPE_CHECKING:
    from cnnlab.api import Model, Prediction, load, train
    from cnnlab.data import load_dataset
    from cnnlab.errors import CnnlabError
    from cnnlab.models import create_model, list_models


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
