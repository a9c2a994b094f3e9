"""``cnnlab bench``: every engine measured on one model, failures reported per engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.cli.main import main
from cnnlab.deploy.bench import bench_model
from cnnlab.errors import ConfigError


def test_bench_engines_agree_on_accuracy(run_dir: Path) -> None:
    r = bench_model(run_dir, engines=("eager", "channels_last", "torchscript", "ort-fp32",
                                      "ort-int8"), rounds=1, latency_runs=5, progress=False)
    rows = {row["engine"]: row for row in r["rows"]}
    assert list(rows) == ["eager", "channels_last", "torchscript", "ort-fp32", "ort-int8"]
    for row in rows.values():
        assert row["latency_ms_p50"] > 0 and row["throughput_1000"] > 0
        assert row["file_bytes"] > 0 and row["peak_memory_mb"] is None
    fp32 = {rows[e]["accuracy"] for e in ("eager", "channels_last", "torchscript", "ort-fp32")}
    assert len(fp32) == 1  # the same function, run four ways
    assert abs(rows["ort-int8"]["accuracy"] - rows["eager"]["accuracy"]) <= 0.1
    assert rows["ort-int8"]["file_bytes"] < rows["ort-fp32"]["file_bytes"]
    assert r["fastest_batch_1"] in rows


def test_bench_memory_and_cli(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = bench_model(run_dir, engines=("eager",), rounds=1, latency_runs=2,
                    measure_memory=True, progress=False)
    assert r["rows"][0]["peak_memory_mb"] is not None
    assert main(["bench", str(run_dir), "--engines", "eager,ort-fp32", "--rounds", "1",
                 "-q"]) == 0
    out = capsys.readouterr().out
    assert "ort-fp32" in out and "fastest at batch 1" in out and "threads" in out
    with pytest.raises(ConfigError, match="unknown engine"):
        bench_model(run_dir, engines=("tensorrt",), progress=False)
