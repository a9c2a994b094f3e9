"""Model families, all registered in :data:`MODELS` and built with :func:`create_model`."""

from cnnlab.models import (  # noqa: F401  (registers them)
    alexnet,
    convnet,
    densenet,
    inception,
    lenet,
    mobilenet,
    paper_cnn,
    resnet,
    vgg,
    vit,
)
from cnnlab.models.base import (
    MODELS,
    Classifier,
    InputSpec,
    create_model,
    list_models,
    register_model,
)

__all__ = ["MODELS", "Classifier", "InputSpec", "create_model", "list_models", "register_model"]
