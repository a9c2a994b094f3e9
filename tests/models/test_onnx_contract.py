"""ONNX parity, part of the model contract: every tiny or cheap registered model exports to
ONNX (opset 17, any batch size) and ONNX Runtime gives PyTorch's logits."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cnnlab.models import MODELS, create_model

TEST_MODELS: list[tuple[str, dict]] = [
    (e.name, {}) for e in MODELS if e.tags.get("tiny") or e.tags.get("cheap")]
# options that change a family's layers (the `vit` recipe's convolutional stem, the `fast`
# recipe's crop and pooling order)
TEST_MODELS.append(("vit-tiny", {"stem": "conv", "patch_size": 4}))
TEST_MODELS.append(("convnet", {"crop": 24, "pool_first": True}))


@pytest.mark.parametrize(("name", "kwargs"), TEST_MODELS,
                         ids=[n + "".join(f"-{k}={v}" for k, v in kw.items())
                              for n, kw in TEST_MODELS])
def test_onnx_runtime_matches_pytorch(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), buf, dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 28, 28)  # another batch size than the export's
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == (5, 10)
    assert np.abs(got - expected).max() <= 1e-4
