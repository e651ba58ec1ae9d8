"""Metric-learning losses from pytorch-metric-learning behind one factory.

    from tmr_lib.losses import make_loss
    loss = make_loss("contrastive", embed_dim=512, xbm_memory=1024)   # the 2nd place's default
    value = loss(embeddings, labels)        # CrossBatchMemory only once loss.use_memory = True

Names (pytorch-metric-learning class names work too, e.g. "MultiSimilarityLoss"):

=================  =========================================================================================
contrastive        ContrastiveLoss(pos_margin=0, neg_margin=1) -- 2nd place, in XBM(1024)
multisimilarity    MultiSimilarityLoss(alpha=2, beta=50, base=0.5) -- 1st place, in XBM
triplet            TripletMarginLoss(margin=0.1) with a semi-hard TripletMarginMiner
ntxent             NTXentLoss(temperature=0.07) (SimCLR-style; slow in PML: ~1 s per 256 crops on a CPU
                   core, ~19 s with CrossBatchMemory(1024) -- use supcon for labelled pairs)
supcon             SupConLoss(temperature=0.1) (supervised NT-Xent: every same-label crop a positive;
                   as fast as contrastive, 0.24 s per 256 crops with the memory)
arcface            ArcFaceLoss (classification over train labels; needs num_classes)
subcenter_arcface  SubCenterArcFaceLoss(sub_centers=3)
cosface            CosFaceLoss
=================  =========================================================================================

Pair-based losses are wrapped in ``CrossBatchMemory`` when ``xbm_memory > 0``; the memory
joins only when the training loop sets ``use_memory = True`` after a warm-up, because the
memory over a still-random encoder holds stale embeddings and training collapses.
Classification losses own weights: give their ``parameters()`` to the optimizer.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["LOSSES", "CLASSIFICATION_LOSSES", "MetricLoss", "make_loss", "canonical_loss_name"]

LOSSES = ("contrastive", "multisimilarity", "triplet", "ntxent", "supcon", "arcface", "subcenter_arcface",
          "cosface")
CLASSIFICATION_LOSSES = {"arcface", "subcenter_arcface", "cosface"}
_ALIASES = {  # compact spellings (lower case, no "_" or "-") -> name
    "contrastiveloss": "contrastive",
    "contrastivexbm": "contrastive",
    "multisimilarityloss": "multisimilarity",
    "ms": "multisimilarity",
    "tripletmarginloss": "triplet",
    "ntxentloss": "ntxent",
    "supconloss": "supcon",
    "arcfaceloss": "arcface",
    "subcenterarcfaceloss": "subcenter_arcface",
    "cosfaceloss": "cosface",
}


def canonical_loss_name(name: str) -> str:
    """"MultiSimilarityLoss", "multi-similarity", "ms" ... -> "multisimilarity"."""
    compact = name.strip().lower().replace("_", "").replace("-", "")
    table = {n.replace("_", ""): n for n in LOSSES} | _ALIASES
    if compact not in table:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return table[compact]


class MetricLoss(nn.Module):
    """A pytorch-metric-learning loss, optionally with CrossBatchMemory that can be switched on later."""

    def __init__(self, name: str, loss: nn.Module, miner: nn.Module | None = None,
                 memory: nn.Module | None = None, use_memory: bool = False):
        super().__init__()
        self.name = name
        self.loss = loss
        self.miner = miner
        self.memory = memory
        self.use_memory = use_memory and memory is not None

    @property
    def is_classification(self) -> bool:
        return self.name in CLASSIFICATION_LOSSES

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        if self.use_memory and self.memory is not None:
            return self.memory(embeddings, labels)
        if self.miner is not None:
            return self.loss(embeddings, labels, self.miner(embeddings, labels))
        return self.loss(embeddings, labels)

    def reset_memory(self) -> None:
        if self.memory is not None:
            self.memory.reset_queue()

    def extra_repr(self) -> str:
        mem = f"CrossBatchMemory({self.memory.memory_size}) {'on' if self.use_memory else 'off'}" \
            if self.memory is not None else "no memory"
        return f"{self.name}, {mem}"


def make_loss(name: str = "contrastive", embed_dim: int = 512, num_classes: int | None = None,
              xbm_memory: int = 1024, **kwargs: Any) -> MetricLoss:
    """The loss called ``name`` (see the module docstring); ``kwargs`` go to the PML class."""
    from pytorch_metric_learning import losses, miners

    key = canonical_loss_name(name)
    miner = None
    if key == "contrastive":
        loss = losses.ContrastiveLoss(**{"pos_margin": 0.0, "neg_margin": 1.0, **kwargs})
    elif key == "multisimilarity":
        loss = losses.MultiSimilarityLoss(**{"alpha": 2.0, "beta": 50.0, "base": 0.5, **kwargs})
    elif key == "triplet":
        loss = losses.TripletMarginLoss(**{"margin": 0.1, **kwargs})
        miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    elif key == "ntxent":
        loss = losses.NTXentLoss(**{"temperature": 0.07, **kwargs})
    elif key == "supcon":
        loss = losses.SupConLoss(**{"temperature": 0.1, **kwargs})
    else:
        if not num_classes:
            raise ValueError(f"{key} is a classification loss: pass num_classes (the number of train labels)")
        cls = {"arcface": losses.ArcFaceLoss, "subcenter_arcface": losses.SubCenterArcFaceLoss,
               "cosface": losses.CosFaceLoss}[key]
        loss = cls(num_classes=num_classes, embedding_size=embed_dim, **kwargs)
        return MetricLoss(key, loss)
    memory = None
    if xbm_memory and xbm_memory > 0:
        memory = losses.CrossBatchMemory(loss, embedding_size=embed_dim, memory_size=xbm_memory, miner=miner)
    return MetricLoss(key, loss, miner=miner, memory=memory)
