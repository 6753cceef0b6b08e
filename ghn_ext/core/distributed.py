"""Running the `ghn` commands on several processes through torch.distributed (torchrun).

Launched by torchrun, a command finds RANK / WORLD_SIZE / LOCAL_RANK in its environment and joins the
process group: NCCL when it runs on GPUs, gloo on CPUs. Launched plainly it runs as the single rank of
a world of one, with no process group, so every helper here is a no-op there and single-process code
needs no branches.

What each command does with the ranks:
  * training (GHN and final): DistributedDataParallel over the model; each rank draws its own
    architectures and its own rows of every global batch; rank 0 writes logs and checkpoints;
  * search: the architectures are dealt to the ranks in chunks and the scores gathered on rank 0, which
    writes the ranking.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
from ghn_ext.core.checks import InputError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among `world_size` processes and the device it computes on."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and draws progress bars."""
        return self.rank == 0


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """`auto`: this process's GPU (cuda:LOCAL_RANK) when CUDA is available, else the CPU."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} asked for, but CUDA is not available here")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def add_device_argument(parser) -> None:
    """The --device option of the commands that run under torchrun."""
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda, cuda:N, or auto (this process's GPU when there is one); under torchrun "
                             "cuda means cuda:LOCAL_RANK and the ranks talk over NCCL, on CPUs over gloo")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer") from None


def launched_as_main() -> bool:
    """Whether this process is rank 0 of a torchrun launch, or was not launched by torchrun."""
    return _env_int("RANK", 0) == 0


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the torchrun process group (once per process) and return this process's context.

    Without torchrun's environment (WORLD_SIZE unset or 1) nothing is initialised."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistContext(device=dev)
    if not 0 <= rank < world:
        raise InputError(f"RANK={rank} is outside WORLD_SIZE={world}")
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    return DistContext(rank, world, local_rank, dev)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_run(device: str = "auto") -> Iterator[DistContext]:
    """init_distributed for the length of a command, leaving the process group however it ends."""
    ctx = init_distributed(device)
    try:
        yield ctx
        # meet before tearing down: a rank leaving gloo while a peer still finishes the last
        # collective's traffic aborts that peer ("terminate called without an active exception")
        barrier(ctx)
    finally:
        shutdown(ctx)


def deal(items: Sequence[T], ctx: DistContext) -> list[T]:
    """This rank's share of `items`: every world_size-th one, starting at its rank."""
    return list(items[ctx.rank::ctx.world_size])


def gather_lists(items: list[T], ctx: DistContext) -> list[T]:
    """Every rank's `items`, concatenated in rank order, on every rank (picklable items)."""
    if not ctx.distributed:
        return list(items)
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def broadcast(obj: T, ctx: DistContext) -> T:
    """Rank 0's `obj` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: Sequence[float], ctx: DistContext) -> list[float]:
    """Element-wise sum of `values` over the ranks."""
    if not ctx.distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def wrap_ddp(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """`model` under DistributedDataParallel when there are several ranks, else `model` itself.

    Unused parameters are allowed: a random architecture need not touch every parameter (per-op
    branches of the hypernetwork, an anytime network's exits)."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


__all__ = ["DistContext", "add_device_argument", "init_distributed", "shutdown", "distributed_run", "resolve_device", "deal", "gather_lists",
           "broadcast", "all_sum", "barrier", "wrap_ddp"]
