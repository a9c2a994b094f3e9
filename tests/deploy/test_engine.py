"""Prediction engines: PyTorch, ONNX Runtime from the cache, and the measured auto choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.deploy.engine import cache_dir, pick_engine
from cnnlab.errors import ConfigError


def test_engines_predict_the_same(run_dir: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_ENGINE_CACHE", str(tmp_path / "engines"))
    images = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)
    torch_model = cnnlab.load(run_dir)
    onnx_model = cnnlab.load(run_dir, engine="onnx")
    assert torch_model.engine == "torch" and onnx_model.engine == "onnx"
    a, b = torch_model.predict_proba(images), onnx_model.predict_proba(images)
    assert torch.allclose(a, b, atol=1e-5)
    assert list(cache_dir().glob("*.onnx"))  # exported once, into the cache
    auto = cnnlab.load(run_dir, engine="auto")
    records = list(cache_dir().glob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert auto.engine == record["engine"] and set(record["batch1_ms"]) == {"torch", "onnx"}
    assert pick_engine(auto, "auto") == record["engine"]  # remembered, not measured again
    with pytest.raises(ConfigError, match="engine must be one of"):
        cnnlab.load(run_dir, engine="tensorrt")
