"""ONNX Runtime sessions for cnnlab's ONNX files (``cnnlab export``, ``cnnlab quantize``):
the file's metadata (classes, input spec, preprocessing) and batched logits from uint8 images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CheckpointError

__all__ = ["OnnxModel", "load_onnx"]


class OnnxModel:
    """An ONNX file run by ONNX Runtime, with the cnnlab metadata it was exported with."""

    def __init__(self, path: str | Path, *, threads: int = 0, spinning: bool = True) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX file {self.path} does not exist")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if not spinning:  # idle worker threads sleep instead of busy-waiting for the next run
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"{self.path} is not a loadable ONNX model ({first}); export it again with "
                "`cnnlab export`") from e
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.metadata: dict[str, Any] = json.loads(props["cnnlab"])
        except (KeyError, ValueError) as e:
            raise CheckpointError(
                f"{self.path} has no cnnlab metadata; it was not written by `cnnlab export`"
            ) from e
        self.input_name = self.session.get_inputs()[0].name
        spec = self.metadata["input_spec"]
        self.mean = np.asarray(spec["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(spec["std"], dtype=np.float32).reshape(1, -1, 1, 1)
        self.classes: list[str] = self.metadata["classes"]
        # uint8 -> (x / 255 - mean) / std as one multiply-add
        self._scale = (1.0 / (255.0 * self.std)).astype(np.float32)
        self._shift = (-self.mean / self.std).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits for normalised float32 input ``(N, C, H, W)``."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    def predict_logits(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Logits (float32 tensor) for uint8 ``images`` (N, C, H, W), normalised as trained."""
        return torch.from_numpy(self.logits_uint8(images.numpy(), batch_size))

    def logits_uint8(self, pixels: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Logits (float32 array) for uint8 ``pixels`` (N, C, H, W), normalised as trained;
        numpy only (no PyTorch operator, whose thread pool would wake up for the tiny
        tensors of a service's batches)."""
        out = []
        for i in range(0, len(pixels), batch_size):
            x = pixels[i:i + batch_size].astype(np.float32)
            x *= self._scale
            x += self._shift
            out.append(self(x))
        if not out:
            return np.empty((0, len(self.classes)), np.float32)
        return out[0] if len(out) == 1 else np.concatenate(out)


def load_onnx(path: str | Path, *, threads: int = 0, spinning: bool = True) -> OnnxModel:
    """Load an ONNX file written by :func:`export_onnx` (or ``cnnlab quantize``).

    ``spinning=False`` lets ONNX Runtime's idle worker threads sleep: slower back-to-back runs,
    but the cores stay free for other work between them (a service's request handling).

    Raises:
        CheckpointError: missing, corrupt, or not a cnnlab export.
    """
    return OnnxModel(path, threads=threads, spinning=spinning)
