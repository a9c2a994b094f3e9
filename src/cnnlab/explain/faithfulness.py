"""Whether explanations are faithful to the model, measured.

- :func:`deletion_insertion`: remove (deletion) or add back (insertion) pixels in the order an
  attribution ranks them, most important first, and follow the target class's probability;
  the area under each curve (fraction of pixels on the x axis) is compared with a random
  ordering (:func:`random_heatmaps`). A faithful map makes the probability fall fast when its
  pixels go (low deletion AUC) and rise fast when they come (high insertion AUC). Removed
  pixels become black (pixel 0), the background of the MNIST form.
- :func:`randomisation_check`: the model-parameter randomisation test of Adebayo et al. 2018
  ("Sanity checks for saliency maps"): the explanation of the trained model against that of
  the same network with re-initialised weights, by SSIM (scikit-image) and Spearman rank
  correlation (SciPy) of the absolute maps. A method whose maps stay alike explains the image
  (its edges), not what the model learnt; it passes when SSIM < :data:`SSIM_PASS`.

The curves are batched on our side (all steps of a chunk of images in one forward pass):
quantus' PixelFlipping / RegionPerturbation run one image per call, and the score card's
budget (1,000 images in 5 minutes, benchmarks/bench_explain.py) leaves no room for that.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.explain.attributions import Explainer, heatmap

__all__ = ["SSIM_PASS", "auc", "deletion_insertion", "random_heatmaps", "randomisation_check",
           "randomised_copy", "similarity"]

SSIM_PASS = 0.3  # the bar: trained and randomised explanations this alike or less


def auc(curve: np.ndarray) -> np.ndarray:
    """Area under curves sampled at evenly spaced fractions 0..1 (last axis), trapezoidal."""
    curve = np.asarray(curve, dtype=np.float64)
    steps = curve.shape[-1] - 1
    return (curve[..., 1:] + curve[..., :-1]).sum(axis=-1) / (2 * steps)


def random_heatmaps(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A random ordering of the pixels, as heatmaps of ``shape`` (N, H, W)."""
    return np.random.default_rng(seed).random(shape).astype(np.float32)


@torch.no_grad()
def deletion_insertion(explainer: Explainer, images: torch.Tensor, targets: Any,
                       heatmaps: np.ndarray, *, steps: int = 16, batch_size: int = 64
                       ) -> dict[str, np.ndarray]:
    """Deletion and insertion curves of uint8 ``images`` (N, C, H, W) for ``targets`` (N,),
    ranking pixels by ``heatmaps`` (N, H, W), highest first.

    Returns:
        ``deletion`` and ``insertion``: the target's probability (N, steps + 1) after
        0, 1/steps, ..., all of the pixels were removed or inserted; ``deletion_auc`` and
        ``insertion_auc`` (N,).
    """
    n, c, h, w = images.shape
    hw = h * w
    t_all = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    counts = torch.round(torch.linspace(0, hw, steps + 1)).long()  # pixels changed per step
    scores = torch.as_tensor(np.asarray(heatmaps, dtype=np.float32).reshape(n, hw))
    deletion = np.zeros((n, steps + 1))
    insertion = np.zeros((n, steps + 1))
    model = explainer.classifier.eval()
    batch_size = max(1, min(batch_size, 20_000_000 // ((steps + 1) * c * hw)))  # ~80 MB a pass
    for i in range(0, n, batch_size):
        x = explainer.normalise(images[i:i + batch_size])  # (B, C, H, W)
        b = len(x)
        base = explainer.black(x)
        order = torch.argsort(-scores[i:i + b], dim=1, stable=True)  # (B, HW)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(hw).expand(b, hw))
        changed = (ranks[None] < counts[:, None, None]).view(steps + 1, b, 1, h, w)  # (S,B,1,H,W)
        deleted = torch.where(changed, base[None], x[None])  # (S, B, C, H, W)
        inserted = torch.where(changed, x[None], base[None])
        t = t_all[i:i + b]
        for curves, batch in ((deletion, deleted), (insertion, inserted)):
            probs = torch.softmax(model(batch.reshape(-1, c, h, w)), 1).view(steps + 1, b, -1)
            curves[i:i + b] = probs.gather(2, t.view(1, b, 1).expand(steps + 1, b, 1))[..., 0].T
    return {"deletion": deletion, "insertion": insertion,
            "deletion_auc": auc(deletion), "insertion_auc": auc(insertion)}


def randomised_copy(classifier: nn.Module, seed: int = 0) -> Any:
    """The same network with every layer's weights re-initialised (batch-norm statistics reset
    too): the model of the randomisation check."""
    fresh = copy.deepcopy(classifier)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return fresh.eval()


def _unit(maps: np.ndarray) -> np.ndarray:
    """Absolute maps scaled to [0, 1] per image (an all-zero map stays zero)."""
    a = np.abs(np.asarray(maps, dtype=np.float64))
    peak = a.reshape(len(a), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(a, peak, out=np.zeros_like(a), where=peak > 0)


def similarity(trained: np.ndarray, randomised: np.ndarray) -> dict[str, np.ndarray]:
    """Per image SSIM and Spearman rank correlation of two sets of heatmaps (N, H, W), on
    their absolute values scaled to [0, 1]. A constant map has no ranking: its rank
    correlation counts as 0."""
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    a, b = _unit(trained), _unit(randomised)
    side = min(a.shape[1:])
    win = min(7, side if side % 2 else side - 1)
    ssim = np.array([structural_similarity(x, y, data_range=1.0, win_size=win)
                     for x, y in zip(a, b, strict=True)])
    rank = np.array([0.0 if np.ptp(x) == 0 or np.ptp(y) == 0
                     else float(spearmanr(x.ravel(), y.ravel()).statistic)
                     for x, y in zip(a, b, strict=True)])
    return {"ssim": ssim, "spearman": rank}


def randomisation_check(explainer: Explainer, images: torch.Tensor, targets: Any, method: str,
                        *, seed: int = 0, trained_maps: np.ndarray | None = None
                        ) -> dict[str, Any]:
    """Adebayo et al.'s model-randomisation check of ``method`` on ``images`` for ``targets``.

    Returns:
        ``ssim`` and ``spearman``: the mean similarity of the trained model's maps to the
        randomised model's; ``passes``: ``ssim < SSIM_PASS``.
    """
    rand = Explainer(randomised_copy(explainer.classifier, seed), cam_layer=explainer.cam_layer,
                     model_name=explainer.model_name)
    if trained_maps is None:
        trained_maps = heatmap(explainer.attribute(images, targets, method))
    random_maps = heatmap(rand.attribute(images, targets, method))
    sim = similarity(trained_maps, random_maps)
    ssim, rank = float(sim["ssim"].mean()), float(sim["spearman"].mean())
    return {"ssim": ssim, "spearman": rank, "passes": bool(ssim < SSIM_PASS)}
