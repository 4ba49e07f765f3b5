"""Process-group set-up for torchrun (gloo on CPU, nccl on GPU); a single process otherwise."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0 alone logs and writes files."""
        return self.rank == 0


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device cuda was requested but torch sees no CUDA device")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init(requested_device: str) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR/PORT); nothing when WORLD_SIZE is absent or 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), pick_device(requested_device)
    d = Dist(world, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(requested_device, d.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d, device


def all_true(flag: torch.Tensor, d: Dist) -> torch.Tensor:
    """Logical AND of a boolean tensor over ranks (so every rank skips the same steps)."""
    if not d.enabled:
        return flag
    t = flag.to(torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t.bool()


def reduce_(t: torch.Tensor, d: Dist, op: str = "sum") -> torch.Tensor:
    """In-place sum or max of a tensor over ranks (no-op for one process)."""
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t


def from_rank0(values: list[float], d: Dist, device: torch.device) -> list[float]:
    """Rank 0's values on every rank (so that every rank's scheduler sees the same
    metric, even where per-process BatchNorm statistics differ)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        # Tear down together: rank 0 still writes its files after the last collective, and a
        # rank that destroyed its gloo group and exited meanwhile was seen to abort
        # ("terminate called without an active exception", SIGABRT) about 1 run in 3 under load.
        dist.barrier()
        dist.destroy_process_group()
