"""The thread policy of the ``cnnlab`` entry point (cnnlab._threads): which count, from which
affinity, load and quota; the environment set only where the user did not; --threads wins.
Timings belong to benchmarks/bench_contention.py, not here."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cnnlab import _threads
from cnnlab._threads import (
    THREADS_ENV,
    ThreadPlan,
    apply_thread_policy,
    cgroup_cpu_limit,
    choose_threads,
    idle_cores,
    plan_threads,
    threads_flag,
)
from cnnlab.cli import main as cli_main


@pytest.mark.parametrize(("argv", "expected"), [
    (["train"], None),
    (["train", "--threads", "1"], 1),
    (["train", "--threads=3"], 3),
    (["train", "--threads", "1", "--threads", "2"], 2),  # the last wins, as in argparse
    (["train", "--threads", "0"], None),  # 0 is torch's default
    (["train", "--threads", "two"], None),  # the verb's parser reports it
    (["train", "--threads"], None),
    (["train", "--set", "train.threads=2"], 2),
    (["train", "--set=train.threads=4"], 4),
    (["train", "--set", "train.lr=0.1"], None),
    (["train", "--", "--threads", "2"], None),
])
def test_threads_flag(argv: list[str], expected: int | None) -> None:
    assert threads_flag(argv) == expected


@pytest.mark.parametrize(("cores", "idle", "quota", "expected"), [
    (2, 2.0, None, 2),  # idle machine: torch's default
    (2, 1.0, None, 1),  # one core busy
    (2, 0.0, None, 1),  # both busy: never fewer than one
    (2, 1.6, None, 2),  # a half-free core counts as free
    (2, 1.4, None, 1),
    (4, 2.1, None, 2),
    (2, None, None, 2),  # no probe (not Linux): the cores
    (4, 4.0, 1.0, 1),  # a CPU quota caps it
    (4, 4.0, 2.5, 3),
    (2, 2.0, 8.0, 2),  # a quota above the cores changes nothing
    (4, 1.0, 2.0, 1),  # the lower of the two
    (1, 0.0, None, 1),
])
def test_choose_threads(cores: int, idle: float | None, quota: float | None,
                        expected: int) -> None:
    threads, why = choose_threads(cores, idle, quota)
    assert threads == expected
    assert why


def test_choose_threads_says_why() -> None:
    assert choose_threads(2, 1.0)[1] == "1 of the 2 cores is busy (1.0 idle over a short probe)"
    assert choose_threads(4, 1.0)[1].startswith("3 of the 4 cores are busy")
    assert choose_threads(4, 4.0, 1.0)[1] == "the CPU quota is 1 cores"


def test_choose_threads_rejects_no_cores() -> None:
    with pytest.raises(ValueError) as e:
        choose_threads(0, None)
    assert str(e.value) == ("The 'cores' parameter of choose_threads must be at least 1. "
                            "Got 0 instead.")


def test_plan_busy_core_sets_the_env_and_says_so() -> None:
    plan = plan_threads(["train"], {}, cores=2, idle=1.0)
    assert plan.env == {THREADS_ENV: "1"}
    assert plan.note == ("torch threads: 1 of 2, as 1 of the 2 cores is busy (1.0 idle over a "
                         "short probe); --threads N sets it")


def test_plan_idle_machine_changes_nothing() -> None:
    assert plan_threads(["train"], {}, cores=2, idle=1.9) == ThreadPlan()


def test_plan_leaves_the_users_env_alone() -> None:
    assert plan_threads(["train"], {THREADS_ENV: "2"}, cores=2, idle=0.0) == ThreadPlan()


def test_plan_threads_flag_wins_over_env_and_load() -> None:
    plan = plan_threads(["train", "--threads", "2"], {THREADS_ENV: "1"}, cores=2, idle=0.0)
    assert plan == ThreadPlan({THREADS_ENV: "2"})  # no note: the device line shows 2 threads


STAT_BEFORE = """cpu  300 0 100 1000 0 0 0 0 0 0
cpu0 100 0 50 500 0 0 0 0 0 0
cpu1 200 0 50 500 0 0 0 0 0 0
intr 12345
"""
# 10 ticks each: cpu0 idle all of them (9 idle + 1 iowait), cpu1 busy all of them
STAT_AFTER = """cpu  310 0 100 1009 1 0 0 0 0 0
cpu0 100 0 50 509 1 0 0 0 0 0
cpu1 210 0 50 500 0 0 0 0 0 0
intr 12399
"""


def test_idle_cores_sums_idle_shares() -> None:
    assert idle_cores(STAT_BEFORE, STAT_AFTER, {0, 1}) == pytest.approx(1.0)
    assert idle_cores(STAT_BEFORE, STAT_AFTER, {1}) == pytest.approx(0.0)


def test_idle_cores_unknown_when_a_cpu_is_missing_or_no_tick_passed() -> None:
    assert idle_cores(STAT_BEFORE, STAT_AFTER, {0, 5}) is None
    assert idle_cores(STAT_BEFORE, STAT_BEFORE, {0, 1}) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("max 100000\n", None),
    ("150000 100000\n", 1.5),
    ("100000 100000", 1.0),
    ("garbage", None),
    ("x 100000", None),
    ("0 100000", None),
])
def test_cgroup_cpu_limit(text: str, expected: float | None) -> None:
    assert cgroup_cpu_limit(text) == expected


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two usable cores, no quota, and no OMP_NUM_THREADS of the user's; the cnnlab logger
    as it was after the test."""
    logger = logging.getLogger("cnnlab")
    saved = logger.level, list(logger.handlers), logger.propagate
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(_threads, "cgroup_cpu_limit", lambda text=None: None)
    monkeypatch.delenv(THREADS_ENV, raising=False)  # and restored after the test
    yield
    logger.level, logger.propagate = saved[0], saved[2]
    logger.handlers[:] = saved[1]


def _no_probe(cpus: set[int], seconds: float = 0.0) -> float:
    raise AssertionError("probed although the thread count was already decided")


def test_apply_busy_core(two_cores: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "_probe_idle", lambda cpus, seconds=0.0: 1.0)
    env: dict[str, str] = {}
    note = apply_thread_policy(["train"], env)
    assert env == {THREADS_ENV: "1"}
    assert note is not None and note.startswith("torch threads: 1 of 2")


def test_apply_threads_flag_wins_without_probing(two_cores: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "_probe_idle", _no_probe)
    env = {THREADS_ENV: "4"}
    assert apply_thread_policy(["train", "--threads", "1"], env) is None
    assert env == {THREADS_ENV: "1"}


def test_apply_keeps_the_users_env_without_probing(two_cores: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "_probe_idle", _no_probe)
    env = {THREADS_ENV: "2"}
    assert apply_thread_policy(["train"], env) is None
    assert env == {THREADS_ENV: "2"}


def test_apply_on_the_real_machine_sets_at_most_the_cores() -> None:
    env: dict[str, str] = {}
    apply_thread_policy(["train"], env)  # whatever the load is now
    assert set(env) <= {THREADS_ENV}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    assert 1 <= int(env.get(THREADS_ENV, cores)) <= cores


def test_entry_logs_the_choice(two_cores: None, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(_threads, "_probe_idle", lambda cpus, seconds=0.0: 0.9)
    cli_main._choose_threads(["train", "--out", "x"])
    assert os.environ[THREADS_ENV] == "1"
    assert "torch threads: 1 of 2, as 1 of the 2 cores is busy" in capsys.readouterr().err


def test_entry_is_quiet_with_q(two_cores: None, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(_threads, "_probe_idle", lambda cpus, seconds=0.0: 0.9)
    cli_main._choose_threads(["train", "-q"])
    assert os.environ[THREADS_ENV] == "1"
    assert capsys.readouterr().err == ""


def test_entry_skips_help_and_version(two_cores: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "_probe_idle", _no_probe)
    for argv in ([], ["--version"], ["train", "--help"], ["train", "-h"]):
        cli_main._choose_threads(argv)
    assert THREADS_ENV not in os.environ


def test_threads_flag_reaches_the_first_threads_message() -> None:
    """Issue 14 §4: the first "(N threads)" line said 2 under --threads 1. The entry point
    now starts torch with N threads, so the device line shows N."""
    code = ("import logging, sys\n"
            "from cnnlab.cli.main import _choose_threads\n"
            "_choose_threads(['train', '--threads', '1'])\n"
            "logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stdout)\n"
            "import torch\n"
            "from cnnlab.device import resolve_device\n"
            "resolve_device('auto')\n"
            "print('threads', torch.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k != THREADS_ENV}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True, timeout=120)
    assert "threads 1" in done.stdout
    if "device auto: using cpu" in done.stdout:
        assert "device auto: using cpu (1 thread)" in done.stdout


def test_import_cnnlab_sets_nothing() -> None:
    code = ("import os\nbefore = dict(os.environ)\nimport cnnlab, cnnlab._threads\n"
            "assert dict(os.environ) == before\nprint('ok')")
    env = {k: v for k, v in os.environ.items() if k != THREADS_ENV}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True, timeout=60)
    assert done.stdout.strip() == "ok"
