"""Traditional baselines: a handcrafted feature (:mod:`cnnlab.baselines.features`) followed by a
scikit-learn classifier, registered as ``<feature>-<classifier>``.

::

    >>> b = fit_baseline("hog-svm", train_ds, seed=0, max_train=10_000)
    >>> preds = b.predict(test_ds.images)           # int64 (N,)
    >>> b.fit_time_s, b.size_mb

These are the paper's "existing system": the numbers the CNNs are compared against.
"""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cnnlab.baselines.features import extract_features
from cnnlab.data import ImageDataset, stratified_split
from cnnlab.errors import ConfigError, DataError
from cnnlab.registry import Registry

__all__ = [
    "BASELINES",
    "CLASSIFIERS",
    "BaselineSpec",
    "FittedBaseline",
    "create_classifier",
    "fit_baseline",
]

EstimatorFactory = Callable[[int], Any]

CLASSIFIERS: Registry[EstimatorFactory] = Registry("classifier")


@CLASSIFIERS.register("svm", description="SVC, RBF kernel, C=10, gamma='scale'")
def _svm(seed: int) -> Any:
    from sklearn.svm import SVC

    # probability=True would run a 5-fold calibration on top: too slow for a baseline
    return SVC(kernel="rbf", C=10.0, gamma="scale", random_state=seed)


@CLASSIFIERS.register("knn", description="k-nearest neighbours, k=3, Euclidean (L2)")
def _knn(seed: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=3, metric="euclidean", algorithm="brute")


@CLASSIFIERS.register("tree", description="decision tree (Gini, grown fully)")
def _tree(seed: int) -> Any:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(random_state=seed)


@CLASSIFIERS.register("forest", description="random forest, 100 trees")
def _forest(seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=100, random_state=seed)


def create_classifier(name: str, seed: int = 0) -> Any:
    """A fresh, unfitted scikit-learn estimator for the classifier ``name``.

    Raises:
        RegistryError: unknown name, with a "did you mean".
    """
    return CLASSIFIERS.get(name)(seed)


@dataclass(frozen=True)
class BaselineSpec:
    """A registered baseline: which feature feeds which classifier."""

    feature: str
    classifier: str


BASELINES: Registry[BaselineSpec] = Registry("baseline")

for _feature, _classifier, _text in [
    ("hog", "svm", "HOG features, SVM with RBF kernel"),
    ("deskew-hog", "svm", "HOG of deskewed images, SVM with RBF kernel"),
    ("pixels", "svm", "raw pixels, SVM with RBF kernel (LeCun et al. 1998: 'SVM Gaussian')"),
    ("pixels", "knn", "raw pixels, 3-NN with Euclidean distance"),
    ("hog", "knn", "HOG features, 3-NN with Euclidean distance"),
    ("edges", "tree", "Sobel magnitude + Canny edge maps, decision tree"),
    ("hog", "forest", "HOG features, random forest of 100 trees"),
    ("pixels", "forest", "raw pixels, random forest of 100 trees"),
]:
    BASELINES.register(f"{_feature}-{_classifier}", description=_text)(
        BaselineSpec(_feature, _classifier))


def _stored_values(estimator: Any) -> int:
    """What a fitted estimator keeps to predict, counted like parameters: support vectors and
    dual coefficients (SVM), the training set (k-NN), tree nodes (tree, forest)."""
    if hasattr(estimator, "support_vectors_"):
        return int(estimator.support_vectors_.size + estimator.dual_coef_.size
                   + estimator.intercept_.size)
    if hasattr(estimator, "_fit_X"):
        return int(np.asarray(estimator._fit_X).size)
    if hasattr(estimator, "tree_"):
        return int(estimator.tree_.node_count)
    if hasattr(estimator, "estimators_"):
        return int(sum(t.tree_.node_count for t in estimator.estimators_))
    return 0


class FittedBaseline:
    """A fitted feature + classifier pipeline that predicts class indices from uint8 images."""

    def __init__(self, name: str, spec: BaselineSpec, estimator: Any, classes: list[str], *,
                 feature_time_s: float, estimator_fit_s: float, train_images: int,
                 feature_dim: int) -> None:
        self.name = name
        self.feature = spec.feature
        self.classifier = spec.classifier
        self.estimator = estimator
        self.classes = list(classes)
        self.feature_time_s = feature_time_s
        self.estimator_fit_s = estimator_fit_s
        self.train_images = train_images
        self.feature_dim = feature_dim

    def __repr__(self) -> str:
        return (f"FittedBaseline({self.name!r}, train_images={self.train_images}, "
                f"fit_time_s={self.fit_time_s:.2f})")

    @property
    def fit_time_s(self) -> float:
        """Feature extraction plus estimator fit on the training images, seconds."""
        return self.feature_time_s + self.estimator_fit_s

    @property
    def has_proba(self) -> bool:
        return hasattr(self.estimator, "predict_proba")

    @property
    def stored_values(self) -> int:
        return _stored_values(self.estimator)

    @property
    def size_mb(self) -> float:
        """Size of the pickled estimator in MB (10^6 bytes)."""
        return len(pickle.dumps(self.estimator, protocol=pickle.HIGHEST_PROTOCOL)) / 1e6

    def features(self, images: np.ndarray | torch.Tensor, progress: bool = False) -> np.ndarray:
        return extract_features(self.feature, images, progress=progress,
                                desc=f"{self.name}: {self.feature} features")

    def predict(self, images: np.ndarray | torch.Tensor, progress: bool = False) -> np.ndarray:
        """Class indices int64 (N,) for uint8 images (N, C, H, W)."""
        x = self.features(images, progress)
        if len(x) == 0:
            return np.empty(0, dtype=np.int64)
        return np.asarray(self.estimator.predict(x), dtype=np.int64)

    def predict_proba(self, images: np.ndarray | torch.Tensor,
                      progress: bool = False) -> np.ndarray:
        """Class probabilities (N, num_classes); classes absent from training get 0.

        Raises:
            ConfigError: the classifier gives no probabilities (the SVM).
        """
        if not self.has_proba:
            raise ConfigError(f"baseline {self.name!r} gives no probabilities; use predict()")
        x = self.features(images, progress)
        probs = np.zeros((len(x), len(self.classes)), dtype=np.float64)
        if len(x):
            probs[:, np.asarray(self.estimator.classes_, dtype=np.int64)] = \
                self.estimator.predict_proba(x)
        return probs


def _say(message: str, enabled: bool) -> None:
    # progress lines go to stderr, like Progress, so a --json stdout stays clean
    if enabled:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def fit_baseline(
    name: str,
    train_ds: ImageDataset,
    seed: int = 0,
    max_train: int | None = None,
    progress: bool = True,
) -> FittedBaseline:
    """Extract ``name``'s features from ``train_ds`` and fit its classifier.

    ``max_train`` fits on a stratified subset of that many images (kernel SVMs grow
    quadratically with the training set). Progress shows the feature extraction chunk by
    chunk and one line before and after the fit.

    Raises:
        RegistryError: unknown baseline name, with a "did you mean".
        ConfigError: ``max_train`` < 1.
        DataError: an empty training set, or one with a single class.
    """
    spec = BASELINES.get(name)
    if max_train is not None and (isinstance(max_train, bool) or not isinstance(max_train, int)
                                  or max_train < 1):
        raise ConfigError("The 'max_train' parameter of fit_baseline must be an int >= 1 or "
                          f"None. Got {max_train!r} instead.")
    ds = train_ds
    if max_train is not None and max_train < len(ds):
        keep, _ = stratified_split(ds.targets, 1 - max_train / len(ds), seed)
        ds = ds.subset(keep)
    targets = ds.targets.numpy()
    if len(np.unique(targets)) < 2:
        raise DataError(f"baseline {name!r} needs training images of at least 2 classes; got "
                        f"{len(targets)} image(s) of {len(np.unique(targets))} class(es)")
    t0 = time.perf_counter()
    x = extract_features(spec.feature, ds.images, progress=progress,
                         desc=f"{name}: {spec.feature} features")
    feature_time = time.perf_counter() - t0
    estimator = create_classifier(spec.classifier, seed)
    _say(f"{name}: fitting {type(estimator).__name__} on {x.shape[0]:,} x {x.shape[1]:,} "
         "features ...", progress)
    t0 = time.perf_counter()
    estimator.fit(x, targets)
    fit_time = time.perf_counter() - t0
    _say(f"{name}: fitted in {fit_time:.1f} s (features {feature_time:.1f} s)", progress)
    return FittedBaseline(name, spec, estimator, ds.classes, feature_time_s=feature_time,
                          estimator_fit_s=fit_time, train_images=len(ds), feature_dim=x.shape[1])
