"""Where a process runs: its place in the process group (one process, or many started by ``torchrun``), its device,
and the wrappers (DDP, ``torch.compile``) around its model.

``torchrun`` sets RANK, LOCAL_RANK and WORLD_SIZE; when they are absent everything runs in one process.
"""
from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from .conventions import DEVICE_NAMES

__all__ = ["DistInfo", "init_distributed", "barrier", "any_rank", "cleanup", "resolve_device", "unwrap_model",
           "env_int"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str = "cpu", timeout_s: float = 600.0) -> DistInfo:
    """Join the process group when launched by torchrun (NCCL on CUDA, gloo on the CPU).

    ``timeout_s`` bounds every collective: if one rank dies, the others fail with an error instead of hanging
    (torchrun then stops the whole group).
    """
    world = env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    rank, local = env_int("RANK"), env_int("LOCAL_RANK", 0)
    if rank >= world:
        raise ValueError(f"RANK={rank} with WORLD_SIZE={world}; expected a rank below the world size")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, local, world)


def env_int(name: str, default: Optional[int] = None) -> int:
    """A process-group variable of the environment (RANK, LOCAL_RANK, WORLD_SIZE) as a whole number >= 0; a
    ValueError of one line when it is missing (without ``default``) or not such a number."""
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise ValueError(f"{name} is not set but WORLD_SIZE={os.environ.get('WORLD_SIZE')} is; launch with "
                             "torchrun (it sets RANK, LOCAL_RANK and WORLD_SIZE) or unset WORLD_SIZE")
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"environment variable {name}={raw[:40]!r}; expected a whole number >= 0")
    return value


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any of them (one tiny all-reduce; the flag itself in one process).

    A signal reaches the processes of a job at slightly different steps; deciding together keeps them from parting
    ways between a gradient all-reduce on one and a checkpoint barrier on another."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"  # NCCL: GPU tensors
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def cleanup() -> None:
    """Leave the process group (the end of a torchrun job's process); nothing to do in one process."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: "str | torch.device", local_rank: int = 0) -> torch.device:
    """``"auto"`` (CUDA when there is one, else the CPU), ``"cpu"``, ``"mps"``, ``"cuda"`` (this process's GPU:
    ``cuda:<local rank>``) or ``"cuda:N"`` (or a ``torch.device``); raises naming the value when it is none of these,
    or names a CUDA device or MPS this machine does not have."""
    name = str(name)
    if not re.fullmatch(DEVICE_NAMES, name):
        raise ValueError(f"device {name!r}; expected auto, cpu, mps, cuda or cuda:N")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' asked for, but CUDA is not available on this machine; use cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device '{name}' asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device '{name}' asked for, but MPS is not available on this machine; use cpu or auto")
    return dev


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DistributedDataParallel and/or ``torch.compile`` wrapper (the model itself otherwise)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile of the DDP wrapper
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # DDP of a compiled model
