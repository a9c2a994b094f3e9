"""``cnnlab explain``: image files and folders, the report's worst test images, --evaluate's
score card in the report, and the errors a user can cause."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import error_line
from cnnlab.cli.main import main


def test_explain_a_folder_of_images_with_json(abc_run: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = abc_run.parent / "data" / "test"
    # a user's image: RGBA at another size, beside the folder's own
    extra = tmp_path / "mine" / "b.png"
    extra.parent.mkdir()
    Image.open(next((data / "b").iterdir())).convert("RGBA").resize((50, 40)).save(extra)
    out = tmp_path / "out"
    code = main(["explain", str(abc_run), str(data / "a"), str(extra), "--method", "saliency",
                 "--out", str(out), "--neighbours", "2", "--json", "-q"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    images = result["images"]
    assert len(images) == len(list((data / "a").iterdir())) + 1
    for item in images:
        assert item["method"] == "saliency" and item["explained"] == item["predicted"]
        attribution = np.load(item["attribution"])
        assert attribution.shape == (1, 28, 28) and attribution.dtype == np.float32
        assert Path(item["overlay"]).is_file() and item["overlay"].endswith(".png")
        assert len(item["neighbours"]) == 2
    assert {i["true"] for i in images if "/a/" in i["image"]} == {"a"}
    assert [i["true"] for i in images if i["image"] == str(extra)] == [None]  # not a class dir
    assert set(result["files"]) == {"filters", "feature_maps"}
    assert all(Path(p).is_file() for p in result["files"].values())


def test_a_chosen_target_and_the_text_output(abc_run: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    image = next((abc_run.parent / "data" / "test" / "c").iterdir())
    assert main(["explain", str(abc_run), str(image), "--target", "a", "--neighbours", "0",
                 "--out", str(tmp_path), "-q"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "gradcam explains a" in line and "true c" in line


def test_without_images_the_reports_worst_test_images(abc_run: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explain", str(abc_run), "--out", str(tmp_path), "--neighbours", "0", "--json",
                 "-q"])
    assert code == 0
    captured = capsys.readouterr()
    if not captured.out:  # a model without a mistake on its test split
        assert "no mistakes" in captured.err
        return
    images = json.loads(captured.out)["images"]
    assert images and all(i["image"].startswith("test[") for i in images)
    assert all(i["true"] != i["predicted"] for i in images)  # mistakes, most confident first
    probs = [i["probability"] for i in images]
    assert probs == sorted(probs, reverse=True)


def test_evaluate_writes_the_score_card_into_the_report(abc_run: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from cnnlab.evaluate.report import build_report

    run = tmp_path / "run"
    shutil.copytree(abc_run, run)
    build_report(run, n_boot=20, latency_runs=2, throughput_batch_size=8)
    code = main(["explain", str(run), "--evaluate", "--images", "12", "--sanity-images", "6",
                 "--tsne-images", "30", "--json", "-q"])
    assert code == 0
    card = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in card["rows"]] == ["gradcam", "ig", "saliency", "occlusion",
                                                   "guided-gradcam"]
    for row in card["rows"]:
        assert 0 <= row["deletion_auc"] <= 1 and 0 <= row["insertion_auc"] <= 1
        assert -1 <= row["ssim"] <= 1 and row["passes_randomisation"] == (row["ssim"] < 0.3)
    assert card["images"] == 12 and card["sanity_images"] == 6
    assert card["report"] == str(run / "report.html")
    page = (run / "report.html").read_text()
    assert "Explanations" in page and "randomisation SSIM" in page
    assert "| gradcam |" in (run / "report.md").read_text()
    for rel in card["figures"].values():
        assert (run / rel).is_file()
    assert {"explain_mistakes", "explain_correct", "explain_tsne", "explain_curves",
            "explain_filters"} <= set(card["figures"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--method", "gradcm"], "unknown explanation method 'gradcm'; did you mean 'gradcam'"),
    (["--target", "zebra"], "unknown class 'zebra'"),
    (["--neighbours", "-1"], "--neighbours must be an int >= 0"),
    (["--evaluate", "--images", "0"], "--images must be an int >= 1"),
])
def test_user_errors_get_one_line(abc_run: Path, tmp_path: Path, argv: list[str], message: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    image = next((abc_run.parent / "data" / "test" / "a").iterdir())
    assert main(["explain", str(abc_run), str(image), "--out", str(tmp_path), "-q",
                 *argv]) == 2
    assert message in error_line(capsys)


def test_a_missing_file_is_named_and_the_others_explained(abc_run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    image = next((abc_run.parent / "data" / "test" / "a").iterdir())
    code = main(["explain", str(abc_run), str(image), str(tmp_path / "nope.png"), "--out",
                 str(tmp_path), "--neighbours", "0", "--json", "-q"])
    assert code == 2
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert len(result["images"]) == 1
    assert result["errors"][0]["path"] == str(tmp_path / "nope.png")
    assert "nope.png: no such file" in captured.err
