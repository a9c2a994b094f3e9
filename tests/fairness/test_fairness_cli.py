"""``cnnlab fairness`` end to end on a small folder model: derived groups, a user's group file
(and the ways it can be wrong), the report section, the JSON output and the option errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import error_line
from cnnlab.cli.main import main
from synth import train_small_abc_model


@pytest.fixture(scope="module")
def abc(tmp_path_factory) -> Path:
    return train_small_abc_model(tmp_path_factory.mktemp("fair"))


def _images(root: Path) -> list[str]:
    test = root / "data" / "test"
    return sorted(p.relative_to(test).as_posix() for p in test.rglob("*.png"))


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("path,group\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return path


def test_derived_groups_with_json(abc: Path, capsys) -> None:
    data = abc.parent / "data"
    code = main(["fairness", str(abc), "--data-dir", str(data), "--group", "derived:ink",
                 "--bins", "2", "--n-boot", "50", "--json", "-q"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    m = out["metrics"]
    assert out["group_kind"] == "derived:ink" and out["samples"] == 12
    assert [g["samples"] for g in m["groups"]] == [6, 6]
    assert all(g["small"] for g in m["groups"]) and m["warnings"]  # < 30 images: no ratio
    assert "ratios" not in m and m["bootstrap"]["unit"] == "image"
    assert "writers" not in out  # no writer metadata for a folder
    assert Path(out["files"]["json"]).is_file()


def test_group_file_and_the_report_section(abc: Path, tmp_path: Path, capsys) -> None:
    data = abc.parent / "data"
    paths = _images(abc.parent)
    groups = [(p, "left" if i % 2 else "right") for i, p in enumerate(paths)]
    csv_path = _write_csv(tmp_path / "groups.csv", groups)
    out_dir = tmp_path / "report"
    assert main(["report", str(abc), "--data-dir", str(data), "--out", str(out_dir), "-q"]) == 0
    assert main(["fairness", str(abc), "--data-dir", str(data), "--group", str(csv_path),
                 "--n-boot", "50", "--out", str(out_dir), "-q"]) == 0
    text = capsys.readouterr().out
    assert "left" in text and "right" in text
    saved = json.loads((out_dir / "fairness.json").read_text())
    sizes = {g["name"]: g["samples"] for g in saved["metrics"]["groups"]}
    assert sizes == {"left": 6, "right": 6}
    # the section is in both documents, and its card row in the model card
    md = (out_dir / "report.md").read_text()
    assert "## Fairness" in md and "left" in md
    page = (out_dir / "report.html").read_text()
    assert 'id="fairness"' in page and "fairness_groups" not in page  # embedded, not linked
    assert (out_dir / "sections" / "fairness.json").is_file()


def test_group_file_errors(abc: Path, tmp_path: Path, capsys) -> None:
    data = abc.parent / "data"
    paths = _images(abc.parent)
    cases = [
        (paths[:-3], "3 of the 12 images in"),  # not every image covered
        ([*paths, "a/ghost.png", "z/none.png"], "2 rows name files that are not images"),
    ]
    for listed, message in cases:
        csv_path = _write_csv(tmp_path / "g.csv", [(p, "x") for p in listed])
        assert main(["fairness", str(abc), "--data-dir", str(data), "--group",
                     str(csv_path), "-q"]) == 2
        assert message in error_line(capsys)
    (tmp_path / "bad.csv").write_text(f"{paths[0]}\n")
    assert main(["fairness", str(abc), "--data-dir", str(data), "--group",
                 str(tmp_path / "bad.csv"), "-q"]) == 2
    assert "line 1: expected 'path,group'" in error_line(capsys)
    twice = _write_csv(tmp_path / "twice.csv", [(paths[0], "x"), (paths[0], "y")])
    assert main(["fairness", str(abc), "--data-dir", str(data), "--group", str(twice),
                 "-q"]) == 2
    assert "listed twice" in error_line(capsys)


def test_option_errors(abc: Path, capsys) -> None:
    data = str(abc.parent / "data")
    for argv, message in (
        (["--group", "derived:weight"], "unknown group 'derived:weight'"),
        (["--group", "population"], "needs writer metadata"),
        (["--bins", "1"], "--bins must be from 2 to 20"),
        (["--n-boot", "5"], "--n-boot must be from 10 to 100000"),
        (["--worst", "0"], "--worst must be from 1 to 100"),
    ):
        assert main(["fairness", str(abc), "--data-dir", data, *argv, "-q"]) == 2
        assert message in error_line(capsys)


def test_light_background_rgba_uploads_are_grouped(abc: Path, tmp_path: Path, capsys) -> None:
    # data as users bring it: dark ink on white, RGBA, another size; derived groups still work
    folder = tmp_path / "scans"
    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        (folder / cls).mkdir(parents=True)
        for i in range(4):
            img = np.full((40, 36), 255, np.uint8)
            y, x = rng.integers(4, 20, 2)
            img[y:y + 14, x:x + 3 + i] = 20
            Image.fromarray(img).convert("RGBA").save(folder / cls / f"{i}.png")
    assert main(["fairness", str(abc), "--data-dir", str(folder), "--group",
                 "derived:thickness", "--bins", "2", "--n-boot", "20", "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sum(g["samples"] for g in out["metrics"]["groups"]) == 12


@pytest.mark.slow
def test_default_model_population_gap_within_ten_seconds(tmp_path: Path, capsys) -> None:
    repo = Path(__file__).resolve().parents[2]
    if not (repo / "data" / "qmnist").is_dir():
        pytest.skip("data/qmnist is not in this checkout")
    assert main(["fairness", "default", "--data-dir", str(repo / "data"), "--out",
                 str(tmp_path), "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    m = out["metrics"]
    assert [g["name"] for g in m["groups"]] == ["student", "employee"]
    assert [g["samples"] for g in m["groups"]] == [5001, 4999]
    assert [g["clusters"] for g in m["groups"]] == [249, 48]
    assert m["bootstrap"]["unit"] == "writer" and "gap" in m
    assert out["writers"]["writers"] == 297
    assert out["time_s"] < 30  # the target is 10 s on 2 idle cores; shared machines are slower
