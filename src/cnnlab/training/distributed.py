"""Data-parallel training on torch.distributed: the launcher, and what :func:`fit` asks of it.

``cnnlab train ... --nproc N`` starts N ranks through torchrun (``torch.distributed.run``) on
this machine; on several machines each runs ``torchrun --nnodes M --nproc-per-node N
--rdzv-backend c10d --rdzv-endpoint HOST:PORT -m cnnlab.cli.main train ...`` itself. Every rank
then runs the same :func:`cnnlab.training.loop.fit`, which asks this module for its
:class:`Rank`:

- the process group is gloo on CPU and nccl on CUDA (one GPU per rank, ``cuda:LOCAL_RANK``),
  with a timeout on every collective, so a rank that dies ends the run with an error instead
  of a hang (torchrun's agent also stops the others as soon as one exits);
- every rank holds the whole in-memory dataset and draws the same permutation for the epoch
  (the seed is the same), augments the global batch as one process would, and takes every
  N-th image of it: the configured batch size is the global batch, and its loss is scaled so
  that DistributedDataParallel's gradient mean is the single-process gradient of that batch;
- on CUDA batch norm becomes SyncBatchNorm, so its statistics are those of the global batch
  (torch's SyncBatchNorm is CUDA-only; see :meth:`Rank.wrap` for the CPU);
- only rank 0 writes the run directory (its writes are atomic) and shows progress.
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import distributed as dist
from torch import nn

from cnnlab.errors import CnnlabError, ConfigError

__all__ = ["DEFAULT_TIMEOUT_S", "DistributedError", "Rank", "launch", "setup", "torchrun_command"]

log = logging.getLogger("cnnlab")

# seconds a collective may wait for the other ranks before the run fails; an epoch's
# validation on rank 0 must fit in it (rank 0 alone writes checkpoints between collectives)
DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "CNNLAB_DIST_TIMEOUT_S"


class DistributedError(CnnlabError, RuntimeError):
    """A distributed run failed: a rank died, or a collective timed out."""


@dataclass
class Rank:
    """This process's place in the process group."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_batch(self, images: torch.Tensor, targets: torch.Tensor,
                    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This rank's share of the global batch (every ``world_size``-th image from
        ``rank``) and the factor for its mean loss.

        The global batch is augmented before it is shared, so the random draws are those of a
        single-process run. DistributedDataParallel averages the ranks' gradients; with the
        local mean loss scaled by ``world_size * len(local) / len(batch)`` that average is the
        gradient of the global batch's mean loss, also when the shares differ by one image.
        """
        n = len(targets)
        images, targets = images[self.rank::self.world_size], targets[self.rank::self.world_size]
        return images, targets, self.world_size * len(targets) / max(1, n)

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over the ranks (in place)."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The DistributedDataParallel module the training step calls; on CUDA, ``model``'s
        batch norm becomes SyncBatchNorm first (in place: the optimizer's parameters stay the
        same tensors). torch's SyncBatchNorm runs on CUDA only: on the CPU each rank
        normalises with its own share of the batch, and the running statistics are rank 0's
        (DDP broadcasts them), so a model with batch norm then differs slightly from a
        single-process run; one without is the same."""
        if device.type == "cuda" and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                         for m in model.modules()):
            synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            assert synced is model  # the top module is no batch norm: converted in place
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def _world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def setup(device: torch.device) -> tuple[Rank | None, torch.device]:
    """The process group of a torchrun rank (None outside one) and the rank's device.

    Raises:
        ConfigError: more ranks on a node than CUDA devices.
        DistributedError: the rendezvous failed or timed out.
    """
    if _world_size() <= 1:
        return None, device
    rank = Rank(int(os.environ["RANK"]), _world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        if rank.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {rank.rank} needs cuda:{rank.local_rank}, but this node has "
                f"{torch.cuda.device_count()} CUDA device(s); start at most that many ranks per "
                "node (--nproc) or train on the CPU (--device cpu)")
        device = torch.device("cuda", rank.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        try:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(seconds=timeout))
        except (RuntimeError, ValueError) as e:
            raise DistributedError(f"rank {rank.rank} could not join the process group: {e}") \
                from e
    if rank.is_main:
        log.info("distributed: %d ranks, backend %s, collective timeout %.0f s",
                 rank.world_size, dist.get_backend(), float(os.environ.get(TIMEOUT_ENV,
                                                                           DEFAULT_TIMEOUT_S)))
    return rank, device


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """torchrun (as ``python -m torch.distributed.run``, the same interpreter) starting
    ``nproc`` ranks of ``cnnlab <argv>`` on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "--max-restarts=0", "-m", "cnnlab.cli.main", *argv]


def launch(nproc: int, argv: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Run ``cnnlab <argv>`` as ``nproc`` ranks through torchrun and wait for them.

    Each rank gets ``OMP_NUM_THREADS`` (unless the user set it): the free cores divided among
    the ranks, at least one.

    Raises:
        ConfigError: ``nproc`` below 1.
        DistributedError: a rank failed (torchrun's summary above names it).
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be an integer >= 1; got {nproc}")
    env = dict(os.environ)
    env[TIMEOUT_ENV] = str(timeout_s)
    if "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        env["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
    env.setdefault("PYTHONUNBUFFERED", "1")
    command = torchrun_command(nproc, argv)
    log.info("launching %d ranks: %s", nproc, " ".join(command[1:]))
    rc = subprocess.run(command, env=env, check=False).returncode
    if rc != 0:
        raise DistributedError(
            f"the distributed run failed (torchrun exit status {rc}): a rank stopped; the "
            "failure summary above names it. The epochs saved before are kept: rerun with "
            "--resume to continue")
    return 0

