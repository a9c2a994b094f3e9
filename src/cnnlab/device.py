"""Device selection: ``auto`` picks CUDA when present and says so; asking for an absent CUDA
is an error. Also: whether the CPU computes bf16 natively (bf16 autocast only pays there)."""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
from pathlib import Path

import torch

from cnnlab.errors import ConfigError, DeviceError

__all__ = ["cpu_supports_bf16", "cpuinfo_flags", "cpuinfo_has_bf16", "resolve_device"]

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
                "set device='cpu', or device='auto' to pick what is there"
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
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"


# /proc/cpuinfo flags that mean native bf16 arithmetic: AVX-512 BF16 (Cooper Lake, Zen 4 and
# later) and AMX (Sapphire Rapids and later) on x86; the Armv8.6 BF16 extension on aarch64
# ("Features" line).
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 instructions, so that bf16 autocast speeds it up.

    Without them bf16 runs through conversions to and from fp32, so autocast only rounds
    without the speed-up it was measured to give on CPUs that have them. Linux reads
    the flags of ``/proc/cpuinfo`` (``avx512_bf16`` or ``amx_bf16`` on x86, ``bf16`` on
    aarch64); macOS asks ``sysctl hw.optional.arm.FEAT_BF16``. Elsewhere the answer is False:
    ``torch.backends.cpu.get_cpu_capability()`` reports the vector width (``AVX512``), which
    does not tell whether bf16 is among the instructions. The result is cached.
    """
    if sys.platform.startswith("linux"):
        try:
            return cpuinfo_has_bf16(Path("/proc/cpuinfo").read_text(errors="replace"))
        except OSError:
            return False
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"],
                                 capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            return False
        return out.stdout.strip() == "1"
    return False


def cpuinfo_has_bf16(cpuinfo: str) -> bool:
    """Whether the ``flags`` (x86) or ``Features`` (aarch64) lines of a ``/proc/cpuinfo`` text
    name a native bf16 instruction set."""
    return bool(_BF16_FLAGS & cpuinfo_flags(cpuinfo))


def cpuinfo_flags(cpuinfo: str) -> set[str]:
    """The instruction-set flags that the ``flags`` (x86) or ``Features`` (aarch64) lines of a
    ``/proc/cpuinfo`` text name."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags
