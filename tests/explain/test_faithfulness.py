"""Faithfulness: deletion / insertion against a random ordering, and the model-randomisation
check separating a trained tiny model from a randomised one."""

from __future__ import annotations

import numpy as np
import torch
from corner_synth import corner_images

from cnnlab.explain import Explainer, deletion_insertion, heatmap, randomisation_check
from cnnlab.explain.faithfulness import auc, random_heatmaps, randomised_copy, similarity


def test_auc_of_hand_computed_curves() -> None:
    assert auc(np.array([1.0, 1.0, 1.0])) == 1.0
    assert auc(np.array([1.0, 0.0, 0.0])) == 0.25  # (1 + 0) / 2 * 0.5
    np.testing.assert_allclose(auc(np.array([[0.0, 0.5, 1.0], [1.0, 0.5, 0.0]])), [0.5, 0.5])


def test_curves_start_at_the_image_and_end_at_the_black_image(corner_model) -> None:  # type: ignore[no-untyped-def]
    explainer = Explainer(corner_model, cam_layer="stages")
    images, _ = corner_images(8, seed=4)
    targets = explainer.predict(images).argmax(1)
    out = deletion_insertion(explainer, images, targets, random_heatmaps((8, 28, 28)), steps=4)
    probs = explainer.predict(images)[np.arange(8), targets]
    black = explainer.predict(torch.zeros_like(images))[np.arange(8), targets]
    np.testing.assert_allclose(out["deletion"][:, 0], probs, atol=1e-5)
    np.testing.assert_allclose(out["deletion"][:, -1], black, atol=1e-5)
    np.testing.assert_allclose(out["insertion"][:, 0], black, atol=1e-5)
    np.testing.assert_allclose(out["insertion"][:, -1], probs, atol=1e-5)
    assert out["deletion"].shape == (8, 5) and out["deletion_auc"].shape == (8,)


def test_gradcam_deletes_the_evidence_faster_than_a_random_ordering(corner_model) -> None:  # type: ignore[no-untyped-def]
    explainer = Explainer(corner_model, cam_layer="stages")
    images, targets = corner_images(32, seed=5)
    marked = images[targets == 1]
    t = np.ones(len(marked), dtype=np.int64)
    cam = deletion_insertion(explainer, marked, t,
                             heatmap(explainer.attribute(marked, t, "gradcam")))
    rnd = deletion_insertion(explainer, marked, t, random_heatmaps((len(marked), 28, 28)))
    assert cam["deletion_auc"].mean() < 0.5 * rnd["deletion_auc"].mean()
    assert cam["insertion_auc"].mean() > rnd["insertion_auc"].mean()


def test_randomised_copy_changes_every_weight_and_leaves_the_model(corner_model) -> None:  # type: ignore[no-untyped-def]
    before = {k: v.clone() for k, v in corner_model.state_dict().items()}
    fresh = randomised_copy(corner_model, seed=1)
    for key, value in corner_model.state_dict().items():
        assert torch.equal(value, before[key]), key  # the trained model is untouched
    weights = [k for k in before if k.endswith("weight") and before[k].dim() > 1]
    assert weights and all(not torch.equal(fresh.state_dict()[k], before[k]) for k in weights)


def test_the_randomisation_check_separates_trained_from_randomised(corner_model) -> None:  # type: ignore[no-untyped-def]
    explainer = Explainer(corner_model, cam_layer="stages")
    images, _ = corner_images(24, seed=6)
    t = explainer.predict(images).argmax(1)
    maps = heatmap(explainer.attribute(images, t, "gradcam"))
    # the same trained model twice: identical; the randomised network: unlike
    same = similarity(maps, maps)
    np.testing.assert_allclose(same["ssim"], 1.0, atol=1e-6)
    np.testing.assert_allclose(same["spearman"], 1.0, atol=1e-6)
    check = randomisation_check(explainer, images, t, "gradcam", trained_maps=maps)
    assert check["passes"] and check["ssim"] < 0.3, check
    assert check["spearman"] < 0.5
    # an "explanation" that is the image itself (its edges) does not change with the weights:
    # the check fails it
    edges = images[:, 0].numpy().astype(np.float32)
    assert similarity(edges, edges)["ssim"].mean() > 0.99
