"""The baselines every table prints beside a trained model: random ids and raw pixels.

    from tmr_lib.baselines import pixel_embeddings, pixel_retrieval, random_retrieval
    pixels = pixel_retrieval(comp, store)            # a Retrieval: trimmed 32 px gray ink, cosine
    pixels.metrics(answers)["recall"][20]

One raw-pixel baseline for the whole kit (demo, notebooks, ``tmr heldout``, the ablation).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .retrieval import Retrieval

__all__ = ["pixel_embeddings", "pixel_retrieval", "random_retrieval", "PIXELS_NAME"]

PIXELS_NAME = "raw pixels (32 px gray, cosine)"


def pixel_embeddings(images, size: int = 32, batch: int = 2048) -> np.ndarray:
    """Raw-pixel baseline: trimmed uint8 image (N, 3, S, S) -> ``size`` px grayscale -> ink (1 - gray)
    -> unit vector. ``images``: a tensor or a streamed :class:`tmr_lib.images.ImageFile` (read per batch)."""
    parts = []
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    for i in range(0, len(images), batch):
        x = images[i:i + batch].float() / 255.0
        g = (x * weights).sum(dim=1, keepdim=True)
        g = F.interpolate(g, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        v = (1.0 - g).flatten(1)
        parts.append(F.normalize(v, dim=1))
    return torch.cat(parts).numpy() if parts else np.zeros((0, size * size), np.float32)


def pixel_retrieval(comp, store, k: int = 20, size: int = 32) -> Retrieval:
    """The test queries searched among the cites by raw pixels (exact cosine)."""
    return Retrieval.from_embeddings(comp.test["gid"], pixel_embeddings(store.images_of(list(comp.test["path"])), size),
                                     comp.cite["gid"], pixel_embeddings(store.images_of(list(comp.cite["path"])), size),
                                     k=k, name=PIXELS_NAME if size == 32 else f"raw pixels ({size} px)")


def random_retrieval(query_ids, gallery_ids, k: int = 20, seed: int = 0) -> Retrieval:
    """``k`` distinct random gallery ids per query: the floor of every table."""
    rng = np.random.default_rng(seed)
    arr = np.asarray(gallery_ids).astype(str)
    return Retrieval.from_ranked({str(g): list(arr[rng.choice(len(arr), size=k, replace=False)]) for g in query_ids},
                                 name="random ids", k=k)
