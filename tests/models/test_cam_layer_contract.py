"""The Grad-CAM layer contract: every registered model declares ``cam_layer`` in the registry,
the dotted path of the module whose output Grad-CAM hooks, or ``None`` for none."""

from __future__ import annotations

import pytest
import torch

from cnnlab.models import MODELS, create_model

ENTRIES = list(MODELS)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_every_model_declares_its_cam_layer(entry) -> None:  # type: ignore[no-untyped-def]
    assert "cam_layer" in entry.tags, (
        f"model {entry.name!r} does not declare its Grad-CAM layer: add cam_layer=\"<dotted "
        "module path inside the Classifier>\" (its last convolutional stage) or cam_layer=None "
        "to its @register_model")
    layer = entry.tags["cam_layer"]
    assert layer is None or (isinstance(layer, str) and layer), (entry.name, layer)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.tags.get("tiny") or e.tags.get("cheap")],
                         ids=lambda e: e.name)
def test_the_declared_layer_is_a_spatial_map(entry) -> None:  # type: ignore[no-untyped-def]
    """Built at 28x28, the declared module exists and gives (N, C, h, w) with h, w >= 1."""
    layer = entry.tags.get("cam_layer")
    if layer is None:
        pytest.skip(f"{entry.name} declares no Grad-CAM layer")
    model = create_model(entry.name, input_size=28).eval()
    module = model.get_submodule(layer)
    seen: list[torch.Size] = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    try:
        with torch.no_grad():
            model(torch.zeros(2, 1, 28, 28))
    finally:
        handle.remove()
    assert len(seen) == 1 and len(seen[0]) == 4 and seen[0][0] == 2, (entry.name, seen)
    assert min(seen[0][2:]) >= 1


def test_full_models_declare_what_their_tiny_variant_checks() -> None:
    """A full model too large to build here declares the same layer as a tiny or cheap model
    of its family (the same builder module), which the test above builds."""
    checked = {e.obj.__module__: e.tags.get("cam_layer") for e in ENTRIES
               if e.tags.get("tiny") or e.tags.get("cheap")}
    for e in ENTRIES:
        if not (e.tags.get("tiny") or e.tags.get("cheap")):
            assert e.obj.__module__ in checked, f"{e.name}: no tiny variant in its family"
            assert e.tags.get("cam_layer") == checked[e.obj.__module__], e.name
