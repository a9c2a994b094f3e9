"""Sections added to a report by later commands: stored, rendered at once, kept by a rebuild."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from cnnlab.evaluate.report import build_report
from cnnlab.evaluate.sections import Section, read_sections, render_report, write_section
from synth import train_small_abc_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_small_abc_model(tmp_path_factory.mktemp("sections"))


def _figure(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path)
    plt.close(fig)


def test_a_section_appears_in_the_report_and_survives_a_rebuild(run_dir):
    build_report(run_dir, n_boot=20, latency_runs=2, throughput_batch_size=8)
    _figure(run_dir / "plots" / "robustness_curve.png")
    section = Section("robustness", "Robustness", "Mean corruption accuracy **97.1 %**.",
                      "<p>Mean corruption accuracy <b>97.1 %</b>.</p>",
                      card=[("Mean corruption accuracy", "97.1 %")],
                      figures={"curve": "plots/robustness_curve.png"})
    html_path = write_section(run_dir, section)
    assert html_path == run_dir / "report.html"
    page = html_path.read_text()
    assert "<h2 id=\"robustness\">Robustness</h2>" in page
    assert "<dt>Mean corruption accuracy</dt><dd>97.1 %</dd>" in page  # the model card row
    figure = page[page.index("id=\"robustness\""):page.index("<h2>Figures</h2>")]
    assert "data:image/png;base64," in figure  # the section's figure is embedded
    md = (run_dir / "report.md").read_text()
    assert "## Robustness" in md and "![curve](plots/robustness_curve.png)" in md
    assert md.index("## Robustness") < md.index("## Figures")

    fair = Section("fairness", "Fairness", "Gap 0.3 points.", "<p>Gap 0.3 points.</p>")
    write_section(run_dir, fair)
    assert [s.key for s in read_sections(run_dir)] == ["robustness", "fairness"]

    build_report(run_dir, n_boot=20, latency_runs=2, throughput_batch_size=8)  # a rebuild
    page = (run_dir / "report.html").read_text()
    assert page.index("id=\"robustness\"") < page.index("id=\"fairness\"") < page.index(
        "<h2>Figures</h2>")
    stored = json.loads((run_dir / "sections" / "robustness.json").read_text())
    assert stored["card"] == [["Mean corruption accuracy", "97.1 %"]]


def test_no_evaluation_yet_keeps_the_section_for_later(tmp_path):
    assert write_section(tmp_path, Section("fairness", "Fairness", "x", "<p>x</p>")) is None
    assert (tmp_path / "sections" / "fairness.json").is_file()
    assert render_report(tmp_path) is None
    assert not (tmp_path / "report.html").exists()


def test_a_broken_section_file_is_skipped_and_bad_keys_refused(tmp_path):
    (tmp_path / "sections").mkdir()
    (tmp_path / "sections" / "bad.json").write_text("{not json")
    assert read_sections(tmp_path) == []
    with pytest.raises(ValueError, match="section key"):
        Section("../evil", "t", "m", "h")
