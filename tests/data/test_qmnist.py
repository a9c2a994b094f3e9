"""The QMNIST writer labels: shipped, verified by checksum, and describing MNIST as the shared
data README measured it (students wrote test 0-4999, no writer in both splits)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data.idx import read_idx, write_idx
from cnnlab.data.qmnist import QMNIST_FILES, load_writers, population_of
from cnnlab.errors import ConfigError, DataError, DatasetNotFoundError

REPO = Path(__file__).resolve().parents[2]
QMNIST_DIR = REPO / "data" / "qmnist"


@pytest.fixture(scope="module")
def writers():
    if not (QMNIST_DIR / "qmnist-test-labels-idx2-int.gz").is_file():
        pytest.skip("data/qmnist is not in this checkout")
    return {s: load_writers(s, data_dir=QMNIST_DIR) for s in ("train", "test")}


def test_test_split_halves(writers) -> None:
    pop = writers["test"].population
    assert len(pop) == 10000
    assert (pop[:5000] == "student").all()  # the MNIST web page says the opposite
    assert (pop[5000:] == "employee").sum() == 4999
    assert (writers["test"].series[:5000] == 4).all()


def test_train_populations_and_writer_counts(writers) -> None:
    tr, te = writers["train"], writers["test"]
    assert (tr.population == "employee").sum() == 30950
    assert (tr.population == "student").sum() == 29050
    for labels, employees, students in ((tr, 289, 250), (te, 48, 249)):
        ids = np.unique(labels.writer)
        assert len(ids) == employees + students
        assert len(np.unique(labels.writer[labels.population == "employee"])) == employees
        assert len(np.unique(labels.writer[labels.population == "student"])) == students
        # every writer belongs to one population
        for w in ids[:50]:
            assert len(set(labels.population[labels.writer == w])) == 1
    assert len(set(tr.writer.tolist()) & set(te.writer.tolist())) == 0
    counts = np.unique(tr.writer, return_counts=True)[1]
    assert (counts.min(), counts.max()) == (19, 131)
    counts = np.unique(te.writer, return_counts=True)[1]
    assert (counts.min(), counts.max()) == (8, 130)


def test_classes_agree_with_mnist_labels(writers, mnist_dir: Path) -> None:
    for split, name in (("train", "train"), ("test", "t10k")):
        targets = read_idx(mnist_dir / f"{name}-labels-idx1-ubyte.gz")
        writers[split].check_targets(targets)
        shuffled = targets.copy()
        shuffled[[0, 1]] = shuffled[[1, 0]] if shuffled[0] != shuffled[1] else shuffled[[0, 2]]
        with pytest.raises(DataError, match="disagree"):
            writers[split].check_targets(shuffled)
    with pytest.raises(DataError, match="describe 10000 digits"):
        writers["test"].check_targets(np.zeros(5, dtype=np.int64))


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    fake = np.zeros((60000, 8), dtype=">i4")
    raw = tmp_path / "raw"
    write_idx(raw, fake.astype(np.int32))
    (tmp_path / f"{QMNIST_FILES['test'].name}.gz").write_bytes(gzip.compress(raw.read_bytes()))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_writers("test", data_dir=tmp_path)


def test_missing_files_and_bad_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no data/qmnist under the working directory
    with pytest.raises(DatasetNotFoundError, match=r"qmnist-train-labels-idx2-int\.gz"):
        load_writers("train", data_dir=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="'split'"):
        load_writers("val")


def test_found_beside_the_mnist_folder(writers, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    labels = load_writers("test", data_dir=REPO / "data" / "mnist")
    assert (labels.writer == writers["test"].writer).all()


def test_population_of_unknown_series() -> None:
    assert population_of(np.array([0, 1, 4])).tolist() == ["employee", "employee", "student"]
    with pytest.raises(DataError, match="unknown NIST HSF series"):
        population_of(np.array([0, 2]))
