"""Data-parallel training and embedding with torch.distributed (``torchrun``).

    torchrun --nproc_per_node 4 -m tmr_lib train --preset gpu --data data/tmr-full
    torchrun --nproc_per_node 2 -m tmr_lib train --preset ci      # CPU processes, gloo backend

Under ``torchrun`` every process runs the same command. :func:`init_from_env` joins the process
group (NCCL on GPUs, gloo on CPUs); afterwards:

* training: each rank takes its share of every step's pairs, the embeddings of all ranks are
  gathered (with gradients) before the loss, so the loss -- and CrossBatchMemory, whose queue
  receives the gathered batch -- sees the same global batch as one process would; DDP averages
  the gradients; rank 0 alone validates, saves checkpoints and logs;
* embedding: each rank embeds a contiguous slice and the slices are gathered in order.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every function here is a cheap no-op, so the
single-process code path is the same code.
"""
from __future__ import annotations

import datetime
import gc
import os

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "is_distributed", "rank", "world_size", "is_main", "barrier",
           "gather_with_grad", "gather_rows", "shard", "any_true", "broadcast_object", "cleanup", "device",
           "on_gpus"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(timeout_s: float = 1800) -> bool:
    """Join the process group torchrun describes in the environment; False when there is none."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return True


def device() -> torch.device:
    """This rank's device: its own GPU under torchrun, else the default one."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0)
    return torch.device("cpu")


def on_gpus() -> bool:
    """True when the process group talks NCCL (tensors to collect must live on this rank's GPU)."""
    return is_distributed() and dist.get_backend() == "nccl"


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group once every rank is done (no collective still in flight).

    Drop your DistributedDataParallel wrapper first: it holds the group, and a gloo group that is
    only freed while the interpreter shuts down can abort the process (SIGABRT, "terminate called
    without an active exception") after all the work succeeded. The ``gc.collect()`` frees groups
    kept alive by reference cycles (DDP's hooks) now, while Python is still whole.
    """
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()
        gc.collect()


def shard(n: int) -> slice:
    """This rank's contiguous slice of ``n`` items (the first ranks take one more when uneven)."""
    w, r = world_size(), rank()
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` (same shape on each) concatenated in rank order; gradients flow back to
    their owners, so a loss computed on the result by every rank gives, after DDP's averaging,
    exactly the gradient of that loss in one process."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x.contiguous())


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums every rank's gradient of the gathered tensor and hands each
    rank the rows it contributed (every rank computed its loss on the same gathered batch)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.rows
        return grad[start:start + ctx.rows]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """All ranks' row blocks (possibly of different lengths) concatenated in rank order, no gradient."""
    if not is_distributed():
        return x
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    most = max(sizes)
    pad = torch.zeros((most - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    parts = [torch.empty((most, *x.shape[1:]), dtype=x.dtype, device=x.device) for _ in sizes]
    dist.all_gather(parts, torch.cat([x, pad]).contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def any_true(flag: bool) -> bool:
    """True on every rank when it is true on any (e.g. "the time budget is spent")."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device() if on_gpus() else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
