"""How many threads torch starts with, chosen from the cores that are actually free.

torch's OpenMP runtime starts one thread per core it may run on and splits every operator
evenly between them. With a busy neighbour on one of two cores, the thread that shares a core
gets part of it and every operator waits for that thread: torch's default then trained at
about half the speed of one thread, with batch-1 p99 latencies in the tens of milliseconds
(``benchmarks/bench_contention.py``; issue 14 §3 saw training 6x slower). So the ``cnnlab``
entry point looks, for a moment before torch is imported, at how busy the cores it may run on
are, and sets ``OMP_NUM_THREADS`` to the free ones when some are busy, saying so in one log
line; in the same benchmark the default then trained as fast as the best ``--threads``.
``--threads N`` always wins, and an ``OMP_NUM_THREADS`` the user set is left alone.

The choice is made once, at start-up: a neighbour that arrives later is not seen. The other
candidates, letting OpenMP's idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``) or spin less
(``GOMP_SPINCOUNT``, for the libgomp that torch ships here), did not pay in
``bench_contention.py --candidates``: with a core busy both trained well below one thread's
speed, and on an idle machine PASSIVE slowed training and PyTorch's batch-1 latency too. So
OpenMP keeps its default wait policy. ONNX Runtime (the ``auto`` engine's int8 model here)
does not read ``OMP_NUM_THREADS``; its default thread count held up in the same benchmark.

Library users (``cnnlab.train`` or ``cnnlab.load`` from Python) get torch's own default. To
have this policy instead, call it before anything imports torch::

    from cnnlab._threads import apply_thread_policy
    apply_thread_policy([])   # sets OMP_NUM_THREADS from the free cores; returns the note
    import cnnlab

Importing this module has no side effects; it imports only the standard library and
:mod:`cnnlab.errors`, so it can run before torch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.errors import invalid_value

__all__ = ["THREADS_ENV", "ThreadPlan", "apply_thread_policy", "cgroup_cpu_limit",
           "choose_threads", "idle_cores", "plan_threads", "threads_flag"]

THREADS_ENV = "OMP_NUM_THREADS"  # what torch's OpenMP (and MKL through it) starts with
PROBE_S = 0.05  # long enough for 5 scheduler ticks per core at USER_HZ 100; short next to
# torch's own import


@dataclass(frozen=True)
class ThreadPlan:
    """What to set in the environment before torch is imported, and the line to log."""

    env: dict[str, str] = field(default_factory=dict)
    note: str | None = None  # None: nothing worth saying (torch's default, or the user's)


def threads_flag(argv: Sequence[str]) -> int | None:
    """The thread count a command line asks for: the last ``--threads N``, ``--threads=N`` or
    ``--set train.threads=N`` before ``--``; None when there is none, it is 0 (torch's
    default) or not a whole number (the verb's own parser reports that). A config file's
    ``train.threads`` is not read here; training still applies it."""
    value: str | None = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if arg == "--threads":
            value = following
        elif arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
        elif arg == "--set" and following.replace(" ", "").startswith("train.threads="):
            value = following.split("=", 1)[1]
        elif arg.startswith("--set=") and arg[6:].replace(" ", "").startswith("train.threads="):
            value = arg.split("=", 2)[2]
    if value is None or not value.strip().isdigit():
        return None
    return int(value) or None


def choose_threads(cores: int, idle: float | None, quota: float | None = None) -> tuple[int, str]:
    """The number of threads for ``cores`` usable cores of which ``idle`` (a sum of per-core
    idle shares, None if unknown) were free, under a CPU ``quota`` in cores (None: none); and
    why, in words. At least 1, at most ``cores``; a half-free core counts as free.

    Raises:
        ValueError: ``cores`` < 1.
    """
    if cores < 1:
        raise ValueError(invalid_value("cores", cores, "at least 1",
                                       kind="parameter of choose_threads"))
    threads, why = cores, f"all {cores} cores are free"
    if quota is not None and quota < threads:
        threads = max(1, math.floor(quota + 0.5))
        why = f"the CPU quota is {quota:g} cores"
    if idle is not None:
        free = max(1, math.floor(idle + 0.5))
        if free < threads:
            threads = free
            busy = cores - free
            why = (f"{busy} of the {cores} cores {'is' if busy == 1 else 'are'} busy "
                   f"({idle:.1f} idle over a short probe)")
    return threads, why


def plan_threads(argv: Sequence[str], environ: Mapping[str, str], *, cores: int,
                 idle: float | None, quota: float | None = None) -> ThreadPlan:
    """The plan for a command line ``argv``: ``--threads N`` wins (torch starts with N
    threads, so every message shows N); then an ``OMP_NUM_THREADS`` the user set; then the
    free cores, set only when fewer than ``cores``."""
    flag = threads_flag(argv)
    if flag is not None:
        return ThreadPlan({THREADS_ENV: str(flag)})
    if environ.get(THREADS_ENV, "").strip():
        return ThreadPlan()
    threads, why = choose_threads(cores, idle, quota)
    if threads >= cores:
        return ThreadPlan()
    return ThreadPlan({THREADS_ENV: str(threads)},
                      f"torch threads: {threads} of {cores}, as {why}; --threads N sets it")


def _cpu_times(cpus: set[int], stat: str) -> dict[int, tuple[int, int]]:
    """(idle, total) clock ticks per cpu in ``cpus`` from the text of /proc/stat."""
    times = {}
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        # user nice system idle iowait irq softirq steal (guest is inside user already)
        ticks = [int(v) for v in rest.split()[:8]]
        times[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    return times


def idle_cores(before: str, after: str, cpus: set[int]) -> float | None:
    """The sum over ``cpus`` of each one's idle share between two readings of /proc/stat;
    None when a reading lacks a cpu or no tick passed."""
    t0, t1 = _cpu_times(cpus, before), _cpu_times(cpus, after)
    if set(t0) != cpus or set(t1) != cpus:
        return None
    idle = 0.0
    for cpu in cpus:
        total = t1[cpu][1] - t0[cpu][1]
        if total <= 0:
            return None
        idle += min(1.0, max(0.0, (t1[cpu][0] - t0[cpu][0]) / total))
    return idle


def cgroup_cpu_limit(text: str | None = None) -> float | None:
    """The CPU quota in cores from cgroup v2's ``cpu.max`` (``"150000 100000"`` is 1.5), or
    None when there is none (``"max ..."``) or it cannot be read."""
    if text is None:
        try:
            text = Path("/sys/fs/cgroup/cpu.max").read_text()
        except OSError:
            return None
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _probe_idle(cpus: set[int], seconds: float = PROBE_S) -> float | None:
    try:
        before = Path("/proc/stat").read_text()
        time.sleep(seconds)
        after = Path("/proc/stat").read_text()
    except OSError:  # not Linux: no probe, torch's default
        return None
    return idle_cores(before, after, cpus)


def apply_thread_policy(argv: Sequence[str],
                        environ: MutableMapping[str, str] | None = None) -> str | None:
    """Probe the free cores (about 50 ms), set the plan's variables in ``environ`` (default
    ``os.environ``) and return its note; call it before torch is imported. Skips the probe
    when ``--threads`` or ``OMP_NUM_THREADS`` already decides."""
    env = os.environ if environ is None else environ
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    decided = threads_flag(argv) is not None or env.get(THREADS_ENV, "").strip()
    idle = None if decided or len(cpus) < 2 else _probe_idle(cpus)
    plan = plan_threads(argv, env, cores=len(cpus), idle=idle, quota=cgroup_cpu_limit())
    env.update(plan.env)
    return plan.note
