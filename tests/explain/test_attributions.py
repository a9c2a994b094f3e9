"""Attributions: the input's shape, deterministic, Grad-CAM where the evidence is, the
registry's Grad-CAM layer contract and the errors a user can cause."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from corner_synth import corner_images

from cnnlab.errors import ConfigError
from cnnlab.explain import METHODS, Explainer, cam_layer_of, check_method, heatmap
from cnnlab.models import create_model


@pytest.mark.parametrize("method", METHODS)
def test_attributions_have_the_input_shape_and_are_deterministic(corner_model, method) -> None:  # type: ignore[no-untyped-def]
    explainer = Explainer(corner_model, cam_layer="stages")
    images, _ = corner_images(6, seed=2)
    first = explainer.attribute(images, method=method)
    again = explainer.attribute(images, method=method)
    assert first.shape == tuple(images.shape) and first.dtype == np.float32
    assert np.isfinite(first).all() and np.abs(first).sum() > 0
    np.testing.assert_array_equal(first, again)
    # one image at a time gives the same maps as the batch
    np.testing.assert_allclose(explainer.attribute(images[:1], method=method), first[:1],
                               rtol=1e-4, atol=1e-5 * float(np.abs(first).max()))


@pytest.mark.parametrize("method", ["gradcam", "occlusion", "ig"])
def test_colour_inputs_keep_their_channels(method: str) -> None:
    torch.manual_seed(0)
    model = create_model("convnet", in_channels=3, input_size=32, widths=[4, 8],
                         pools=[True, True]).eval()
    explainer = Explainer(model, cam_layer=cam_layer_of("convnet"))
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = explainer.attribute(images, [0, 1], method)
    assert out.shape == (2, 3, 32, 32)
    assert heatmap(out).shape == (2, 32, 32)


@pytest.mark.parametrize("method", ["gradcam", "guided-gradcam"])
def test_a_cropping_models_cam_lies_over_its_crop(method: str) -> None:
    """A convnet that looks at the centred 20x20 of a 28x28 image explains it as the same net
    explains the 20x20 crop itself: the map over the crop, nothing outside."""
    torch.manual_seed(0)
    cropping = create_model("convnet", crop=20, widths=[8, 16, 16]).eval()
    plain = create_model("convnet", input_size=20, widths=[8, 16, 16]).eval()
    plain.load_state_dict(cropping.state_dict())
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    got = Explainer(cropping, cam_layer=cam_layer_of("convnet")).attribute(images, [1, 2, 3],
                                                                           method)
    inside = Explainer(plain, cam_layer=cam_layer_of("convnet")).attribute(
        images[:, :, 4:24, 4:24].contiguous(), [1, 2, 3], method)
    assert np.abs(inside).sum() > 0
    np.testing.assert_allclose(got[:, :, 4:24, 4:24], inside, rtol=1e-4, atol=1e-6)
    outside = got.copy()
    outside[:, :, 4:24, 4:24] = 0
    assert not outside.any()


def test_gradcam_puts_its_mass_in_the_corner_the_model_looks_at(corner_model) -> None:  # type: ignore[no-untyped-def]
    explainer = Explainer(corner_model, cam_layer="stages")
    images, targets = corner_images(40, seed=3)
    marked = images[targets == 1]
    maps = heatmap(explainer.attribute(marked, [1] * len(marked), "gradcam"))
    corner = maps[:, :14, :14].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
    # the quadrant is a quarter of the image, and every image has distractors outside it
    assert np.median(corner) > 0.8, corner


def test_unknown_method_gets_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"unknown explanation method 'gradcm'; "
                                          r"did you mean 'gradcam'"):
        check_method("gradcm")


def test_gradcam_without_a_declared_layer_names_the_methods_that_work(corner_model) -> None:  # type: ignore[no-untyped-def]
    explainer = Explainer(corner_model, cam_layer=None, model_name="model 'tiny-vit'")
    assert explainer.methods == ["ig", "saliency", "occlusion"]
    with pytest.raises(ConfigError, match=r"gradcam needs a convolutional layer.*'tiny-vit' "
                                          r"declares none.*use ig, saliency, occlusion"):
        explainer.attribute(corner_images(2)[0], method="gradcam")
    with pytest.raises(ConfigError, match="guided-gradcam needs"):
        explainer.attribute(corner_images(2)[0], method="guided-gradcam")
    assert explainer.attribute(corner_images(2)[0], method="saliency").shape == (2, 1, 28, 28)


def test_a_model_registered_without_the_declaration_is_refused() -> None:
    from cnnlab.models import MODELS

    entry = MODELS.entry("lenet5")
    layer = entry.tags.pop("cam_layer")
    try:
        with pytest.raises(ConfigError, match="does not declare its Grad-CAM layer"):
            cam_layer_of("lenet5")
    finally:
        entry.tags["cam_layer"] = layer
    assert cam_layer_of("lenet5") == "features" and cam_layer_of("resnet") == "stages"


def test_targets_out_of_range_are_refused(corner_model) -> None:  # type: ignore[no-untyped-def]
    explainer = Explainer(corner_model, cam_layer="stages")
    with pytest.raises(ConfigError, match=r"one class index in 0\.\.1 per image"):
        explainer.attribute(corner_images(2)[0], [0, 5], "saliency")
