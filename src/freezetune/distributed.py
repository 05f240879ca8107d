"""Data-parallel training on PyTorch DDP, launched by ``torchrun`` or ``accelerate launch``.

freezetune starts no processes and moves no tensors between them itself: the launcher starts
one process per device and sets RANK / WORLD_SIZE / MASTER_ADDR; :func:`init_from_env` joins
that process group (gloo on CPU, NCCL on GPU) and ``DistributedDataParallel`` all-reduces the
gradients. What this module adds is what freezing needs on top of DDP:

1) the trainable set changes at the same step on every rank, and the model is re-wrapped then:
   DDP only all-reduces parameters that were trainable when it was wrapped, so a thawed
   parameter would silently train apart on each rank (:func:`wrap`);
2) AutoFreeze decides from gradients DDP has already averaged, and rank 0's numbers are
   broadcast so every rank takes the same decision (:func:`broadcast`);
3) every rank draws the same global order and takes its slice of each global batch, or, when
   frozen-prefix caching is on, keeps a fixed shard of the data so its cache stays its own
   (``freezetune.batching.ShardedBatches``, which ``make_loader`` uses given a rank and world:
   the sampling lives beside the single-process sampler, this module only joins the group);
4) only rank 0 writes files, logs and progress bars (:attr:`Dist.is_main`).

A single process (no launcher) takes none of these paths: no wrapper, no collectives, the
plain sampler.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "Dist",
    "all_gather",
    "any_rank",
    "barrier",
    "broadcast",
    "current",
    "device",
    "init_from_env",
    "shutdown",
    "sum_ints",
    "sync_batchnorm",
    "wrap",
]

TIMEOUT_ENV = "FREEZETUNE_DIST_TIMEOUT"  # seconds a collective may wait for a lost peer


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank ``rank`` of ``world`` (1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether this is one process of several (collectives and the DDP wrapper apply)."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0, the one that writes files, logs and progress."""
        return self.rank == 0


def current() -> Dist:
    """The process group this process has joined, or a single-process ``Dist()``."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def init_from_env() -> Dist:
    """Join the group a launcher described in the environment (WORLD_SIZE > 1), else no-op."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return current()
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl", timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return current()


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device(d: Dist) -> torch.device:
    """This process's device: its local GPU when there is one, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", d.local_rank) if d.enabled else torch.device("cuda")


def sync_batchnorm(model: nn.Module, device: torch.device, d: Dist) -> nn.Module:
    """Under DDP on GPUs, BatchNorm layers become ``nn.SyncBatchNorm`` (statistics over the
    global batch, as one process computes them; same parameter objects). PyTorch has no CPU
    SyncBatchNorm: there each process normalises its own share of the batch (say so once)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not d.enabled or not norms:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if d.is_main:
        print(
            "note: no SyncBatchNorm on CPU: BatchNorm layers that train normalise each "
            "process's share of the batch (frozen ones use their running statistics)",
            file=sys.stderr,
        )
    return model


def wrap(model: nn.Module, d: Dist) -> nn.Module:
    """``model`` in a fresh DDP wrapper over what trains now (the model itself when alone).

    Call it again whenever the trainable set changes: the wrapper's buckets are fixed at
    construction, which also broadcasts rank 0's parameters, so replicas start level.
    """
    if not d.enabled or not any(p.requires_grad for p in model.parameters()):
        return model
    ids = [d.local_rank] if torch.cuda.is_available() else None
    return DistributedDataParallel(model, device_ids=ids)


def _int_tensor(values: Sequence[int]) -> torch.Tensor:
    """``values`` as a tensor on the device the backend reduces on (CUDA for NCCL)."""
    on = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    return torch.tensor(list(values), dtype=torch.long, device=on)


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank when ``flag`` is true on any (e.g. one of them got SIGTERM)."""
    return sum_ints([int(flag)], d)[0] > 0


def sum_ints(values: Sequence[int], d: Dist) -> list[int]:
    """Element-wise sum of ``values`` over all ranks (``values`` itself when alone)."""
    if not d.enabled:
        return list(values)
    t = _int_tensor(values)
    dist.all_reduce(t)
    return [int(v) for v in t.tolist()]


def broadcast(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable value)."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    """Wait until every rank gets here (no-op when alone)."""
    if d.enabled:
        dist.barrier()
