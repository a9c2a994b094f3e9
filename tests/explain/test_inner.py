"""The model's inner workings: filters, feature maps of every stage, t-SNE, nearest images."""

from __future__ import annotations

import numpy as np
import torch
from corner_synth import corner_images

from cnnlab.explain import Explainer, cam_layer_of
from cnnlab.explain.inner import (
    feature_maps,
    first_layer_filters,
    nearest,
    penultimate_features,
    stage_modules,
    tsne_map,
)
from cnnlab.models import create_model


def test_first_layer_filters_are_the_first_convolution(corner_model) -> None:  # type: ignore[no-untyped-def]
    filters = first_layer_filters(corner_model)
    assert filters.shape == tuple(corner_model.stem.conv.weight.shape)
    np.testing.assert_array_equal(filters, corner_model.stem.conv.weight.detach().numpy())


def test_feature_maps_of_every_stage() -> None:
    torch.manual_seed(0)
    model = create_model("paper-cnn-tiny").eval()
    explainer = Explainer(model, cam_layer=cam_layer_of("paper-cnn-tiny"))
    names = [n for n, _ in stage_modules(explainer)]
    assert names == ["features.pool1", "features.pool2"]  # one per conv stage
    maps = feature_maps(explainer, corner_images(1)[0][0])
    assert [(n, a.shape) for n, a in maps] == [("features.pool1", (8, 14, 14)),
                                              ("features.pool2", (16, 7, 7))]


def test_residual_stages_and_an_empty_stage(corner_model) -> None:  # type: ignore[no-untyped-def]
    explainer = Explainer(corner_model, cam_layer="stages")
    maps = feature_maps(explainer, corner_images(1)[0][0])
    assert [n for n, _ in maps] == ["stem", "stages.0", "stages.1"]
    default = create_model("resnet", widths=[8, 16, 32], blocks=[0, 1, 1],
                           downsample="maxpool").eval()
    names = [n for n, _ in stage_modules(Explainer(default, cam_layer="stages"))]
    assert names == ["stem", "stages.1", "stages.2"]  # stages.0 has no block


def test_tsne_and_nearest_training_images(corner_model) -> None:  # type: ignore[no-untyped-def]
    explainer = Explainer(corner_model, cam_layer="stages")
    images, targets = corner_images(40, seed=7)
    feats = penultimate_features(explainer, images)
    assert feats.shape == (40, corner_model.num_features)
    coords = tsne_map(feats)
    assert coords.shape == (40, 2) and np.isfinite(coords).all()
    idx, _ = nearest(feats[:5], feats, k=3)
    assert idx.shape == (5, 3)
    np.testing.assert_array_equal(idx[:, 0], np.arange(5))  # each is its own nearest
    # the nearest others mostly share the class (the model separates them)
    same = (targets.numpy()[idx[:, 1:]] == targets.numpy()[:5, None]).mean()
    assert same >= 0.8
