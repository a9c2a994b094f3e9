"""Traditional baselines: handcrafted features (pixels, Sobel, Canny, HOG) with scikit-learn
classifiers (SVM, k-NN, decision tree, random forest). Needs the ``baselines`` extra
(scikit-image, scikit-learn)."""

from cnnlab.baselines.classifiers import (
    BASELINES,
    CLASSIFIERS,
    BaselineSpec,
    FittedBaseline,
    create_classifier,
    fit_baseline,
)
from cnnlab.baselines.features import FEATURES, create_feature, extract_features

__all__ = [
    "BASELINES",
    "CLASSIFIERS",
    "FEATURES",
    "BaselineSpec",
    "FittedBaseline",
    "create_classifier",
    "create_feature",
    "extract_features",
    "fit_baseline",
]
