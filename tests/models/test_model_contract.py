"""The model contract, checked on every tiny or cheap registered model at its native input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import ShapeError
from cnnlab.models import MODELS, Classifier, create_model, list_models
from cnnlab.models.summary import summarize

TEST_MODELS = [e.name for e in MODELS if e.tags.get("tiny") or e.tags.get("cheap")]


def test_every_family_has_a_test_model() -> None:
    assert {
        "paper-cnn", "paper-cnn-tiny", "lenet5", "alexnet-tiny", "resnet-tiny", "vgg-tiny",
        "vit-tiny", "inception-tiny", "densenet-tiny", "mobilenet-tiny", "efficientnet-tiny",
    } <= set(TEST_MODELS)
    assert not {"alexnet", "resnet", "vgg11", "vgg16"} & set(TEST_MODELS)


def _batch(model: Classifier, n: int = 4) -> torch.Tensor:
    return torch.randn(n, *model.input_spec.shape)


@pytest.fixture(params=TEST_MODELS)
def model(request: pytest.FixtureRequest) -> Classifier:
    torch.manual_seed(0)
    return create_model(request.param)


def test_logits_shape_at_native_input(model: Classifier) -> None:
    assert model.input_spec.shape == (1, 28, 28)
    logits = model(_batch(model, 3))
    assert logits.shape == (3, 10)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_features_then_head_equal_forward(model: Classifier) -> None:
    model.eval()
    x = _batch(model)
    features = model.forward_features(x)
    assert features.shape == (4, model.num_features)
    torch.testing.assert_close(model.forward_head(features), model(x))
    assert model.forward_head(features, pre_logits=True).shape[0] == 4


def test_gradients_reach_every_parameter(model: Classifier) -> None:
    model.train()
    loss = F.cross_entropy(model(_batch(model)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_wrong_channels_raise_shape_error(model: Classifier) -> None:
    name = type(model).__name__
    with pytest.raises(ShapeError, match=rf"{name} expects 1 input channel.*got 3"):
        model(torch.randn(2, 3, 28, 28))


def test_missing_batch_dimension_raises_shape_error(model: Classifier) -> None:
    with pytest.raises(ShapeError, match=r"expects a batch of shape \(N, 1, 28, 28\).*unsqueeze"):
        model(torch.randn(1, 28, 28))


def test_wrong_size_raises_or_is_accepted(model: Classifier) -> None:
    if model.fixed_size:
        with pytest.raises(ShapeError, match=r"built for 28x28 inputs.*got 32x32.*input_size"):
            model(torch.randn(2, 1, 32, 32))
    else:
        assert model(torch.randn(2, 1, 20, 24)).shape == (2, 10)
        if model.min_size > 1:
            too_small = model.min_size - 1
            with pytest.raises(ShapeError, match=rf"at least {model.min_size}x{model.min_size}"):
                model(torch.randn(2, 1, too_small, too_small))


def test_reset_classifier_changes_output_width(model: Classifier) -> None:
    model.eval()
    x = _batch(model)
    embedding = model.forward_head(model.forward_features(x), pre_logits=True)
    model.reset_classifier(3)
    assert model.num_classes == 3
    assert model(x).shape == (4, 3)
    torch.testing.assert_close(
        model.forward_head(model.forward_features(x), pre_logits=True), embedding
    )


def test_reset_classifier_follows_dtype(model: Classifier) -> None:
    model = model.to(torch.float64).eval()
    model.reset_classifier(4)
    assert model(_batch(model).double()).dtype == torch.float64


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_summarizes(name: str) -> None:
    model = create_model(name)
    summary = summarize(model)
    assert summary.output_shape == (10,)
    assert summary.total_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", TEST_MODELS)
def test_overfits_one_batch(name: str) -> None:
    """32 random images with random labels reach 100 % train accuracy (eval mode) quickly.

    Every family takes ``dropout``; it is off so that memorising is quick. Measured: 20 steps
    (paper-cnn, lenet5), 30-40 (alexnet-tiny), 55-65 (resnet-tiny).
    """
    torch.manual_seed(0)
    model = create_model(name, dropout=0.0)
    torch.manual_seed(1)
    images, targets = _batch(model, 32), torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    accuracy = 0.0
    for step in range(200):
        model.train()
        loss = F.cross_entropy(model(images), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                accuracy = (model(images).argmax(1) == targets).float().mean().item()
            if accuracy == 1.0:
                break
    assert accuracy == 1.0, f"train accuracy {accuracy:.2f} after {step + 1} steps"


def test_bfloat16_autocast_forward(model: Classifier) -> None:
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(_batch(model))
    assert logits.shape == (4, 10)
    assert torch.isfinite(logits.float()).all()


def test_channels_last_forward_matches(model: Classifier) -> None:
    model.eval()
    x = _batch(model)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    got = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_summary_totals_match_parameters(model: Classifier) -> None:
    summary = summarize(model)
    assert summary.total_params == sum(p.numel() for p in model.parameters())
    assert sum(layer.params for layer in summary.layers) == summary.total_params
    assert summary.output_shape == (10,)
    assert summary.total_macs > 0


def test_weights_are_initialised(model: Classifier) -> None:
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight)), name
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), name
        if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), name
