"""Explaining images: overlays as PNG with the predicted, true and explained class, per-pixel
arrays as ``.npy`` files, the first-layer filters, one image's feature maps and the nearest
training images; and the test images the report lists as worst (its most confident mistakes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import ConfigError
from cnnlab.explain.attributions import Explainer, heatmap

__all__ = ["Explained", "explain_images", "parse_target", "worst_test_images"]

WORST = 16  # how many mistakes the report's "Most confident mistakes" figure shows


@dataclass
class Explained:
    """One explained image and the files written for it."""

    name: str
    predicted: str
    probability: float
    target: str
    method: str
    true: str | None = None
    overlay: str = ""
    attribution: str = ""
    neighbours: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.name, "predicted": self.predicted,
                "probability": round(self.probability, 6), "true": self.true,
                "explained": self.target, "method": self.method, "overlay": self.overlay,
                "attribution": self.attribution, "neighbours": self.neighbours}


def parse_target(target: str | None, classes: list[str]) -> int | None:
    """A ``--target`` value (a class name, or an index when no class has that name) as a class
    index; ``None`` stays ``None`` (the predicted class).

    Raises:
        ConfigError: neither a class name nor an index in range (with "did you mean").
    """
    if target is None:
        return None
    if target in classes:
        return classes.index(target)
    if re.fullmatch(r"\d+", target) and int(target) < len(classes):
        return int(target)
    from cnnlab.errors import unknown_name

    raise ConfigError(unknown_name("class", target, classes)
                      + f"; or give a class index 0..{len(classes) - 1}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "image"


def worst_test_images(model: Any, *, n: int = WORST, dataset: str | None = None,
                      split: str = "test", progress: bool = False
                      ) -> tuple[torch.Tensor, np.ndarray, list[str], str]:
    """The ``n`` most confident mistakes on a split, chosen as the report chooses them (wrong,
    by the predicted class's probability, highest first; ties in data order).

    Returns:
        The uint8 images, their true class indices, names (``test[1234]``) and the split's
        description.

    Raises:
        DataError, DatasetNotFoundError: the split cannot be loaded.
    """
    from cnnlab.training.data import load_split

    ds, src = load_split(model, split, dataset=dataset, progress=progress)
    probs = torch.softmax(model.logits(ds.images), 1).numpy()
    preds, targets = probs.argmax(1), ds.targets.numpy()
    conf = probs.max(1)
    wrong = np.flatnonzero(preds != targets)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:n]
    return ds.images[wrong], targets[wrong], [f"{src.split}[{i}]" for i in wrong], src.detail


def explain_images(model: Any, images: torch.Tensor, names: list[str], out_dir: str | Path, *,
                   method: str = "gradcam", target: int | None = None,
                   true: list[int | None] | None = None, neighbours: int = 5,
                   neighbour_pool: int = 10_000, inner: bool = True,
                   progress: bool = False) -> dict[str, Any]:
    """Explain uint8 ``images`` (N, C, H, W) in the model's input form and write into
    ``out_dir``: ``<name>.<method>.png`` (the input, the overlay and the nearest training
    images), ``<name>.<method>.npy`` (the (C, H, W) float32 attribution), and with ``inner``
    ``filters.png`` and ``feature_maps.png`` (of the first image).

    Args:
        model: a loaded :class:`cnnlab.inference.Model`.
        target: the class to explain (default: each image's predicted class).
        true: each image's true class index, or None where unknown.
        neighbours: nearest training images to show (0: none), searched among the first
            ``neighbour_pool`` training images.

    Returns:
        ``images`` (one :meth:`Explained.to_dict` each) and ``files`` (the other figures).

    Raises:
        ConfigError: an unknown method, or one the model cannot run.
    """
    from cnnlab.explain import figures
    from cnnlab.explain import inner as inner_mod

    explainer = Explainer.for_model(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = list(model.classes)
    probs = explainer.predict(images)
    preds = probs.argmax(1)
    targets = preds if target is None else np.full(len(images), target)
    attributions = explainer.attribute(images, targets, method)
    heats = heatmap(attributions)
    pool_images: torch.Tensor | None = None
    near_idx = np.zeros((len(images), 0), dtype=np.int64)
    pool_targets = np.zeros(0, dtype=np.int64)
    if neighbours > 0:
        from cnnlab.errors import DataError
        from cnnlab.training.data import load_split

        try:
            train, _ = load_split(model, "train", progress=progress)
            pool_images, pool_targets = (train.images[:neighbour_pool],
                                         train.targets[:neighbour_pool].numpy())
            feats = inner_mod.penultimate_features(explainer, pool_images)
            near_idx, _ = inner_mod.nearest(inner_mod.penultimate_features(explainer, images),
                                            feats, neighbours)
        except DataError as e:  # the training data is not here: say so, explain the rest
            import logging

            logging.getLogger("cnnlab").warning("explain: no nearest training images (%s)", e)
            pool_images = None
    results = []
    used: set[str] = set()
    for i, name in enumerate(names):
        stem = _slug(Path(name).stem if "/" in name or "." in name else name)
        while stem in used:
            stem += "_"
        used.add(stem)
        t_true = None if true is None else true[i]
        item = Explained(name=name, predicted=classes[int(preds[i])],
                         probability=float(probs[i, preds[i]]), target=classes[int(targets[i])],
                         method=method, true=None if t_true is None else classes[t_true])
        npy = out / f"{stem}.{method}.npy"
        np.save(npy, attributions[i])
        item.attribution = str(npy)
        title = (f"{name}: predicted {item.predicted} ({item.probability:.1%})"
                 + (f", true {item.true}" if item.true is not None else "")
                 + f"; {method} explains {item.target}")
        shown = None
        shown_titles: list[str] = []
        if pool_images is not None:
            shown = pool_images[near_idx[i]].numpy()
            shown_titles = [f"train[{j}] {classes[pool_targets[j]]}" for j in near_idx[i]]
            item.neighbours = [{"train_index": int(j), "label": classes[pool_targets[j]]}
                               for j in near_idx[i]]
        png = figures.plot_explanation(images[i].numpy(), heats[i], title,
                                       out / f"{stem}.{method}.png", neighbours=shown,
                                       neighbour_titles=shown_titles)
        item.overlay = str(png)
        results.append(item.to_dict())
    files: dict[str, str] = {}
    if inner and len(images):
        files["filters"] = str(figures.plot_filters(
            inner_mod.first_layer_filters(explainer.classifier), out / "filters.png"))
        files["feature_maps"] = str(figures.plot_feature_maps(
            inner_mod.feature_maps(explainer, images[0]), images[0].numpy(),
            out / "feature_maps.png"))
    return {"method": method, "images": results, "files": files}
