"""Where training runs: one process on a CPU or GPU, or several under `torchrun` with DistributedDataParallel.

Under torchrun (it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) every rank loads the dataset and
builds the same model; each global batch of `batch_size` training windows is cut into `world` shards, one
per rank, and DDP averages the gradients, so N processes take the optimiser steps one process would take
at the same global batch. Rank 0 validates, decides early stopping for everyone, evaluates and writes the
artifact. Backend: NCCL when training on CUDA, gloo on CPU.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` is CUDA when a GPU is visible, else the CPU; `cuda` without a GPU is an error."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but torch sees no GPU (a CPU-only torch, or no driver)")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag` on every rank (early stopping is decided where validation runs)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def check_replicas_equal(self, model: torch.nn.Module) -> None:
        """Every rank must end with the same parameters; a digest mismatch means gradients were not shared."""
        if not self.distributed:
            return
        h = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        mine = torch.tensor(list(h.digest()[:8]), dtype=torch.int64, device=self.device)
        every = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(every, mine)
        if any(not torch.equal(every[0], other) for other in every[1:]):
            raise RuntimeError("distributed training ended with different parameters on different ranks")


def from_environment(device: str) -> Context:
    """The single-process context, or join the torchrun process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(0, 1, resolve_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    where = resolve_device(device, local)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if where.type == "cuda" else "gloo")
    if rank != 0:
        # one log, one progress bar: the other ranks report problems only
        logging.getLogger().setLevel(logging.WARNING)
    log.info("distributed training: %d processes, backend %s, rank 0 on %s", world, dist.get_backend(), where)
    return Context(rank, world, where)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
