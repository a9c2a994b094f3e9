"""``cnnlab zoo`` and the zoo library: the table from results, the Pareto front, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli_helpers import error_line
from cnnlab.cli.main import main
from cnnlab.deploy.zoo import format_table, pareto_front, run_zoo
from cnnlab.errors import ConfigError, RegistryError

REPO_DATA = Path(__file__).resolve().parents[2] / "data" / "mnist"


def _row(model: str, acc: float, ms: float) -> dict:
    return {"model": model, "params": 1234, "macs": 2_500_000, "test_accuracy_mean": acc,
            "test_accuracy_min": acc - 0.001, "test_accuracy_max": acc + 0.002,
            "test_accuracy_int8": acc - 0.0005, "train_time_s_median": 3.5,
            "latency_ms_p50_torch": ms, "latency_ms_p50_ort_fp32": ms / 4,
            "latency_ms_p50_ort_int8": ms / 3}


ROWS = [_row("fast-small", 0.95, 0.1), _row("slow-good", 0.99, 1.0),
        _row("slow-bad", 0.94, 2.0), _row("mid", 0.97, 0.5), _row("mid-worse", 0.96, 0.5)]


def test_pareto_front_by_hand() -> None:
    # slow-bad is beaten by everything; mid-worse by mid (same latency, higher accuracy)
    assert pareto_front(ROWS, "latency_ms_p50_torch", "test_accuracy_mean") == {
        "fast-small", "slow-good", "mid"}
    assert pareto_front(ROWS[:1], "latency_ms_p50_torch", "test_accuracy_mean") == {"fast-small"}


def test_table_from_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "zoo.json"
    results.write_text(json.dumps({"budget": {"training_images": 5000, "seeds": 3},
                                   "models": ROWS}))
    md, png = tmp_path / "zoo.md", tmp_path / "plots" / "zoo.png"
    assert main(["zoo", "--results", str(results), "--markdown", str(md),
                 "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")]
    assert len(lines) == 1 + len(ROWS)
    assert "| slow-good | 99.00 (98.90-99.20) | 98.95 | 3.5 | 1,234 | 2.50 M | 1.000 | " \
           "0.250 | 0.333 |" in out
    assert "one epoch over 5000 training images, 3 seed(s)" in out
    assert md.read_text().strip() == format_table(ROWS)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["zoo", "--results", str(results), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"][0]["model"] == "fast-small"
    # --families filters the rows measured already; --out writes what is shown
    shown = tmp_path / "two.json"
    assert main(["zoo", "--results", str(results), "--families", "mid,slow-bad",
                 "--out", str(shown)]) == 0
    assert [r["model"] for r in json.loads(shown.read_text())["models"]] == ["slow-bad", "mid"]


@pytest.mark.parametrize(
    ("argv", "content", "message"),
    [
        (["--results", "{dir}/missing.json"], None, r"zoo results .*missing\.json do not exist; "
                                                    r"run .*bench_zoo\.py"),
        (["--results", "{dir}/bad.json"], "not json", r"cannot read zoo results"),
        (["--results", "{dir}/bad.json"], '{"models": [{"model": "x"}]}',
         r"is not a zoo result: it needs a 'models' list of rows with latency_ms_p50_torch"),
        (["--results", "{dir}/bad.json", "--families", "mid,vit"], json.dumps({"models": ROWS}),
         r"bad\.json has no row for vit; it has fast-small, slow-good"),
        (["--families", "vitt"], None, r"unknown model 'vitt'; did you mean 'vit'"),
        (["--images", "5"], None, r"--images: must be an integer in \[100, 60000\]; got '5'"),
        (["--seeds", "0"], None, r"--seeds: must be an integer in \[1, 100\]"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv: list[str], content: str | None, message: str,
                                         tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    if content is not None:
        (tmp_path / "bad.json").write_text(content)
    argv = [a.replace("{dir}", str(tmp_path)) for a in argv]
    assert main(["zoo", *argv]) == 2
    assert re.search(message, error_line(capsys))


def test_library_checks_its_settings() -> None:
    with pytest.raises(ConfigError, match=r"'images' setting of the zoo must be an int >= 100"):
        run_zoo(["convnet"], images=10)
    with pytest.raises(ConfigError, match=r"'seeds' setting of the zoo must be an int in"):
        run_zoo(["convnet"], seeds=0)
    with pytest.raises(RegistryError, match="did you mean 'mobilenet'"):
        run_zoo(["mobilnet"])


@pytest.mark.slow
def test_small_zoo_on_mnist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (REPO_DATA / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("no MNIST files in data/mnist")
    out = tmp_path / "zoo.json"
    assert main(["zoo", "--families", "vit-tiny,mobilenet-tiny", "--images", "200",
                 "--data-dir", str(REPO_DATA), "--out", str(out), "-q"]) == 0
    rows = json.loads(out.read_text())["models"]
    assert [r["model"] for r in rows] == ["vit-tiny", "mobilenet-tiny"]
    for r in rows:
        assert 0.0 <= r["test_accuracy_mean"] <= 1.0 and r["latency_ms_p50_ort_int8"] > 0
        assert r["params"] > 0 and r["macs"] > 0 and isinstance(r["pareto"], bool)
    assert any(r["pareto"] for r in rows)
