"""Device selection: ``auto`` picks CUDA when present and says so; asking for an absent CUDA
is an error."""

from __future__ import annotations

import logging

import torch

from cnnlab.errors import ConfigError, DeviceError

__all__ = ["resolve_device"]

log = logging.getLogger("cnnlab")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a ``torch.device``.

    Raises:
        DeviceError: CUDA was asked for and is not available.
        ConfigError: the name is not a device cnnlab supports.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = name.strip().lower()
    if name == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        log.info("device auto: using %s", _describe(dev))
        return dev
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}, built with CUDA: {torch.version.cuda or 'no'}); "
                "use --device cpu, or --device auto to pick what is there"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} was requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
        return dev
    raise ConfigError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N")


def _describe(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} threads)"
