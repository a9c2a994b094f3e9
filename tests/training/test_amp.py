"""bf16 autocast on the CPU only where the CPU computes bf16 natively; final figures in fp32."""

from __future__ import annotations

import logging

import pytest
import torch

from cnnlab.config import resolve_config
from cnnlab.device import cpu_supports_bf16, cpuinfo_has_bf16
from cnnlab.training import loop
from cnnlab.training.loop import fit
from synth import prepared_data

MESSAGE = "bf16 autocast is off"


def _cfg(amp: str):
    return resolve_config({"model": {"name": "paper-cnn-tiny"},
                           "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "amp": amp}})


@pytest.fixture
def autocasts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, torch.dtype]]:
    """The (device type, dtype) of every ``torch.autocast`` entered from now on."""
    calls: list[tuple[str, torch.dtype]] = []
    real = torch.autocast

    def recording(device_type: str, dtype: torch.dtype | None = None, **kw: object):
        calls.append((device_type, dtype))
        return real(device_type, dtype=dtype, **kw)

    monkeypatch.setattr(torch, "autocast", recording)
    return calls


@pytest.fixture
def eval_amps(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The ``amp`` argument of every evaluation fit() runs (per-epoch validation, then the
    final val and test figures)."""
    amps: list[bool] = []
    real = loop.predict_logits

    def recording(*args: object, amp: bool = False, **kw: object) -> torch.Tensor:
        amps.append(amp)
        return real(*args, amp=amp, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "predict_logits", recording)
    return amps


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if MESSAGE in r.getMessage()]


def test_cpu_without_bf16_trains_in_fp32_and_says_so_once(monkeypatch, autocasts, eval_amps,
                                                          caplog) -> None:
    monkeypatch.setattr(loop, "cpu_supports_bf16", lambda: False)
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        result = fit(_cfg("on"), progress=False, data=prepared_data())
    assert autocasts == []
    assert eval_amps == [False, False, False]
    assert _messages(caplog) == [
        "bf16 autocast is off: train.amp = 'on' asks for it, but this CPU has no native bf16 "
        "(avx512_bf16/amx_bf16); training in fp32"]
    assert [r.levelno for r in caplog.records if MESSAGE in r.getMessage()] == [logging.WARNING]
    assert result.metrics["test_accuracy"] >= 0.0


def test_cpu_with_bf16_trains_under_bf16_and_reports_in_fp32(monkeypatch, autocasts, eval_amps,
                                                             caplog) -> None:
    monkeypatch.setattr(loop, "cpu_supports_bf16", lambda: True)
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        fit(_cfg("on"), progress=False, data=prepared_data())
    steps = -(-len(prepared_data().train) // 16)
    # every training step and the epoch's validation under bf16 autocast ...
    assert autocasts == [("cpu", torch.bfloat16)] * (steps + 1)
    # ... and the final val and test figures (metrics.json) in fp32
    assert eval_amps == [True, False, False]
    assert _messages(caplog) == []


@pytest.mark.parametrize("amp", ["off", "auto"])  # auto means on for CUDA only
def test_no_autocast_and_no_message_unless_asked(monkeypatch, autocasts, caplog, amp) -> None:
    monkeypatch.setattr(loop, "cpu_supports_bf16", lambda: False)
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        fit(_cfg(amp), progress=False, data=prepared_data())
    assert autocasts == [] and _messages(caplog) == []


X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f {}\n\n"


@pytest.mark.parametrize(("cpuinfo", "expected"), [
    (X86.format("avx512_bf16 avx512_vnni"), True),
    (X86.format("amx_bf16 amx_tile"), True),
    (X86.format("avx512_vnni"), False),  # AVX-512 without its BF16 extension
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd4f\n", True),
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n", False),
    ("model name\t: bf16 in a name is not a flag\n", False),
    ("", False),
])
def test_cpuinfo_flags(cpuinfo: str, expected: bool) -> None:
    assert cpuinfo_has_bf16(cpuinfo) is expected


def test_detection_is_cached_and_a_bool() -> None:
    assert isinstance(cpu_supports_bf16(), bool)
    assert cpu_supports_bf16.cache_info().currsize == 1  # type: ignore[attr-defined]
