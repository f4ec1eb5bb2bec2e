"""Distributed pre-training helpers (PyTorch's own engine: torchrun + DistributedDataParallel).

`torchrun --nproc-per-node N -m cmrprior pretrain ...` sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR;
`init_distributed()` reads them and starts the process group (NCCL on CUDA, gloo on CPU).

Negatives across processes: `gather_with_grad(x)` concatenates `x` from every rank in rank order
with a gradient path back to each rank's own part. Backward sums the incoming gradient over ranks
(all-reduce) and keeps the caller's slice, so that with DDP's gradient averaging the parameter
gradient equals the gradient of the mean loss over all ranks' rows, i.e. the single-process gradient
of the same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Rank and world size of the running process group (rank 0 of 1 when none)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def init_distributed(device_type: str | None = None) -> DistInfo:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1); otherwise do nothing.

    Backend: NCCL when CUDA is used, gloo otherwise. On CUDA the process binds to GPU LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_initialized()):
        return dist_info()
    use_cuda = (device_type or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist_info()


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank = dist.get_rank()
        ctx.n = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """`x (b, ...)` on every rank -> `(world*b, ...)` in rank order, and this rank's row offset.

    Every rank must pass the same b. Without a process group: `(x, 0)`.
    """
    info = dist_info()
    if not info.enabled:
        return x, 0
    return _GatherWithGrad.apply(x), info.rank * x.shape[0]


def wrap_ddp(model: nn.Module, *, sync_batchnorm: bool = False, device: torch.device | None = None) -> nn.Module:
    """Wrap `model` in DistributedDataParallel when a process group runs (optionally SyncBatchNorm first)."""
    if not dist_info().enabled:
        return model
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device is not None and device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_reduce_mean(value: float, device: torch.device | None = None) -> float:
    """Mean of a Python float over ranks (identity without a process group)."""
    if not dist_info().enabled:
        return float(value)
    t = torch.tensor([value], dtype=torch.float64, device=device or "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item() / dist.get_world_size())


def barrier() -> None:
    if dist_info().enabled:
        dist.barrier()
