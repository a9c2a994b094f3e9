"""What a federated client computes: local training (FedAvg's SGD epochs, FedProx's proximal
term) and evaluation on its own data; and the client data file every client reads its part of.

A client's data file holds the training images (uint8), their labels, the normalisation and
one index array per client; a client takes ``parts[partition-id]``. The simulation writes one
file for all clients; ``cnnlab federated client`` writes its own (the same split: the
partition is seeded).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab._io import atomic_write_bytes
from cnnlab.data.transforms import normalize
from cnnlab.errors import DataError
from cnnlab.inference.batched import evaluate_loss_accuracy, predict_logits
from cnnlab.models import Classifier, create_model

__all__ = ["ClientData", "build_model", "evaluate", "load_client_data", "local_train",
           "save_client_data"]


@dataclass
class ClientData:
    """One client's images (uint8, N x C x H x W) and labels, with the normalisation."""

    images: torch.Tensor
    targets: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.targets)


def save_client_data(path: Path, images: torch.Tensor, targets: torch.Tensor,
                     parts: list[Any], mean: tuple[float, ...], std: tuple[float, ...]) -> Path:
    """Write the client data file (atomically)."""
    payload = {"images": images.contiguous(), "targets": targets.contiguous(),
               "parts": [torch.as_tensor(p, dtype=torch.long) for p in parts],
               "mean": list(mean), "std": list(std)}
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, lambda f: torch.save(payload, f)) or path


@functools.lru_cache(maxsize=2)
def _read(path: str) -> dict[str, Any]:
    data: dict[str, Any] = torch.load(path, weights_only=True)
    return data


def load_client_data(path: str | Path, partition_id: int) -> ClientData:
    """Client ``partition_id``'s part of the data file at ``path`` (read once per process).

    Raises:
        DataError: no such file, or no such client in it.
    """
    if not Path(path).is_file():
        raise DataError(f"client data file {path} not found; start the client with "
                        "`cnnlab federated client`, which writes it")
    data = _read(str(path))
    parts = data["parts"]
    if not 0 <= partition_id < len(parts):
        raise DataError(f"partition-id {partition_id} is not in {path}, which holds "
                        f"{len(parts)} clients (0 to {len(parts) - 1})")
    idx = parts[partition_id]
    return ClientData(data["images"][idx], data["targets"][idx], tuple(data["mean"]),
                      tuple(data["std"]))


def build_model(record: dict[str, Any]) -> Classifier:
    """The model of a checkpoint's ``model`` record (name and kwargs)."""
    return create_model(record["name"], **record["kwargs"])


def local_train(model: nn.Module, data: ClientData, *, epochs: int, batch_size: int, lr: float,
                momentum: float, proximal_mu: float, seed: int) -> dict[str, float]:
    """``epochs`` passes of minibatch SGD over the client's data, from the global weights the
    model holds; with ``proximal_mu`` > 0 FedProx's term ``mu/2 * ||w - w_global||^2`` joins
    the loss (Li et al. 2020). Returns the mean training loss and accuracy of the passes."""
    global_params = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    criterion = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    model.train()
    n = len(data)
    loss_sum, correct, seen = 0.0, 0, 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            x = normalize(data.images[idx], data.mean, data.std)  # (B, C, H, W)
            y = data.targets[idx]
            logits = model(x)
            loss = criterion(logits, y)
            if proximal_mu > 0:
                prox = sum(((p - g) ** 2).sum() for p, g in zip(model.parameters(),
                                                                global_params, strict=True))
                loss = loss + proximal_mu / 2 * prox
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += len(y)
    if not math.isfinite(loss_sum):
        raise DataError(f"local training diverged (loss {loss_sum}); lower --lr")
    return {"train_loss": loss_sum / max(1, seen), "train_accuracy": correct / max(1, seen)}


def evaluate(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
             mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[float, float]:
    """Loss and accuracy of ``model`` on uint8 ``images`` (in eval mode, fp32)."""
    logits = predict_logits(model, images, mean, std, batch_size=1000,
                            device=torch.device("cpu"), amp=False, channels_last=False)
    return evaluate_loss_accuracy(logits, targets)
