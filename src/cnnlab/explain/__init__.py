"""Explanations and the model's inner workings, on Captum.

- :mod:`~cnnlab.explain.attributions`: :class:`Explainer` (Grad-CAM on the layer each model
  family declares in the registry, integrated gradients, saliency, occlusion, guided Grad-CAM);
- :mod:`~cnnlab.explain.faithfulness`: deletion / insertion curves against a random ordering,
  and the model-randomisation sanity check (Adebayo et al. 2018);
- :mod:`~cnnlab.explain.inner`: first-layer filters, feature maps, t-SNE of penultimate
  features, nearest training images;
- :mod:`~cnnlab.explain.images`: explaining image files or the report's worst test images;
- :mod:`~cnnlab.explain.scorecard`: the score card and the report's "Explanations" section.
"""

from cnnlab.explain.attributions import (
    CAM_METHODS,
    METHODS,
    Explainer,
    cam_layer_of,
    check_method,
    heatmap,
)
from cnnlab.explain.faithfulness import deletion_insertion, randomisation_check
from cnnlab.explain.images import explain_images, worst_test_images
from cnnlab.explain.scorecard import score_card, write_section

__all__ = ["CAM_METHODS", "METHODS", "Explainer", "cam_layer_of", "check_method",
           "deletion_insertion", "explain_images", "heatmap", "randomisation_check",
           "score_card", "worst_test_images", "write_section"]
