"""DDP under ``torchrun``: join the process group, pin the device, agree on a flag across ranks.

``WORLD_SIZE`` > 1: the trainer joins the process group (gloo on CPU, NCCL on CUDA), ``batch_size`` is
the global batch (each rank gets ``batch_size / world``: the shared shuffle's ``rank::world`` shard),
and only rank 0 evaluates, writes checkpoints and emits events.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    world: int
    rank: int
    device: torch.device

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is true on any rank (every rank gets the same answer)."""
        if self.world == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Ranks]:
    """Join (and afterwards leave) the process group ``torchrun`` set up; a world of 1 otherwise.

    CPU: ``torch.set_num_threads`` = the cores this process may use, divided among the local ranks.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    owns_group = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns_group = True
    try:
        rank = dist.get_rank() if world > 1 else 0
        if device.type == "cuda" and world > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if device.type == "cpu":
            local_world = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
            torch.set_num_threads(max(1, available_cores() // local_world))
        yield Ranks(world, rank, device)
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()
