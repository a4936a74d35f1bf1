"""Several processes (torchrun / accelerate launch), each example counted exactly once.

Importance and metrics are sums over examples, so data parallelism is exact: every process
takes the examples i with i % world == rank (uneven shards are fine: nothing is padded or
duplicated), computes its partial sums, and the sums are added across processes. The
result equals one process's up to floating-point summation order.

Under a single process every function here is a no-op, and nothing initialises a process
group: the library works the same in plain Python.
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist


def launched_distributed() -> bool:
    """Whether a launcher started several processes (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_launcher(device: str | None = None) -> None:
    """Join the process group a launcher prepared, via accelerate: gloo on CPU, NCCL on
    GPUs. On CPU accelerate must be told so (`cpu=True`), or it runs every process alone."""
    if launched_distributed() and not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
        # Leave the group before the interpreter exits: a process that exits while its gloo
        # threads still run can abort ("terminate called without an active exception").
        atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return rank_and_world()[0] == 0


def shard(indices: list[int]) -> list[int]:
    """This process's share of `indices`: every world-th one, starting at its rank."""
    rank, world = rank_and_world()
    return indices[rank::world]


def sum_across_processes(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all processes (in place; returned)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_across_processes(tensor: torch.Tensor) -> torch.Tensor:
    """All processes' `tensor`s (any lengths along dim 0) concatenated, on every process."""
    if not is_distributed():
        return tensor
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)
