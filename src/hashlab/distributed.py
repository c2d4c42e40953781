"""torch.distributed in one place: who am I (rank, world size), start and stop the process
group, and the collectives hashlab needs, with the gradients right.

hashlab trains on PyTorch's own engine, DistributedDataParallel, launched by ``torchrun``
(``docs/scale.md``). ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT``; :func:`init_from_env` reads them and starts the process group (``gloo`` on
CPU, ``nccl`` on CUDA). Without them every function here answers for one process: rank 0 of a
world of 1, and the collectives return their input.

:func:`all_gather_with_grad` concatenates a tensor from every rank along dim 0 and keeps the
gradient of the local part: its backward sums the incoming gradient over the ranks (an
all-reduce) and returns this rank's slice. When every rank computes the same loss of the
gathered batch, that sum is ``world_size`` times the gradient of the loss with respect to the
local rows, and DDP's average over ranks brings it back to exactly the gradient one process
would get for the whole batch (``docs/scale.md#gathering-the-batch-across-ranks``). It is written
with ``all_reduce`` only, which every backend has (``gloo`` has no ``reduce_scatter``).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_nograd", "all_gather_with_grad", "all_reduce_max", "all_reduce_mean",
    "all_reduce_sum", "all_reduce_sum_with_grad", "barrier", "broadcast_object", "destroy",
    "env_world_size", "init_from_env", "is_distributed", "is_main", "local_rank", "rank",
    "scale_grad", "world_size",
]


def is_distributed() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes files and shows progress."""
    return rank() == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when unset)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def local_rank() -> int:
    """``LOCAL_RANK`` as set by ``torchrun`` (0 when unset): the GPU this process uses."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def init_from_env(device: torch.device, timeout_s: float = 1800.0) -> bool:
    """Start the default process group from ``torchrun``'s environment when ``WORLD_SIZE > 1``
    and none is running yet: ``nccl`` for a CUDA ``device``, ``gloo`` otherwise. Returns
    whether this call started it (so the caller knows to :func:`destroy` it)."""
    if env_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return True


def destroy() -> None:
    """Stop the default process group (if one is running)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the ranks (a new tensor; no gradient)."""
    out = x.detach().clone()
    if is_distributed():
        dist.all_reduce(out)
    return out


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over the ranks (a new tensor; no gradient)."""
    return all_reduce_sum(x) / world_size()


def all_gather_nograd(x: torch.Tensor) -> torch.Tensor:
    """``x`` of every rank concatenated along dim 0, rank order (same shape on every rank)."""
    if not is_distributed():
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts, 0)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.n = x.shape[0]
        return all_gather_nograd(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = rank() * ctx.n
        return grad[start : start + ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` of every rank concatenated along dim 0 (rank order), differentiable for the local
    rows: the backward sums the gradient over the ranks and returns this rank's part. Every
    rank must pass the same shape. Returns ``x`` itself in one process."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects; identity in one process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class _ReduceSumWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return all_reduce_sum(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the ranks, differentiable for the local term: the backward passes
    the incoming gradient through unchanged. When every rank computes the same loss ``L`` of
    the sum, that is exactly ``dL/d(local term)``, so a loss split over ranks (a sharded
    classifier's softmax denominator) gets on each rank the gradient of its own part. Returns
    ``x`` itself in one process."""
    if not is_distributed():
        return x
    return _ReduceSumWithGrad.apply(x)


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of ``x`` over the ranks (no gradient)."""
    out = x.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:  # type: ignore[override]
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` unchanged, its gradient multiplied by ``factor`` (identity when ``factor == 1``)."""
    if factor == 1:
        return x
    return _ScaleGrad.apply(x, factor)
