"""Data-parallel training through torchrun on the CPU (gloo): the same weights as one process,
rank 0 alone writing, a killed rank ending the run with an error, and --resume after it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from synth import write_image_folder

# Two ranks sum their halves of each batch's gradient in another order than one process sums
# the whole batch; after 3 epochs of Adam the weights differ by ~2e-7 (measured). A broken
# share (a rank training on the whole batch, a wrong loss factor) differs by > 1e-3.
ATOL = 1e-5

TRAIN = ["train", "--model", "lenet5", "--set", "model.dropout=0", "--batch-size", "15",
         "--no-report", "-q", "--threads", "1"]


def _cnnlab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cnnlab.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=240, check=False)


def _weights(run: Path, key: str = "state_dict") -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run / ("last.pt" if key == "state_dict_live" else "model.pt"),
                            weights_only=True)
    return checkpoint[key]


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 96 images, 68 of them train: batches of 15 leave a last batch of 8, shared 4 + 4
    return write_image_folder(tmp_path_factory.mktemp("ddp") / "data", n_per_class=24)


def test_two_ranks_give_the_weights_of_one_process(folder: Path, tmp_path: Path) -> None:
    # augmentation stays on (the folder default): the global batch is augmented before it is
    # shared, so the random draws are those of one process
    args = [*TRAIN, "--dataset", str(folder), "--epochs", "3"]
    one = _cnnlab(*args, "--out", "one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    two = _cnnlab(*[a for a in args if a != "-q"], "--out", "two", "--nproc", "2",
                  cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert "launching 2 ranks" in two.stderr
    assert "distributed: 2 ranks, backend gloo" in two.stderr
    assert two.stdout.count("trained lenet5") == 1  # rank 0 alone reports
    for key in ("state_dict", "state_dict_live"):
        assert _max_difference(_weights(tmp_path / "one", key),
                               _weights(tmp_path / "two", key)) < ATOL
    history = (tmp_path / "two" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3  # header + one row per epoch, written once


def test_nproc_is_checked_before_anything_starts(tmp_path: Path) -> None:
    bad = _cnnlab("train", "--nproc", "0", "--out", "r", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: argument --nproc: must be an integer in [1, 1024]; got 0")
    bad = _cnnlab("train", "--nproc", "2", "--dist-timeout", "nan", "--out", "r", cwd=tmp_path)
    assert bad.returncode == 2 and "--dist-timeout: must be a finite number" in bad.stderr


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found + [g for c in found for g in _children(c)]


def _rank_pid(root: int, rank: int) -> int | None:
    for pid in _children(root):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"LOCAL_RANK=" + str(rank).encode() in environ:
            return pid
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_a_killed_rank_ends_the_run_and_resume_finishes_it(folder: Path,
                                                           tmp_path: Path) -> None:
    args = [*TRAIN, "--dataset", str(folder), "--epochs", "40", "--batch-size", "4"]
    run = subprocess.Popen([sys.executable, "-m", "cnnlab.cli.main", *args, "--out", "two",
                            "--nproc", "2", "--dist-timeout", "30"], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    history = tmp_path / "two" / "history.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
            not history.exists() or len(history.read_text().splitlines()) < 3):
        time.sleep(0.05)
    victim = _rank_pid(run.pid, 1)
    assert victim is not None, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    _, err = run.communicate(timeout=90)
    assert time.monotonic() - t0 < 60  # an error, not a hang
    assert run.returncode == 1
    assert "error: the distributed run failed" in err and "--resume" in err
    saved = len(history.read_text().splitlines()) - 1
    assert 2 <= saved < 40

    resumed = _cnnlab(*args, "--out", "two", "--nproc", "2", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(history.read_text().splitlines()) == 1 + 40
    one = _cnnlab(*args, "--out", "one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert _max_difference(_weights(tmp_path / "one", "state_dict_live"),
                           _weights(tmp_path / "two", "state_dict_live")) < 1e-4
