"""A metric-learning problem small enough to draw: a handful of marks, a tiny CNN, a 2-D embedding.

Notebook 02 trains the kit's losses (:func:`tmr_lib.losses.make_loss`) here in seconds on a CPU
and draws where each augmented view of each mark lands on the unit circle::

    from tmr_lib import toy
    images = toy.toy_marks(toy.TOY_MARKS)                      # uint8 (8, 3, 32, 32)
    run = toy.train_toy(images, "contrastive", steps=150)      # ToyNet -> 2-D unit vectors
    emb, labels = toy.embed_views(run.model, images, n_views=16)
    toy.knn_accuracy(emb, labels)                              # leave-one-out nearest neighbour
    run.history                                                # loss and pairs seen, per step

Each mark is one label; its positives are augmented views of it (the library's *weak*
augmentation), as a query and its cite are two views of one registered mark. The step history
counts the negative pairs each step's loss compares, which is what ``CrossBatchMemory`` raises.

The toy keeps its own dozen-line loop on purpose (not :func:`tmr_lib.loop.train_one_epoch`, which
fine-tuning and pretraining share): notebook 02 reads it as the algorithm -- draw marks, make
views, embed, loss, step -- and records per step the pairs the loss saw, which the shared loop
has no reason to know about. No DataLoader, devices, AMP, accumulation or time budget here.
"""
from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TOY_MARKS", "HELD_OUT_MARKS", "toy_marks", "ToyNet", "ToyRun", "augment_views", "train_toy",
           "embed_views", "knn_accuracy", "count_pairs"]

#: Font Awesome marks the toy trains on (one label each) ...
TOY_MARKS = ("star", "heart", "house", "car", "bell", "leaf", "moon", "anchor")
#: ... and marks it never sees in training (new "registrations").
HELD_OUT_MARKS = ("key", "fish", "crown", "umbrella")


def toy_marks(names: Sequence[str] = TOY_MARKS, size: int = 32, family: str = "fa-solid") -> torch.Tensor:
    """The named Font Awesome marks, black on white, trimmed and padded: uint8 (N, 3, size, size)."""
    from .augment import pil_to_uint8
    from .marks import default_catalogue, render_ref
    from .preprocess import load_mark_image

    by_name = {r.name: r for r in default_catalogue()}
    out = []
    for n in names:
        key = n if "/" in n else f"{family}/{n}"
        if key not in by_name:
            raise KeyError(f"no mark {key!r} in the kit's catalogue (e.g. 'fa-solid/star')")
        out.append(pil_to_uint8(load_mark_image(render_ref(by_name[key], size * 2), size)))
    return torch.stack(out)


class ToyNet(nn.Module):
    """Three strided convolutions -> global average -> Linear(dim) -> L2-normalise (a point on the circle)."""

    def __init__(self, dim: int = 2, width: int = 16):
        super().__init__()
        self.dim = dim
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div(255.0)
        return F.normalize(self.head(self.body(1.0 - x)), dim=1)  # ink = 1, paper = 0


def augment_views(images: torch.Tensor, labels: torch.Tensor, n_views: int, transform=None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_views`` augmented views of every image (the library's weak augmentation by default)."""
    from .augment import weak_transform

    t = transform or weak_transform(images.shape[-1])
    views = torch.stack([t(img) for img in images for _ in range(n_views)])
    return views, labels.repeat_interleave(n_views)


def count_pairs(labels: torch.Tensor, ref_labels: torch.Tensor, embeddings: torch.Tensor | None = None,
                ref_embeddings: torch.Tensor | None = None, close: float = 1.0) -> dict[str, int]:
    """Positive and negative (query, reference) pairs a pair loss compares.

    With embeddings, also the *close* negatives: nearer than ``close`` in Euclidean distance
    (the ones ContrastiveLoss(neg_margin=1) still pushes apart). Self-pairs are not counted when
    the references are the batch itself.
    """
    same = labels[:, None] == ref_labels[None, :]
    self_pairs = int(len(labels)) if ref_labels is labels else 0
    out = {"pos": int(same.sum()) - self_pairs, "neg": int((~same).sum())}
    if embeddings is not None and ref_embeddings is not None:
        d = torch.cdist(embeddings.detach().float(), ref_embeddings.detach().float())
        out["close_neg"] = int(((d < close) & ~same).sum())
    return out


@dataclass
class ToyRun:
    """A trained toy model, its loss module (ArcFace's class centres live there) and the step history."""

    model: ToyNet
    loss: nn.Module
    history: "object"  # pandas DataFrame: step, loss, pos, neg, close_neg, memory
    seconds: float
    labels: list[int] = field(default_factory=list)

    @property
    def centres(self) -> np.ndarray | None:
        """Class weight vectors (C, dim) of a classification loss (ArcFace family), else None."""
        w = getattr(getattr(self.loss, "loss", None), "W", None)
        return None if w is None else w.detach().T.cpu().numpy()

    def mean_pairs(self, last: int | None = None) -> dict[str, float]:
        h = self.history if last is None else self.history.tail(last)
        return {c: float(h[c].mean()) for c in ("pos", "neg", "close_neg")}


class _Threads:
    """Tiny tensors train fastest on one thread (thread hand-offs cost more than the maths)."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self.before = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_toy(images: torch.Tensor, loss: str = "contrastive", steps: int = 150, classes_per_batch: int | None = None,
              views_per_class: int = 4, dim: int = 2, lr: float = 3e-3, xbm_memory: int = 0, xbm_start: int = 0,
              seed: int = 0, loss_kwargs: dict | None = None, labels: Sequence[int] | None = None,
              threads: int | None = 1) -> ToyRun:
    """Train a :class:`ToyNet` with ``tmr_lib.losses.make_loss(loss)`` on augmented views of ``images``.

    Each step draws ``classes_per_batch`` marks (default: all) and ``views_per_class`` views of
    each. ``xbm_memory > 0`` wraps a pair loss in CrossBatchMemory, switched on after
    ``xbm_start`` steps. Classification losses (ArcFace family) get ``num_classes`` and their
    class centres are trained with the network. Deterministic for a given ``seed``. ``threads``:
    torch threads while training (1 is fastest for a model this small; None leaves them).
    """
    with _Threads(threads):
        return _train_toy(images, loss, steps, classes_per_batch, views_per_class, dim, lr, xbm_memory,
                          xbm_start, seed, loss_kwargs, labels)


def _train_toy(images, loss, steps, classes_per_batch, views_per_class, dim, lr, xbm_memory, xbm_start, seed,
               loss_kwargs, labels) -> ToyRun:
    import pandas as pd

    from .augment import weak_transform
    from .losses import make_loss

    _seed_all(seed)
    n = len(images)
    labels_t = torch.as_tensor(list(labels) if labels is not None else range(n), dtype=torch.long)
    model = ToyNet(dim)
    crit = make_loss(loss, embed_dim=dim, num_classes=int(labels_t.max()) + 1, xbm_memory=xbm_memory,
                     **(loss_kwargs or {}))
    params = list(model.parameters()) + list(crit.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    transform = weak_transform(images.shape[-1])
    per_batch = min(n, classes_per_batch or n)
    rows = []
    t0 = time.time()
    model.train()
    for step in range(steps):
        pick = torch.randperm(n)[:per_batch]
        x, y = augment_views(images[pick], labels_t[pick], views_per_class, transform)
        if crit.memory is not None:
            crit.use_memory = step >= xbm_start
        z = model(x)
        value = crit(z, y)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        sched.step()
        if crit.use_memory:
            mem = crit.memory
            filled = len(mem.label_memory) if mem.has_been_filled else mem.queue_idx
            ref_y, ref_z = mem.label_memory[:filled], mem.embedding_memory[:filled]
            pairs = count_pairs(y, ref_y, z, ref_z)
            pairs["pos"] -= len(y)  # each view meets itself in the memory: not a pair
        else:
            pairs = count_pairs(y, y, z, z) if not crit.is_classification else {"pos": 0, "neg": 0, "close_neg": 0}
        rows.append({"step": step, "loss": float(value.detach()), **pairs, "memory": bool(crit.use_memory)})
    model.eval()
    return ToyRun(model, crit, pd.DataFrame(rows), time.time() - t0, labels_t.tolist())


@torch.no_grad()
def embed_views(model: nn.Module, images: torch.Tensor, n_views: int = 16, seed: int = 0,
                labels: Sequence[int] | None = None, augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (N * n_views, dim) of fresh augmented views, and their labels (the mark's index)."""
    with _Threads(1):
        return _embed_views(model, images, n_views, seed, labels, augment)


def _embed_views(model, images, n_views, seed, labels, augment):
    _seed_all(seed + 12345)
    labels_t = torch.as_tensor(list(labels) if labels is not None else range(len(images)), dtype=torch.long)
    if augment:
        x, y = augment_views(images, labels_t, n_views)
    else:
        x, y = images, labels_t
    was = model.training
    model.eval()
    z = model(x)
    model.train(was)
    return z.numpy(), y.numpy()


def knn_accuracy(embeddings: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Leave-one-out: the share of points whose ``k`` nearest others (cosine) include one of its label."""
    from .search import brute_force_topk

    emb = np.asarray(embeddings, dtype=np.float32)
    lab = np.asarray(labels)
    idx, _ = brute_force_topk(emb, emb, k + 1)
    hits = []
    for i, row in enumerate(idx):
        others = [j for j in row if j != i][:k]
        hits.append(any(lab[j] == lab[i] for j in others))
    return float(np.mean(hits))
