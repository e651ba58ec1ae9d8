"""The one training loop: fine-tuning (:mod:`tmr_lib.train`) and pretraining (:mod:`tmr_lib.pretrain`)
both call :func:`train_one_epoch`; what differs between them is passed in.

    state = LoopState()
    schedule = Schedule(total_updates=1000, warmup=0.05, budget_s=420)
    stats = train_one_epoch(model, batches, loss_fn, optimizer, schedule, state, device=device)
    stats.loss, stats.images_per_s, stats.out_of_time

The pieces a recipe chooses (timm's ``train_one_epoch`` is the shape):

* ``batches`` -- any iterable of ``(uint8 or float images, labels)``: a DataLoader over
  :class:`tmr_lib.train.PairBatches` (labelled pairs, weak/strong views) or the pretraining's
  endless generator of augmented scene pairs;
* ``prepare`` -- images -> model input (default: ImageNet normalisation of uint8 crops);
* ``loss_fn`` -- any loss of :mod:`tmr_lib.losses` (CrossBatchMemory included: it is switched on
  or off by the caller, per epoch);
* ``optimizer`` and ``schedule`` -- the learning rate is set from :class:`Schedule` before every
  optimiser step (gradient accumulation: every ``accum_steps`` batches);
* ``amp`` -- ``"fp16"`` (with a GradScaler), ``"bf16"`` or ``None``; only on CUDA;
* ``net`` -- the module that runs forward (DDP under torchrun); embeddings of all ranks are
  gathered before the loss, so the loss sees the global batch.

The loop stops early when the schedule's time budget runs out (every rank together).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from . import distributed as dist

__all__ = ["lr_factor", "Schedule", "LoopState", "EpochStats", "train_one_epoch"]


def lr_factor(progress: float, warmup: float, floor: float = 0.01) -> float:
    """Linear warm-up over the first ``warmup`` share of training, then cosine down to ``floor``."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, floor)
    rest = (progress - warmup) / max(1e-9, 1.0 - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * rest))


@dataclass
class Schedule:
    """Learning-rate factor from progress: whichever ends first, ``total_updates`` or ``budget_s``.

    ``warmup`` is a share of training; ``warmup_updates`` (pretraining) a number of updates
    whose linear ramp multiplies the factor. With a time budget the rate still decays to its end
    when time runs out. ``epoch_updates`` > 0 moves the rate once per epoch of that many updates
    (the 2nd place's CosineAnnealingWarmRestarts(T_0=epochs) stepped per epoch: with ``floor=0``
    and no warm-up, epoch e of E runs at ``(1 + cos(pi e / E)) / 2``)."""

    total_updates: int
    warmup: float = 0.0
    budget_s: float | None = None
    warmup_updates: int = 0
    floor: float = 0.01
    epoch_updates: int = 0

    def progress(self, updates: int, elapsed_s: float) -> float:
        if self.epoch_updates > 0:
            updates -= updates % self.epoch_updates
        p = updates / max(1, self.total_updates)
        if self.budget_s:
            p = max(p, elapsed_s / self.budget_s)
        return p

    def factor(self, updates: int, elapsed_s: float) -> float:
        f = lr_factor(self.progress(updates, elapsed_s), self.warmup, self.floor)
        if self.warmup_updates and updates < self.warmup_updates:
            f *= (updates + 1) / self.warmup_updates
        return f

    def out_of_time(self, elapsed_s: float) -> bool:
        return bool(self.budget_s) and elapsed_s > self.budget_s


@dataclass
class LoopState:
    """What the loop carries from one epoch to the next (and a checkpoint saves)."""

    updates: int = 0  #: optimiser steps so far
    images_seen: int = 0
    train_seconds: float = 0.0  #: time spent inside train_one_epoch
    started: float = field(default_factory=time.time)  #: the clock the time budget counts from

    def elapsed(self) -> float:
        return time.time() - self.started


@dataclass
class EpochStats:
    losses: list[float]
    images: int
    seconds: float
    out_of_time: bool
    lr: float

    @property
    def loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else float("nan")

    @property
    def images_per_s(self) -> float:
        return self.images / max(1e-9, self.seconds)


def _default_prepare(x: torch.Tensor) -> torch.Tensor:
    from .augment import normalize

    return normalize(x)


def train_one_epoch(model: torch.nn.Module, batches: Iterable, loss_fn: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, schedule: Schedule, state: LoopState, *,
                    device: torch.device, net: torch.nn.Module | None = None,
                    prepare: Callable[[torch.Tensor], torch.Tensor] = _default_prepare,
                    amp: str | None = None, scaler: torch.amp.GradScaler | None = None, accum_steps: int = 1,
                    channels_last: bool = True, max_steps: int | None = None, progress: bool = False,
                    desc: str = "train", on_step: Callable[[int, float], None] | None = None) -> EpochStats:
    """One pass over ``batches`` (see the module docstring); returns the epoch's statistics."""
    from tqdm.auto import tqdm

    net = net or model
    base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
    for g, base in zip(optimizer.param_groups, base_lrs):
        g["initial_lr"] = base
    use_amp = amp is not None and device.type == "cuda"
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = scaler or torch.amp.GradScaler("cuda", enabled=False)
    total = len(batches) if hasattr(batches, "__len__") else max_steps
    losses: list[float] = []
    images, t0, out_of_time = 0, time.time(), False
    bar = tqdm(batches, total=total, desc=desc, unit="step", disable=not progress, leave=False, mininterval=1.0)
    for step, (x, y) in enumerate(bar):
        x = prepare(x.to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
            emb = net(x)
        # one process: a no-op; torchrun: the global batch, gradients flowing back to each rank
        emb, y = dist.gather_with_grad(emb.float()), dist.gather_rows(y)
        loss = loss_fn(emb, y) / accum_steps
        scaler.scale(loss).backward()
        images += len(y)
        state.images_seen += len(y)
        last = total is not None and step + 1 == total
        if (step + 1) % accum_steps == 0 or last:
            f = schedule.factor(state.updates, state.elapsed())
            for g, base in zip(optimizer.param_groups, base_lrs):
                g["lr"] = base * f
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            state.updates += 1
        value = loss.detach().item() * accum_steps
        losses.append(value)
        if on_step is not None:
            on_step(state.updates, value)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
        if dist.any_true(schedule.out_of_time(state.elapsed())):
            out_of_time = True
            break
        if max_steps is not None and step + 1 >= max_steps:
            break
    bar.close()
    seconds = time.time() - t0
    state.train_seconds += seconds
    return EpochStats(losses, images, seconds, out_of_time, optimizer.param_groups[0]["lr"])
