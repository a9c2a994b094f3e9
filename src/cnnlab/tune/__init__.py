"""Model selection on top of the training loop: k-fold cross-validation and search."""

from cnnlab.tune.cv import cross_validate

__all__ = ["cross_validate"]
