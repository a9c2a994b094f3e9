"""The model's inner workings: first-layer filters, the feature maps of every stage for one
image, penultimate features (their 2-D t-SNE map, from scikit-learn) and the nearest training
images in feature space ("it looks like these")."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.explain.attributions import Explainer

__all__ = ["feature_maps", "first_layer_filters", "nearest", "penultimate_features",
           "stage_modules", "tsne_map"]

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def first_layer_filters(classifier: nn.Module) -> np.ndarray:
    """The weights ``(F, C, k, k)`` of the model's first convolution.

    Raises:
        ValueError: a model without a convolution.
    """
    for module in classifier.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().float().cpu().numpy()
    raise ValueError(f"{type(classifier).__name__} has no convolution")


def stage_modules(explainer: Explainer) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are the model's stages, in order: inside the declared
    Grad-CAM layer, each pooling layer and the last layer (``features`` of the plain
    families), or each child when it has no pooling layer (``stages`` of the residual family,
    after its ``stem``). Without a declared layer: every convolution."""
    model = explainer.classifier
    if explainer.cam_layer is None:
        return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    root = model.get_submodule(explainer.cam_layer)
    children = [(n, m) for n, m in root.named_children()  # an empty stage changes nothing
                if not (isinstance(m, nn.Sequential) and len(m) == 0)]
    if not children:
        return [(explainer.cam_layer, root)]
    pools = [(n, m) for i, (n, m) in enumerate(children)
             if isinstance(m, _POOLS) or i == len(children) - 1]
    chosen = pools if len(pools) > 1 else children
    out = [(f"{explainer.cam_layer}.{n}", m) for n, m in chosen]
    stem = getattr(model, "stem", None)
    if isinstance(stem, nn.Module) and chosen is children:
        out.insert(0, ("stem", stem))
    return out


@torch.no_grad()
def feature_maps(explainer: Explainer, image: torch.Tensor) -> list[tuple[str, np.ndarray]]:
    """Each stage's output ``(C_s, h, w)`` for one uint8 image ``(C, H, W)``."""
    seen: list[tuple[str, np.ndarray]] = []
    handles = [module.register_forward_hook(
        lambda _m, _i, out, name=name: seen.append((name, out[0].float().cpu().numpy())))
        for name, module in stage_modules(explainer)]
    try:
        explainer.classifier(explainer.normalise(image.unsqueeze(0)))
    finally:
        for h in handles:
            h.remove()
    return [(n, a) for n, a in seen if a.ndim == 3]


@torch.no_grad()
def penultimate_features(explainer: Explainer, images: torch.Tensor, batch_size: int = 500
                         ) -> np.ndarray:
    """The activations ``(N, D)`` the last layer reads (``forward_head(pre_logits=True)``)."""
    model = explainer.classifier
    out = [model.forward_head(model.forward_features(explainer.normalise(images[i:i + batch_size])),
                              pre_logits=True).float().cpu().numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def tsne_map(features: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE embedding ``(N, 2)`` of ``features`` (scikit-learn; PCA to 50 dimensions
    first, as its documentation advises for wide features)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32)
    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def nearest(query: np.ndarray, pool: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(Q, k)`` into ``pool`` of each query's nearest features by cosine distance,
    and the distances (scikit-learn's NearestNeighbors)."""
    from sklearn.neighbors import NearestNeighbors

    k = max(1, min(k, len(pool)))
    nn_index: Any = NearestNeighbors(n_neighbors=k, metric="cosine").fit(pool)
    dist, idx = nn_index.kneighbors(query)
    return idx, dist
