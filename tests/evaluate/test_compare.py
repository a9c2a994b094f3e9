"""compare() and `cnnlab compare` end to end on tiny synthetic data."""

import csv
import json

import numpy as np
import pytest

from cnnlab.cli import main as cli_main
from cnnlab.errors import ConfigError, RegistryError
from cnnlab.evaluate.compare import LITERATURE, compare
from synth import prepared_data, write_image_folder


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    return compare(["paper-cnn-tiny"], ["pixels-knn", "edges-tree"], dataset="synthetic",
                   seed=0, epochs=1, overrides={"optim": {"lr": 3e-3},
                                                "train": {"batch_size": 16}},
                   out_dir=out, literature=True, latency_runs=5, n_boot=200, progress=False,
                   data=prepared_data())


def test_every_entry_is_scored_on_the_same_test_images(result):
    assert {r["name"] for r in result.rows} == {"paper-cnn-tiny", "pixels-knn", "edges-tree"}
    kinds = {r["name"]: r["kind"] for r in result.rows}
    assert kinds == {"paper-cnn-tiny": "cnn", "pixels-knn": "baseline", "edges-tree": "baseline"}
    for r in result.rows:
        assert r["test_images"] == 16 and r["source"] == "this run"
        assert r["accuracy_low"] <= r["accuracy"] <= r["accuracy_high"]
        assert r["train_time_s"] > 0 and r["latency_ms"] > 0 and r["parameters"] > 0
        assert r["size_mb"] > 0 and 0 <= r["macro_f1"] <= 1
    assert [r["accuracy"] for r in result.rows] == sorted(
        (r["accuracy"] for r in result.rows), reverse=True)
    baseline = next(r for r in result.rows if r["name"] == "pixels-knn")
    assert baseline["accuracy"] >= 0.75 and baseline["train_images"] == 64


def test_mcnemar_matrix(result):
    p = result.mcnemar_p
    assert p.shape == (3, 3) and np.isnan(np.diag(p)).all()
    off = p[~np.eye(3, dtype=bool)]
    assert np.allclose(p, p.T, equal_nan=True) and ((off >= 0) & (off <= 1)).all()
    with open(result.files["mcnemar"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["", *result.mcnemar_names] and len(rows) == 4
    assert rows[1][1] == ""  # the diagonal is empty


def test_files_are_written_with_literature_marked(result):
    files = result.files
    for key in ("md", "html", "csv", "png", "json", "mcnemar"):
        assert files[key].is_file() and files[key].stat().st_size > 0, key
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = files["md"].read_text()
    assert "| paper-cnn-tiny | cnn |" in md and "## McNemar p-values" in md
    assert "**Literature (published figures, not our runs)**" in md
    assert "| LeNet-5 | literature (published, not our run) | 99.05 %" in md
    html = files["html"].read_text()
    assert 'class="literature"' in html and "data:image/png;base64," in html
    assert "McNemar p-values" in html
    with open(files["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    lit = [r for r in rows if r["kind"] == "literature"]
    assert [r["name"] for r in lit] == [r["name"] for r in LITERATURE]
    assert {r["accuracy"] for r in lit} >= {"0.9905", "0.986", "0.969", "0.9936", "0.998"}
    assert all(r["source"] != "this run" and r["train_time_s"] == "" for r in lit)
    assert [r["source"] for r in rows if r["kind"] != "literature"] == ["this run"] * 3
    data = json.loads(files["json"].read_text())
    assert data["settings"]["train_images"] == 64 and len(data["mcnemar"]["names"]) == 3


def test_no_literature_rows_off_mnist(tmp_path):
    r = compare([], ["pixels-knn"], dataset="synthetic", out_dir=tmp_path, progress=False,
                latency_runs=5, n_boot=50, data=prepared_data())
    assert r.literature == [] and "literature" not in (tmp_path / "compare.md").read_text()


def test_bad_names_and_options_fail_before_any_work(tmp_path):
    with pytest.raises(RegistryError, match="unknown model 'lenet'; did you mean 'lenet5'"):
        compare(["lenet"], [], out_dir=tmp_path)
    with pytest.raises(RegistryError, match="unknown baseline 'hog-svn'; did you mean 'hog-svm'"):
        compare([], ["hog-svn"], out_dir=tmp_path)
    with pytest.raises(ConfigError, match="at least one model or baseline"):
        compare([], [], out_dir=tmp_path)
    with pytest.raises(ConfigError, match="'pixels-knn' given more than once"):
        compare([], ["pixels-knn", "pixels-knn"], out_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"'limit' parameter of compare .* Got 0"):
        compare([], ["pixels-knn"], limit=0, out_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        compare(["paper-cnn-tiny"], [], epochs=0, out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.fixture
def cli(monkeypatch, tmp_path):
    # until `compare` is listed in cli/main.py's VERBS, register it here for the test
    if "compare" not in cli_main.VERBS:
        monkeypatch.setattr(cli_main, "VERBS", (*cli_main.VERBS, "compare"))
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    return cli_main.main


def test_cli_help_states_defaults(cli, capsys):
    with pytest.raises(SystemExit):
        cli(["compare", "--help"])
    out = capsys.readouterr().out
    for text in ("default: paper-cnn,lenet5", "default: hog-svm,pixels-knn", "default: mnist",
                 "default: runs/compare", "default: 0", "--max-train-baseline"):
        assert text in " ".join(out.split()), text


def test_cli_runs_on_an_image_folder(cli, capsys, tmp_path):
    root = tmp_path / "folder"
    write_image_folder(root / "train", n_per_class=12, num_classes=3)
    write_image_folder(root / "test", n_per_class=4, num_classes=3, seed=1)
    code = cli(["compare", "--models", "paper-cnn-tiny", "--baselines", "pixels-knn",
                "--dataset", str(root), "--epochs", "1", "--set", "train.batch_size=8",
                "--out", str(tmp_path / "out"), "--json", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert [r["name"] for r in data["rows"]] != [] and data["literature"] == []
    assert (tmp_path / "out" / "compare.html").is_file()


def test_cli_unknown_baseline_is_one_error_line(cli, capsys):
    assert cli(["compare", "--baselines", "hog-svn", "--models", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown baseline 'hog-svn'; did you mean 'hog-svm'")
    assert "\n" not in err


def test_help_lists_every_registered_baseline(cli, capsys):
    from cnnlab.baselines import BASELINES

    with pytest.raises(SystemExit):
        cli(["compare", "--help"])
    out = capsys.readouterr().out
    for name in BASELINES.names():
        assert name in out, name


def test_public_names():
    import cnnlab.evaluate.compare as mod

    assert mod.__all__ == ["LITERATURE", "CompareResult", "compare"]
    assert all(hasattr(mod, n) for n in mod.__all__)
